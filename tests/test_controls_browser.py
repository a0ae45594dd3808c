"""The controls in a real Chromium with JavaScript: the token meter as you type, thumbs and settings swapped in
place, Copy as Markdown, presets filling the box; axe-core over the chat page with every panel open."""

from __future__ import annotations

import pytest

from tests.clients import chromium
from tests.fake_upstream import Reply
from tests.test_page import check_accessible, open_context, send, wait_idle

pytestmark = pytest.mark.browser

SOURCE = "## Plan\n\n1. **Mix** the `flour`\n2. Bake it\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"


@pytest.fixture
def app(make_app, upstream):  # noqa: ANN001, ANN201
    upstream.models = ["fake-model", "other-model"]
    return make_app(
        MAX_USER_MESSAGE_TOKENS=20, MAX_HISTORY_TOKENS=200, MODEL_PRICES='{"fake-model": {"input": 3, "output": 15}}'
    )


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


@pytest.fixture
def context(browser, live_server):  # noqa: ANN001, ANN201
    context = open_context(browser, live_server)
    yield context
    context.close()


@pytest.fixture
def page(context):  # noqa: ANN001, ANN201
    return context.new_page()


def meter_text(page) -> str:  # noqa: ANN001
    return page.inner_text("#meter")


def exchange(page, text: str) -> None:  # noqa: ANN001
    """Send ``text`` and wait until its answer has been written."""
    answers = page.locator("article.assistant").count()
    send(page, text)
    page.wait_for_function(f"document.querySelectorAll('article.assistant').length > {answers}")
    wait_idle(page)


def test_the_meter_updates_while_typing_and_warns_before_too_long(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    assert "0 tokens in your message" in meter_text(page)
    page.click("#content")
    page.keyboard.type("hello there")
    page.wait_for_function("document.querySelector('#meter').textContent.includes('2 tokens in your message')")
    assert "too long" not in meter_text(page)
    page.keyboard.type(" word" * 25)
    page.wait_for_selector("#meter .meter-warning.too-long")
    assert "the limit is 20" in meter_text(page)
    page.wait_for_function("document.getElementById('announcer').textContent.includes('the limit is 20')")
    assert page.input_value("#content").startswith("hello there word")  # nothing typed is touched

    # In a conversation the context grows with every exchange, and older messages drop out of it.
    upstream.set_default(Reply(tokens=["lots of words "] * 12))
    exchange(page, "first question")
    page.wait_for_function("document.querySelector('#meter').textContent.includes('so far')")  # its cost
    for n in range(3):
        exchange(page, f"question {n}")
    page.click("#content")
    page.keyboard.type("one more")
    page.wait_for_selector("#meter .meter-warning.left-out")
    assert "older messages will not be sent" in meter_text(page) or "older message will not be sent" in meter_text(page)


def test_thumbs_toggle_in_place_and_the_comment_is_kept(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    send(page, "hello")
    wait_idle(page)
    page.evaluate("window.samePage = true")
    up = "article.assistant .thumb-up"
    page.click(up)
    page.wait_for_function(f"document.querySelector('{up}').getAttribute('aria-pressed') === 'true'")
    page.wait_for_function("document.getElementById('announcer').textContent.includes('Feedback saved')")
    assert page.evaluate("document.activeElement.matches('.thumb-up')")  # focus stays on the button
    page.click("article.assistant .thumb-down")
    page.wait_for_function(
        "document.querySelector('article.assistant .thumb-down').getAttribute('aria-pressed') === 'true'"
        " && document.querySelector('article.assistant .thumb-up').getAttribute('aria-pressed') === 'false'"
    )
    page.click("article.assistant .thumb-down")  # again: cleared
    page.wait_for_function(
        "document.querySelector('article.assistant .thumb-down').getAttribute('aria-pressed') === 'false'"
    )
    page.click("article.assistant .feedback-comment summary")
    page.fill("article.assistant .comment-panel textarea", "Too short.")
    page.click("article.assistant .comment-panel button")
    page.wait_for_function(
        "document.querySelector('article.assistant .feedback-comment .action-label').textContent === 'Commented'"
    )
    assert page.evaluate("window.samePage") is True  # all of it without a page load
    page.reload()
    assert page.input_value("article.assistant .comment-panel textarea") == "Too short."


def test_settings_panel_saves_in_place_and_copy_gives_the_markdown(context, page, upstream) -> None:  # noqa: ANN001
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    upstream.script(Reply(tokens=[SOURCE[i : i + 6] for i in range(0, len(SOURCE), 6)]))
    page.goto("/")
    send(page, "a plan please")
    wait_idle(page)
    page.evaluate("window.samePage = true")
    page.click("#chat-settings summary")
    page.select_option("#setting-model", "other-model")
    page.fill("#setting-temperature", "0.4")
    page.click("#chat-settings button[type=submit]")
    page.wait_for_selector("#chat-settings .saved")
    assert page.inner_text("#model-line").startswith("other-model")
    exchange(page, "again")
    assert upstream.requests[-1]["model"] == "other-model" and upstream.requests[-1]["temperature"] == 0.4
    assert page.evaluate("window.samePage") is True

    page.locator("article.assistant .copy-message").first.click()
    page.wait_for_function("document.querySelector('article.assistant .copy-message').textContent.includes('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == SOURCE


def test_a_preset_fills_the_box_of_a_new_chat(page, upstream) -> None:  # noqa: ANN001
    page.goto("/settings")
    page.click("text=Add a preset")
    page.fill("#preset-new-name", "Poet")
    page.fill("#preset-new-opening", "Write a haiku about rain.")
    page.click("text=Add preset")
    page.wait_for_selector("h3:has-text('Poet')")
    page.goto("/")
    page.select_option("#preset", label="Poet")
    assert page.input_value("#content") == "Write a haiku about rain."
    page.wait_for_function("!document.querySelector('#meter').textContent.includes('0 tokens')")
    page.select_option("#preset", label="Default settings")
    assert page.input_value("#content") == ""  # the opening prompt it put there goes again


def test_chat_page_with_every_panel_open_passes_axe(page, upstream) -> None:  # noqa: ANN001
    upstream.set_default(Reply(tokens=["lots of words "] * 12))
    page.goto("/")
    for n in range(4):
        exchange(page, f"question {n}")
    upstream.script(Reply(tokens=[SOURCE]))
    last = page.locator("article.assistant").last
    last.locator("button.retry").click()
    page.wait_for_function("document.querySelector('#messages .version-count')")
    wait_idle(page)
    last = page.locator("article.assistant").last
    last.locator(".thumb-up").click()
    page.wait_for_selector("#messages .thumb-up[aria-pressed=true]")
    page.fill("#content", "word " * 30)
    page.wait_for_selector("#meter .meter-warning.too-long")
    wait_idle(page)
    page.type("#content", " word")  # a meter asked for once everything has settled (no answer ending meanwhile)
    page.wait_for_selector("#meter .meter-warning.left-out")
    page.click("#chat-settings summary")
    last = page.locator("article.assistant").last
    last.locator(".retry-model summary").click()
    check_accessible(page, "chat settings, retry with a model")
    last.locator(".retry-model summary").click()
    last.locator(".feedback-comment summary").click()
    check_accessible(page, "comment, versions with models, meter warnings, cost")

    page.goto("/settings")
    page.click("text=Add a preset")
    page.fill("#preset-new-name", "Terse")
    page.click("text=Add preset")
    page.wait_for_selector("h3:has-text('Terse')")
    page.click(".preset .preset-edit summary")
    check_accessible(page, "settings with presets")
