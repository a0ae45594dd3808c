"""Share links in a real headless Chromium: the owner's Share page, a live link streaming to a viewer,
the viewer with JavaScript off, and axe-core on the new pages (light and dark, 1280 and 390 px)."""

from __future__ import annotations

import pytest

from tests.clients import chromium
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.test_page import check_accessible, one_h1_and_landmarks

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


def open_page(browser, live_server: str, errors: list[str] | None = None, **options):  # noqa: ANN001, ANN003, ANN201
    """A page in a context of its own (its own identity); ``bypass_csp`` lets the tests inject axe-core."""
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.new_context(base_url=live_server, bypass_csp=True, reduced_motion="reduce", **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def event_streams(page) -> list[str]:  # noqa: ANN001
    """The URLs of the EventSource connections the page opens from now on (reconnections included)."""
    opened: list[str] = []
    page.on("request", lambda request: opened.append(request.url) if request.resource_type == "eventsource" else None)
    return opened


def make_link(page, **choices: str) -> str:  # noqa: ANN001
    """From the conversation's page (options menu → Share) or on the Share page: choose, Create link;
    returns the new link's URL."""
    if "/share" not in page.url:
        page.click(".header-menu summary")
        page.click(".header-menu >> text=Share")
        page.wait_for_selector("h1:has-text('Share')")
    for field, value in choices.items():
        page.check(f"#{field}-{value}")
    before = page.locator(".share-link").count()
    page.click("button:has-text('Create link')")
    page.wait_for_function(f"document.querySelectorAll('.share-link').length > {before}")
    page.wait_for_selector(".share-link.created")
    return page.locator(".share-link.created .share-url").input_value()


def test_owner_shares_and_a_live_viewer_sees_new_messages_stream_in(browser, live_server, upstream) -> None:  # noqa: ANN001
    errors: list[str] = []
    owner = open_page(browser, live_server, errors)
    upstream.script(Reply(tokens=["First ", "answer."]))
    owner.goto("/")
    owner.fill("#content", "Hello viewers")
    owner.press("#content", "Enter")
    owner.wait_for_selector('article.assistant[data-status="complete"]')
    url = make_link(owner)
    owner.context.grant_permissions(["clipboard-read", "clipboard-write"])
    owner.click(".share-link.created .copy-link")
    owner.wait_for_function("document.querySelector('.share-link.created .copy-link').textContent.includes('Copied')")
    assert owner.evaluate("navigator.clipboard.readText()") == url
    owner.goto(owner.url.split("/share")[0])  # back to the conversation

    viewer = open_page(browser, live_server, errors)
    streams = event_streams(viewer)
    viewer.goto(url)
    viewer.wait_for_selector('article.assistant[data-status="complete"]:has-text("First answer.")')
    assert viewer.locator("article.user h2.author").inner_text().startswith("Guest ")
    assert viewer.locator("#content").count() == 0 and viewer.locator("button.retry").count() == 0
    viewer.wait_for_timeout(300)  # the page's watch stream is open

    words = [f"word{i} " for i in range(100)]
    reply = Reply(tokens=words, delay=0.05, pause_after=20)
    upstream.script(reply)
    owner.fill("#content", "Tell them a story")
    owner.press("#content", "Enter")
    # Without a reload, the viewer sees the new message, then the answer as it is written…
    viewer.wait_for_selector('article.user:has-text("Tell them a story")')
    viewer.wait_for_function(
        "(document.querySelector('article.assistant[data-status=streaming]') || {}).textContent?.includes('word5')"
    )
    streaming_text = viewer.locator('article.assistant[data-status="streaming"]').inner_text()
    assert "word39" not in streaming_text and "word99" not in streaming_text
    # Someone who opens the link while the answer is written sees it go on, on the page's one stream too.
    late = open_page(browser, live_server, errors)
    late_streams = event_streams(late)
    late.goto(url)
    late.wait_for_selector('article.assistant[data-status="streaming"]:has-text("word5")')
    check_accessible(late, "a live link while an answer is written")
    reply.resume.set()
    # Both see the rest written live (what neither page was served)…
    for page in (viewer, late):
        page.wait_for_function(
            "(document.querySelector('article.assistant[data-status=streaming]') || {}).textContent?.includes('word40')"
        )
    # …and then the finished answer.
    for page in (viewer, late):
        page.wait_for_selector('article.assistant[data-status="complete"]:has-text("word99")')
        assert page.locator("article.assistant").count() == 2
    viewer.wait_for_function("document.getElementById('announcer').textContent === 'Answer finished'")
    # One event stream per page, whatever it showed: the link's watch stream (browsers allow ~6 per host).
    assert len(streams) == 1 and len(late_streams) == 1
    assert streams[0].startswith(f"{url}/watch?shown=") and late_streams[0].startswith(f"{url}/watch?shown=")
    assert errors == []
    late.context.close()
    owner.context.close()
    viewer.context.close()


def test_share_page_and_viewer_pass_axe(browser, live_server, app, upstream) -> None:  # noqa: ANN001
    owner = open_page(browser, live_server)
    upstream.script(Reply(tokens=["An answer with **bold** text."]))
    owner.goto("/")
    owner.fill("#content", "Something to share")
    owner.press("#content", "Enter")
    owner.wait_for_selector('article.assistant[data-status="complete"]')
    upstream.script(Reply(tokens=["A second version."]))
    owner.click("article.assistant button.retry")
    owner.wait_for_selector('article.assistant[data-status="complete"]:has-text("second version")')
    make_link(owner, kind="snapshot")
    url = make_link(owner, visibility="accounts")
    one_h1_and_landmarks(owner)
    check_accessible(owner, "share page with links")

    viewer = open_page(browser, live_server)
    viewer.goto(url)  # signed-in users only: a guest is asked to sign in
    assert "Sign in" in viewer.locator("h1").inner_text()
    check_accessible(viewer, "share link refused")
    viewer.click("a:has-text('Sign in')")
    viewer.goto("/sign-up?next=" + url.split(live_server, 1)[1])
    viewer.fill("#username", "reader")
    viewer.fill("#password", "correct horse battery")
    viewer.click("button:has-text('Create account')")
    viewer.wait_for_load_state()
    viewer.goto(url)
    viewer.wait_for_selector("article.assistant:has-text('second version')")
    one_h1_and_landmarks(viewer)
    check_accessible(viewer, "shared conversation")
    viewer.click("a.version[aria-label='Previous version']")
    viewer.wait_for_selector("article.assistant:has-text('bold')")
    check_accessible(viewer, "another version of a shared conversation")
    owner.context.close()
    viewer.context.close()


def test_javascript_off_viewer_watches_and_continues_in_own_chats(browser, live_server, app, upstream) -> None:  # noqa: ANN001
    owner = Chat(app)
    upstream.script(Reply(tokens=["Done."]))
    conversation_id, answer_id = owner.start("Start")
    owner.wait(answer_id)
    response = owner.post(f"/c/{conversation_id}/share", {"kind": "live", "visibility": "anyone"})
    assert response.status_code == 303
    page_html = owner.get(response.headers["Location"]).get_data(as_text=True)
    path = "/s/" + page_html.split('class="share-url" value="', 1)[1].split('"', 1)[0].rsplit("/s/", 1)[1]

    reply = Reply(tokens=[f" slow{i}" for i in range(30)], delay=0.02, pause_after=10)
    upstream.script(reply)
    owner.send(conversation_id, "Keep going")
    viewer = open_page(browser, live_server, java_script_enabled=False, viewport={"width": 390, "height": 700})
    viewer.goto(path)
    viewer.wait_for_selector('article.assistant[data-status="streaming"]')
    reply.resume.set()
    # Nobody touches the page: it refreshes until the answer is complete.
    viewer.wait_for_selector('article.assistant[data-status="complete"]:has-text("slow29")')
    viewer.click("button:has-text('Continue in my chats')")
    viewer.wait_for_url("**/c/*")
    assert viewer.locator("#content").is_visible()  # the viewer's own conversation: it can write here
    assert viewer.locator("article.assistant").last.inner_text().count("slow29") == 1
    viewer.context.close()
