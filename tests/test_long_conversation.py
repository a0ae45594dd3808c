"""Long conversations: the page shows the latest messages, earlier ones on request, or a part around one."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import insert, select

from chatapp.extensions import db
from chatapp.models import Conversation, Message
from tests import test_browser
from tests.conftest import Chat

browser, browser_page = test_browser.browser, test_browser.page  # the Chromium fixtures
SHOWN = 50


def long_conversation(chat: Chat, exchanges: int = 1000) -> tuple[int, list[int]]:
    """A conversation of 2 × ``exchanges`` messages owned by ``chat``; returns its id and the path's ids."""
    conversation_id, answer_id = chat.start("q0")
    chat.wait(answer_id)
    with chat.app.app_context():
        first = db.session.scalar(select(Message.id).order_by(Message.id.desc())) + 1
        rows, parent = [], answer_id
        for n in range(1, exchanges):
            for role, text in (("user", f"q{n}"), ("assistant", f"Answer **{n}**.")):
                rows.append(
                    {"id": first + len(rows), "conversation_id": conversation_id, "parent_id": parent, "role": role}
                    | {"content": text, "status": "complete"}
                )
                parent = rows[-1]["id"]
        db.session.execute(insert(Message), rows)
        db.session.get(Conversation, conversation_id).active_leaf_id = parent
        db.session.commit()
        path = [answer_id - 1, answer_id] + [row["id"] for row in rows]
    return conversation_id, path


def shown_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<article id="message-(\d+)"', html)]


def test_page_shows_the_latest_messages_with_a_link_to_earlier_ones(chat: Chat) -> None:
    conversation_id, path = long_conversation(chat)
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert shown_ids(page) == path[-SHOWN:]
    assert 'id="latest"' in page and "Show later messages" not in page
    first = path[-SHOWN]
    link = f'href="/c/{conversation_id}?before={first}#message-{path[-SHOWN - 1]}"'
    assert link in page and "Show earlier messages" in page and f"({len(path) - SHOWN} more)" in page


def test_earlier_messages_without_javascript_are_a_page_of_their_own(chat: Chat) -> None:
    conversation_id, path = long_conversation(chat)
    page = chat.get(f"/c/{conversation_id}?before={path[-SHOWN]}").get_data(as_text=True)
    assert "<html" in page
    assert shown_ids(page) == path[-2 * SHOWN : -SHOWN]  # the fifty just before, ending where the first page began
    assert f'href="/c/{conversation_id}?before={path[-2 * SHOWN]}#message-' in page
    assert f'href="/c/{conversation_id}?after={path[-SHOWN - 1]}"' in page and f"({SHOWN} more)" in page
    assert 'id="latest"' not in page
    oldest = chat.get(f"/c/{conversation_id}?before={path[SHOWN]}").get_data(as_text=True)
    assert shown_ids(oldest) == path[:SHOWN] and "Show earlier messages" not in oldest


def test_htmx_gets_just_the_earlier_or_later_messages(chat: Chat) -> None:
    conversation_id, path = long_conversation(chat)
    headers = {"HX-Request": "true"}
    earlier = chat.get(f"/c/{conversation_id}?before={path[-SHOWN]}", headers=headers).get_data(as_text=True)
    assert "<html" not in earlier and "composer" not in earlier
    assert shown_ids(earlier) == path[-2 * SHOWN : -SHOWN]
    assert earlier.index("Show earlier messages") < earlier.index("<article")  # the next link, above them
    assert "Show later messages" not in earlier and 'id="latest"' not in earlier
    later = chat.get(f"/c/{conversation_id}?after={path[-2 * SHOWN - 1]}", headers=headers).get_data(as_text=True)
    assert shown_ids(later) == path[-2 * SHOWN : -SHOWN] and "Show later messages" in later
    end = chat.get(f"/c/{conversation_id}?after={path[-SHOWN - 1]}", headers=headers).get_data(as_text=True)
    assert shown_ids(end) == path[-SHOWN:] and "Show later messages" not in end and 'id="latest"' in end


