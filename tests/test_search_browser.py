"""Search and organising in a real Chromium: results as you type, JavaScript off, axe-core on the new pages."""

from __future__ import annotations

import pytest

from tests.clients import chromium
from tests.fake_upstream import Reply
from tests.test_page import check_accessible, one_h1_and_landmarks, open_context, send, wait_idle


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, live_server):  # noqa: ANN001, ANN201
    context = open_context(browser, live_server)
    yield context.new_page()
    context.close()


def chat_about(page, text: str) -> None:  # noqa: ANN001
    page.goto("/")
    send(page, text)
    wait_idle(page)


def test_results_update_as_you_type(page, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=["Snakes are ", "reptiles."]))
    chat_about(page, "Tell me about pythons and boas")
    page.goto("/search")
    page.locator("#search-q").press_sequentially("pyth", delay=40)  # no Enter: the results come as typed
    page.wait_for_selector(".result mark")
    assert page.locator(".result-snippet mark").first.inner_text() == "pythons"
    page.wait_for_url("**/search?q=pyth*")
    page.locator("#search-q").fill("nothing-like-it")
    page.locator("#search-q").dispatch_event("input")
    page.wait_for_selector("text=Nothing matches")
    # The sidebar's box works from any page: the main area turns into the results.
    page.goto("/settings")
    page.locator("#sidebar-q").press_sequentially("boa", delay=40)
    page.wait_for_selector("#main .result mark")
    assert page.locator("#main h1").inner_text() == "Search"
    assert page.evaluate("document.activeElement.id") == "sidebar-q"  # typing goes on where it was


def test_search_with_javascript_off(browser, live_server, upstream) -> None:  # noqa: ANN001
    context = open_context(browser, live_server, java_script_enabled=False)
    plain = context.new_page()
    plain.goto("/")
    plain.fill("#content", "Where do capybaras live?")
    plain.click("#composer-actions button[type=submit]")
    plain.wait_for_url("**/c/*")
    plain.goto("/")
    plain.fill("#sidebar-q", "capy")
    plain.press("#sidebar-q", "Enter")
    plain.wait_for_url("**/search?q=capy")
    assert plain.locator(".result").count() >= 1
    plain.click(".result-link >> nth=0")
    plain.wait_for_url("**/c/*leaf=*")
    assert "capybaras" in plain.locator("#messages").inner_text()
    context.close()


def test_search_archive_and_folder_pages_pass_axe(page, upstream) -> None:  # noqa: ANN001
    chat_about(page, "A long question about python packaging and wheels")
    page.goto("/search?q=pyth")
    page.wait_for_selector(".result")
    one_h1_and_landmarks(page)
    check_accessible(page, "search results")
    page.goto("/search?q=pyth&from=not-a-date")
    check_accessible(page, "search error")

    page.goto("/folders")
    page.fill("#name", "Work")
    page.click("text=Make the folder")
    page.wait_for_url("**/folders/*")
    one_h1_and_landmarks(page)
    check_accessible(page, "folder")
    page.goto("/folders")
    check_accessible(page, "folders")
    page.goto(page.locator(".folder-link").first.get_attribute("href") + "/delete")
    check_accessible(page, "folder delete confirmation")

    page.goto("/")
    page.locator(".conversation-item .menu-button").first.click()
    page.locator(".conversation-item .menu-panel button", has_text="Archive").first.click()
    page.wait_for_url("**/archive")
    page.wait_for_selector("button:has-text('Restore')")
    one_h1_and_landmarks(page)
    check_accessible(page, "archive")
    page.goto("/search?q=wheels")
    page.wait_for_selector(".badge:has-text('Archived')")
    check_accessible(page, "archived result")
    page.goto("/archive")
    page.click("button:has-text('Restore')")  # back into the sidebar
    page.wait_for_selector("text=Nothing is archived")
    check_accessible(page, "empty archive")


def test_pin_and_move_with_javascript_keep_the_sidebar_in_step(page, upstream) -> None:  # noqa: ANN001
    chat_about(page, "first chat")
    chat_about(page, "second chat")
    first = page.locator(".conversation-item", has_text="first chat")
    first.locator(".menu-button").click()
    first.locator("button", has_text="Pin").click()
    page.wait_for_selector("h2.group-title:has-text('Pinned')")
    pinned = page.locator(".conversation-list").first.locator(".conversation-link")
    assert pinned.count() == 1 and pinned.text_content() == "Pinned: first chat"
    assert page.locator(".conversation-item.current .conversation-link").text_content() == "second chat"
    page.goto("/folders")
    page.fill("#name", "Travel")
    page.click("text=Make the folder")
    page.wait_for_url("**/folders/*")
    second = page.locator(".conversation-item", has_text="second chat")
    second.locator(".menu-button").click()
    second.locator("a", has_text="Move to folder").click()
    page.check("label:has-text('Travel') input")
    page.click("button:has-text('Move')")
    page.wait_for_url("**/c/*")
    page.wait_for_selector("h2.group-title:has-text('Travel') + ul .conversation-link:has-text('second chat')")
    check_accessible(page, "pinned and filed")
