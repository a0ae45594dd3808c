"""Live rooms in real Chromium: several people (browser contexts, each its own guest) in one conversation,
with one worker, and with two workers sharing Redis; axe-core on the room's page."""

from __future__ import annotations

import re

import pytest

from tests.clients import chromium, serve
from tests.fake_upstream import Reply
from tests.test_page import check_accessible

WORDS = [f" word{i}" for i in range(40)]


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


def person(browser, base_url: str):  # noqa: ANN001, ANN201
    """A new person: a browser context of their own (their own guest identity), and a page in it."""
    context = browser.new_context(base_url=base_url, bypass_csp=True, reduced_motion="reduce")
    context.set_default_timeout(15_000)
    return context.new_page()


def start_room(owner) -> tuple[str, str]:  # noqa: ANN001
    """The owner starts a conversation and turns it into a room: (its path, the invite link's path)."""
    owner.goto("/")
    owner.fill("#content", "Hello room")
    owner.press("#content", "Enter")
    owner.wait_for_selector('article.assistant[data-status="complete"]')
    path = re.sub(r"#.*$", "", owner.url.split("127.0.0.1", 1)[1].split("/", 1)[1])
    owner.click(".topbar summary[title^='Rename, share, invite']")
    with owner.expect_navigation():
        owner.click("text=Invite people")
    owner.wait_for_selector("#invite-link", state="attached")
    link = owner.input_value("#invite-link")
    return "/" + path, "/join/" + link.rsplit("/join/", 1)[1]


def enter(page, invite: str) -> None:  # noqa: ANN001
    page.goto(invite)
    page.click("button:has-text('Join')")
    page.wait_for_selector("#room")


def name_of(page) -> str:  # noqa: ANN001
    """The person's own name, as the members panel lists it."""
    return (page.text_content(".member-name:has-text('(you)')") or "").replace(" (you)", "").strip()


def room_scenario(browser, upstream, owner_url: str, member_url: str, viewer_url: str) -> None:  # noqa: ANN001
    owner, member, viewer = person(browser, owner_url), person(browser, member_url), person(browser, viewer_url)
    path, invite = start_room(owner)
    enter(member, invite)
    owner.select_option("#invite-role", "viewer")
    with owner.expect_navigation():
        owner.click("button:has-text('Make link')")
    enter(viewer, "/join/" + owner.input_value("#invite-link").rsplit("/join/", 1)[1])
    assert viewer.locator("#composer").count() == 0  # a viewer reads only
    member_name, viewer_name = name_of(member), name_of(viewer)

    # Presence: the owner sees both others arrive, without reloading.
    owner.wait_for_function(
        "([a, b]) => document.querySelector('#presence').textContent.includes(a)"
        " && document.querySelector('#presence').textContent.includes(b)",
        arg=[member_name, viewer_name],
    )
    # Typing: shown to the others, never to the typist.
    member.type("#content", "Something to ", delay=20)
    owner.wait_for_function(
        "name => document.querySelector('#typing').textContent === name + ' is typing…'", arg=member_name
    )
    assert member.inner_text("#typing") == ""

    # The member sends; the others see the message and the answer streaming in, then complete.
    upstream.script(Reply(tokens=WORDS, delay=0.05))
    member.fill("#content", "From the member")
    member.press("#content", "Enter")
    for page in (owner, viewer, member):
        page.wait_for_selector("article.user:has-text('From the member')")
        page.wait_for_function(
            "() => { const a = [...document.querySelectorAll('article.assistant')].pop();"
            " return a.dataset.status === 'streaming' && a.textContent.includes('word3'); }"
        )
    for page in (owner, viewer, member):
        page.wait_for_function(
            "() => { const a = [...document.querySelectorAll('article.assistant')].pop();"
            " return a.dataset.status === 'complete' && a.textContent.includes('word39'); }"
        )
        assert page.locator("article.user:has-text('From the member')").count() == 1  # once, not twice
    assert member_name in owner.inner_text("article.user:has-text('From the member') .author")
    assert owner.locator("#typing").inner_text() == ""  # sending ended the typing

    # The owner removes the member: their page is cut off at once.
    owner.click(f".member:has-text('{member_name}') button.remove-member")
    member.wait_for_selector("text=You are no longer in this conversation", timeout=5_000)
    assert member.goto(path).status == 404
    owner.wait_for_function("name => !document.querySelector('#presence').textContent.includes(name)", arg=member_name)
    for page in (owner, member, viewer):
        page.context.close()


def test_three_people_in_one_room(browser, live_server, upstream) -> None:  # noqa: ANN001
    room_scenario(browser, upstream, live_server, live_server, live_server)


def test_three_people_across_two_workers_with_redis(browser, make_app, upstream, redis_url, redis_prefix) -> None:  # noqa: ANN001
    first = make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    second = make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    with serve(first) as worker_a, serve(second) as worker_b:
        room_scenario(browser, upstream, worker_a, worker_b, worker_b)


def test_the_room_page_is_accessible(browser, live_server, upstream) -> None:  # noqa: ANN001
    owner, member = person(browser, live_server), person(browser, live_server)
    _path, invite = start_room(owner)
    enter(member, invite)
    owner.wait_for_function("() => !document.querySelector('#presence').textContent.includes('Only you')")
    owner.wait_for_selector(".remove-member")
    check_accessible(owner, "the owner's room page with the members panel open")
    member.type("#content", "typing", delay=20)
    owner.wait_for_function("() => document.querySelector('#typing').textContent.includes('typing…')")
    check_accessible(owner, "the room page while someone types")
    member.goto(member.url.split("#")[0] + "?members=1")
    check_accessible(member, "a member's room page")
    owner.context.close()
    member.context.close()


def test_sending_in_a_room_with_javascript_off(browser, live_server, upstream) -> None:  # noqa: ANN001
    owner = person(browser, live_server)
    path, invite = start_room(owner)
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    context.set_default_timeout(15_000)
    member = context.new_page()
    member.goto(invite)
    member.click("button:has-text('Join')")
    assert "Only you here" not in member.inner_text("#presence")  # the owner's page is open: as of this load
    member.fill("#content", "Sent without JavaScript")
    member.click("#composer-actions button.send")
    # The page refreshes itself until the answer is complete, then shows it with who sent the message.
    member.wait_for_selector("article.assistant:has-text('Echo: Sent without JavaScript')[data-status='complete']")
    assert member.inner_text("article.user:has-text('Sent without JavaScript') .author") == "You"
    owner.wait_for_selector("article.assistant:has-text('Echo: Sent without JavaScript')[data-status='complete']")
    owner.context.close()
    context.close()
