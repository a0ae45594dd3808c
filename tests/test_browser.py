"""In a real headless Chromium: type, watch tokens arrive, stop, reload mid-answer."""

from __future__ import annotations

import pytest

from chatapp.extensions import db
from chatapp.models import Message
from tests.clients import chromium
from tests.fake_upstream import Reply

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, live_server):  # noqa: ANN001, ANN201
    # Playwright's wait_for_function evaluates strings in the page, which the app's CSP refuses
    # (no unsafe-eval); tests/test_security.py checks the page under the policy.
    context = browser.new_context(base_url=live_server, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def wait_for_text(page, text: str, index: int = 0) -> None:  # noqa: ANN001
    """Wait until the ``index``-th answer on the page contains ``text``."""
    page.wait_for_function(
        "([text, index]) => { const a = document.querySelectorAll('article.assistant')[index];"
        " return !!a && a.textContent.includes(text); }",
        arg=[text, index],
    )


def answer_text(page, index: int = -1) -> str:  # noqa: ANN001
    return page.locator("article.assistant .content").nth(index).inner_text()


def stored(app, message_id: int) -> Message:  # noqa: ANN001
    with app.app_context():
        message = db.session.get(Message, message_id)
        db.session.expunge_all()
        return message


def test_tokens_stream_in_then_stop(page, app, upstream) -> None:  # noqa: ANN001
    words = [f" word{i}" for i in range(30)]
    upstream.script(Reply(tokens=words, delay=0.05))
    page.goto("/")
    page.fill("#content", "Tell me a story")
    page.press("#content", "Enter")

    page.wait_for_selector('article.assistant[data-status="streaming"]')
    assert page.locator("#composer-actions .stop").is_visible()  # Stop replaces Send
    wait_for_text(page, "word5")
    partial = answer_text(page)
    assert "word29" not in partial  # arriving token by token, not all at the end

    page.wait_for_selector('article.assistant[data-status="complete"]')
    final = answer_text(page)
    assert final == "".join(words).strip()  # rendered once, nothing left over from streaming
    assert page.locator("#composer-actions .send").is_visible()
    assert page.locator("article.assistant .details").first.inner_text().count("fake-model") == 1

    # A second answer, stopped half-way: it keeps exactly what was shown.
    upstream.script(Reply(tokens=[f" more{i}" for i in range(200)], delay=0.04))
    page.fill("#content", "Keep going")
    page.press("#content", "Enter")
    wait_for_text(page, "more5", index=1)
    assert page.input_value("#content") == ""  # the box was cleared after sending
    page.click("#composer-actions .stop")
    page.wait_for_selector('article.assistant[data-status="stopped"]')
    shown = answer_text(page, 1)
    message_id = int(page.locator("article.assistant").nth(1).get_attribute("id").split("-")[1])
    assert stored(app, message_id).content.strip() == shown
    assert 5 < len(shown.split()) < 200
    assert page.locator("#composer-actions .send").is_visible()
    assert "Stopped." in page.locator("article.assistant").nth(1).inner_text()


def test_reload_mid_answer_reattaches(page, app, upstream) -> None:  # noqa: ANN001
    words = [f" part{i}" for i in range(60)]
    upstream.script(Reply(tokens=words, delay=0.04))
    page.goto("/")
    page.fill("#content", "A long answer please")
    page.press("#content", "Enter")
    wait_for_text(page, "part10")
    page.reload()
    page.wait_for_selector('article.assistant[data-status="streaming"]')
    page.wait_for_selector('article.assistant[data-status="complete"]', timeout=15_000)
    assert answer_text(page) == "".join(words).strip()


def test_error_shows_reason_and_retry(page, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(status=429, error_message="slow down"))
    page.goto("/")
    page.fill("#content", "hello")
    page.press("#content", "Enter")
    page.wait_for_selector('article.assistant[data-status="error"]')
    assert "rate limiting" in page.locator("article.assistant").inner_text()
    page.click("article.assistant button.retry")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    assert answer_text(page) == "Echo: hello"


def test_refused_send_keeps_the_text(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    page.fill("#content", "first")
    page.press("#content", "Enter")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    page.fill("#content", "   ")
    page.click("#composer-actions .send")
    page.wait_for_selector("#composer-error .error")
    assert "Type a message" in page.inner_text("#composer-error")
    page.fill("#content", "x " * 5000)
    page.click("#composer-actions .send")
    page.wait_for_selector('article.user[data-status="error"]')
    assert page.input_value("#content").startswith("x x x")  # nothing typed is lost


def test_edit_retry_and_switch_versions(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    page.fill("#content", "first question")
    page.press("#content", "Enter")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    page.fill("#content", "second question")
    page.press("#content", "Enter")
    wait_for_text(page, "Echo: second question", index=1)
    page.wait_for_selector('article.assistant:nth-of-type(4)[data-status="complete"]')

    # Edit the first question in place; Cancel restores it, Save makes a new branch.
    page.click("article.user >> nth=0 >> a.edit")
    page.wait_for_selector("article.user.editing textarea")
    page.click("article.user.editing >> text=Cancel")
    page.wait_for_selector("article.user.editing", state="detached")
    assert page.locator("article.user").first.inner_text().count("first question") == 1
    page.click("article.user >> nth=0 >> a.edit")
    page.fill("article.user.editing textarea", "edited question")
    upstream.script(Reply(tokens=[" brand", " new", " answer"], delay=0.05))
    page.click("article.user.editing button[type=submit]")
    wait_for_text(page, "brand new answer")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    assert page.locator("article.message").count() == 2  # the old branch's messages are gone from view
    body = page.inner_text("#messages")
    assert "second question" not in body and "first question" not in body
    assert answer_text(page) == "brand new answer"
    assert "2 / 2" in page.locator("article.user").first.inner_text()

    # Retry the answer: a second version streams into place, nothing of the first remains.
    upstream.script(Reply(tokens=[" another", " take"], delay=0.05))
    page.click("article.assistant button.retry")
    wait_for_text(page, "another take")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    assert answer_text(page) == "another take"
    assert "2 / 2" in page.locator("article.assistant").inner_text()

    # Back to the first version of the answer, then to the original question and its whole branch.
    page.click("article.assistant button[aria-label='Previous version']")
    wait_for_text(page, "brand new")
    assert "1 / 2" in page.locator("article.assistant").inner_text()
    page.click("article.user button[aria-label='Previous version']")
    page.wait_for_function("document.querySelectorAll('article.message').length === 4")
    assert "second question" in page.inner_text("#messages") and "brand new" not in page.inner_text("#messages")
    page.reload()
    assert page.locator("article.message").count() == 4  # the chosen branch is stored on the server


def test_javascript_off_send_watch_and_stop(browser, live_server, app, upstream) -> None:  # noqa: ANN001
    """Chromium with JavaScript disabled: plain forms, and the page refreshes itself to show the answer."""
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        upstream.script(Reply(tokens=[" short", " answer"], delay=0.05))
        page.goto("/")
        page.fill("#content", "no script please")
        page.click("#composer-actions .send")
        # Nobody touches the page: it refreshes until the answer is complete and rendered.
        page.wait_for_selector('article.assistant[data-status="complete"]')
        assert answer_text(page) == "short answer"

        upstream.script(Reply(tokens=[f" slow{i}" for i in range(300)], delay=0.05))
        page.fill("#content", "a long one")
        page.click("#composer-actions .send")
        page.wait_for_selector('article.assistant[data-status="streaming"]')
        assert not page.locator("#content").is_visible()  # nothing to type into that a refresh would wipe
        page.wait_for_function(
            "document.querySelectorAll('article.assistant')[1].textContent.includes('slow3')", polling=200
        )
        page.click("#composer-actions .stop")
        page.wait_for_selector('article.assistant[data-status="stopped"]')
        message_id = int(page.locator("article.assistant").nth(1).get_attribute("id").split("-")[1])
        assert stored(app, message_id).content.strip() == answer_text(page, 1)
        assert page.locator("#composer-actions .send").is_visible() and page.locator("#content").is_visible()
    finally:
        context.close()


def test_voice_input_records_and_fills_the_composer(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    page.fill("#content", "Before ")
    page.click("#mic")
    page.wait_for_selector("#mic.recording")
    page.wait_for_function("document.querySelector('#mic').textContent.includes('0:01')")  # elapsed time shows
    page.click("#mic")
    page.wait_for_function("document.querySelector('#content').value.includes('fake transcriber')")
    assert page.input_value("#content") == "Before hello from the fake transcriber"
    assert not page.locator("#mic.recording").count()
    recording = upstream.transcriptions[0]["file_bytes"]
    assert recording[:4] == b"\x1a\x45\xdf\xa3" and len(recording) > 1000  # a real WebM recording
    assert upstream.requests == []  # the text waits in the composer: nothing was sent
    assert page.locator("article").count() == 0


def test_voice_input_error_keeps_the_text(page, upstream) -> None:  # noqa: ANN001
    upstream.transcription_reply = Reply(status=500)
    page.goto("/")
    page.fill("#content", "typed words")
    page.click("#mic")
    page.wait_for_selector("#mic.recording")
    page.click("#mic")
    page.wait_for_selector("#composer-error .error")
    assert "answered 500" in page.inner_text("#composer-error")
    assert page.input_value("#content") == "typed words"
    assert page.locator("#mic").inner_text() == "Speak"  # ready to try again


def test_attach_preview_remove_and_send_images(page, upstream, tmp_path) -> None:  # noqa: ANN001
    from PIL import Image as PILImage

    paths = []
    for name, colour in [("red.png", (255, 0, 0)), ("blue.png", (0, 0, 255))]:
        PILImage.new("RGB", (32, 32), colour).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    page.goto("/")
    page.fill("#content", "first")
    page.press("#content", "Enter")
    page.wait_for_selector('article.assistant[data-status="complete"]')

    page.set_input_files("#images", paths)
    page.wait_for_function("document.querySelectorAll('#previews li').length === 2")  # thumbnails before sending
    page.click("#previews button[aria-label='Remove red.png']")
    page.wait_for_function("document.querySelectorAll('#previews li').length === 1")
    page.fill("#content", "what colour is this?")
    page.press("#content", "Enter")
    page.wait_for_selector("article.user .images img")
    assert page.locator("article.user").nth(1).locator(".images img").count() == 1
    page.wait_for_function("document.querySelectorAll('#previews li').length === 0")  # cleared after sending
    parts = upstream.wait_for_requests(2)[-1]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"]
    page.wait_for_function("document.querySelector('article.user .images img').complete")  # it may still be loading
    loaded = page.eval_on_selector("article.user .images img", "img => img.naturalWidth")
    assert loaded == 32


def test_denied_microphone_says_so(browser, live_server, upstream) -> None:  # noqa: ANN001
    """A page whose microphone permission is denied says so and keeps the text."""
    context = browser.new_context(base_url=live_server)
    try:
        page = context.new_page()
        page.goto("/")
        # Make the browser refuse, as it does when the user clicks "Block".
        page.evaluate(
            "() => { navigator.mediaDevices.getUserMedia ="
            " () => Promise.reject(new DOMException('denied', 'NotAllowedError')); }"
        )
        page.fill("#content", "still here")
        page.click("#mic")
        page.wait_for_selector("#composer-error .error")
        assert "Microphone permission was denied" in page.inner_text("#composer-error")
        assert page.input_value("#content") == "still here"
    finally:
        context.close()