def test_a_link_to_a_message_deep_in_the_history_opens_around_it(chat: Chat) -> None:
    conversation_id, path = long_conversation(chat)
    deep = path[700]
    page = chat.get(f"/c/{conversation_id}?around={deep}").get_data(as_text=True)
    assert shown_ids(page) == path[700 - SHOWN // 2 + 1 : 700 + SHOWN // 2 + 1]
    assert "Show earlier messages" in page and "Show later messages" in page
    assert f'href="/c/{conversation_id}#latest"' in page  # and a way back to the end
    near_start = chat.get(f"/c/{conversation_id}?around={path[3]}").get_data(as_text=True)
    assert shown_ids(near_start) == path[:SHOWN]
    # A message that is not on this conversation's visible path (or someone else's): the latest.
    other = Chat(chat.app)
    _, stranger = other.start("mine")
    other.wait(stranger)
    assert shown_ids(chat.get(f"/c/{conversation_id}?around={stranger}").get_data(as_text=True)) == path[-SHOWN:]


def test_editing_an_old_message_without_javascript_shows_it(chat: Chat) -> None:
    conversation_id, path = long_conversation(chat, exchanges=100)
    old = path[10]  # a user message far above the latest fifty
    page = chat.get(f"/c/{conversation_id}?edit={old}").get_data(as_text=True)
    assert 'class="message user editing"' in page and f'action="/messages/{old}/edit"' in page


@pytest.mark.browser
def test_chromium_loads_earlier_messages_in_place_and_lands_on_the_latest(
    browser_page, chat: Chat, live_server
) -> None:  # noqa: ANN001
    conversation_id, path = long_conversation(chat)
    page = browser_page
    cookie = {"name": "session", "value": chat.client.get_cookie("session").value, "url": live_server}
    page.context.add_cookies([cookie])
    page.goto("/")
    page.click(f'#sidebar a[href^="/c/{conversation_id}"]')  # opened from the sidebar
    page.wait_for_selector(f"#message-{path[-1]}")
    assert page.locator(f"#message-{path[-1]}").is_visible()
    assert page.evaluate(
        "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
        " return r.top < window.innerHeight && r.bottom > 0; }",
        f"message-{path[-1]}",
    ), "the latest message is in view"
    url = page.url
    page.click("text=Show earlier messages")
    page.wait_for_selector(f"#message-{path[-2 * SHOWN]}")
    assert page.url == url  # in place, no navigation
    assert page.locator("article.message").count() == 2 * SHOWN
    assert page.locator("text=Show earlier messages").count() == 1  # the next one, above


@pytest.mark.browser
def test_chromium_without_javascript_pages_and_opens_around_a_message(browser, chat: Chat, live_server) -> None:  # noqa: ANN001
    conversation_id, path = long_conversation(chat)
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    context.add_cookies([{"name": "session", "value": chat.client.get_cookie("session").value, "url": live_server}])
    page = context.new_page()
    try:
        page.goto(f"/c/{conversation_id}#latest")
        assert page.locator("article.message").count() == SHOWN
        page.click("text=Show earlier messages")
        page.wait_for_url(re.compile(rf"before={path[-SHOWN]}"))
        assert page.locator("article.message").count() == SHOWN
        assert page.locator(f"#message-{path[-SHOWN - 1]}").count() == 1
        deep = path[500]
        page.goto(f"/c/{conversation_id}?around={deep}#message-{deep}")
        assert page.evaluate(
            "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
            " return r.top < window.innerHeight && r.bottom > 0; }",
            f"message-{deep}",
        ), "the linked message is in view"
    finally:
        context.close()


@pytest.mark.postgres
def test_windows_on_postgres(make_app, postgres_url: str) -> None:  # noqa: ANN001
    chat = Chat(make_app(DATABASE_URL=postgres_url))
    conversation_id, path = long_conversation(chat, exchanges=150)
    assert shown_ids(chat.get(f"/c/{conversation_id}").get_data(as_text=True)) == path[-SHOWN:]
    around = chat.get(f"/c/{conversation_id}?around={path[100]}").get_data(as_text=True)
    assert shown_ids(around) == path[100 - SHOWN // 2 + 1 : 100 + SHOWN // 2 + 1]
