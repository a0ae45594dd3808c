"""Read-only share links: made, copied, turned off and expired by the owner; seen by others through the
page (JavaScript off), the JSON API and the link's own streams and images; copied into a viewer's chats."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from chatapp.extensions import db
from chatapp.models import Conversation, Message, ShareLink, utcnow
from tests.auth import sign_up, text
from tests.clients import ApiClient, ndjson, wait_until
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import Event, Stream, parse


def share(chat: Chat, conversation_id: int, **fields: str) -> str:
    """Make a link on the Share page (as a browser without JavaScript would); returns its path, /s/<token>."""
    response = chat.post(f"/c/{conversation_id}/share", {"kind": "live", "visibility": "anyone", **fields})
    assert response.status_code == 303, response.get_data(as_text=True)
    page = chat.get(response.headers["Location"]).get_data(as_text=True)
    created = re.search(r"created=(\d+)", response.headers["Location"]).group(1)
    url = re.search(rf'id="url-{created}" class="share-url" value="([^"]+)"', page).group(1)
    return "/s/" + url.rsplit("/s/", 1)[1]


def answers(page: str) -> list[str]:
    """The answers' text on a page, in order."""
    found = re.findall(r'class="message assistant".*?<div class="content md">(.*?)</div>', page, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", html.unescape(a)).split()) for a in found]


def owner_with_answer(chat: Chat, upstream, first: str = "The first answer") -> tuple[int, int]:  # noqa: ANN001
    upstream.script(Reply(tokens=[first]))
    conversation_id, answer_id = chat.start("Hello there")
    chat.wait(answer_id)
    return conversation_id, answer_id


def png(colour: tuple[int, int, int]) -> io.BytesIO:
    from PIL import Image as PILImage

    data = io.BytesIO()
    PILImage.new("RGB", (8, 8), colour).save(data, format="PNG")
    data.seek(0)
    return data


# -- the owner's Share page --------------------------------------------------------------------------------
def test_owner_makes_copies_and_revokes_links_each_on_its_own(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    assert "Share" in chat.get(f"/c/{conversation_id}").get_data(as_text=True)  # in the conversation's menu
    first = share(chat, conversation_id)
    second = share(chat, conversation_id, kind="snapshot")
    page = chat.get(f"/c/{conversation_id}/share").get_data(as_text=True)
    assert f"http://localhost{first}" in page and f"http://localhost{second}" in page  # full URLs to copy
    assert "Live" in page and "Snapshot" in page

    viewer = Chat(app)
    assert "The first answer" in viewer.get(first).get_data(as_text=True)
    token = first.rsplit("/", 1)[1]
    assert chat.post(f"/share/{token}/revoke").status_code == 303
    gone = viewer.get(first)
    assert gone.status_code == 404 and "turned off" in text(gone)
    assert viewer.get(second).status_code == 200  # the other link still works
    assert f"http://localhost{first}" not in chat.get(f"/c/{conversation_id}/share").get_data(as_text=True)
    # Someone else cannot see the Share page, make links, or turn one off.
    assert viewer.get(f"/c/{conversation_id}/share").status_code == 404
    assert viewer.post(f"/c/{conversation_id}/share", {"kind": "live"}).status_code == 404
    assert viewer.post(f"/share/{second.rsplit('/', 1)[1]}/revoke").status_code == 404
    assert viewer.get(second).status_code == 200


def test_bad_choices_come_back_with_the_form(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    response = chat.post(f"/c/{conversation_id}/share", {"kind": "forever", "visibility": "accounts"})
    assert response.status_code == 422
    assert "kind must be snapshot or live" in text(response)
    assert 'id="visibility-accounts" name="visibility" value="accounts" checked' in response.get_data(as_text=True)
    response = chat.post(f"/c/{conversation_id}/share", {"kind": "live", "expires": "1y"})
    assert response.status_code == 422 and "Choose when the link expires" in text(response)


def test_expired_link_says_so(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    path = share(chat, conversation_id, expires="1h")
    viewer = Chat(app)
    assert viewer.get(path).status_code == 200
    assert "expires" in text(chat.get(f"/c/{conversation_id}/share"))
    with app.app_context():
        link = db.session.scalar(db.select(ShareLink))
        link.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    response = viewer.get(path)
    assert response.status_code == 404 and "has expired" in text(response)
    assert 'name="robots" content="noindex"' in response.get_data(as_text=True)
    assert "expired" in text(chat.get(f"/c/{conversation_id}/share"))  # the owner sees it too
    assert viewer.get("/s/no-such-token").status_code == 404


# -- what a viewer sees ------------------------------------------------------------------------------------
def test_viewer_page_is_read_only_with_authors_and_works_without_javascript(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = owner_with_answer(chat, upstream)
    path = share(chat, conversation_id)
    viewer = Chat(app)
    response = viewer.get(path)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert answers(page) == ["The first answer"]
    assert '<h2 class="author">Guest ' in page  # the owner here is a guest: "Guest 1234"
    assert 'id="composer"' not in page and "/retry" not in page and "/edit" not in page and "/stop" not in page
    assert 'id="sidebar"' not in page  # nothing of the owner's other conversations
    # "Continue in my chats" is a real form; the stream, if any, would be the link's own.
    assert f'action="{path}/fork"' in page
    assert f"/messages/{answer_id}/events" not in page


def test_snapshot_keeps_what_existed_while_live_follows(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    live = share(chat, conversation_id, kind="live")
    snapshot = share(chat, conversation_id, kind="snapshot")
    upstream.script(Reply(tokens=["The second answer"]))
    chat.wait(chat.send(conversation_id, "And then?"))
    viewer = Chat(app)
    assert answers(viewer.get(live).get_data(as_text=True)) == ["The first answer", "The second answer"]
    snap = viewer.get(snapshot).get_data(as_text=True)
    assert answers(snap) == ["The first answer"] and "And then?" not in snap
    assert "a snapshot of" in text(viewer.get(snapshot))


def test_snapshot_of_an_answer_being_written_keeps_its_text_then(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    reply = Reply(tokens=["Half ", "way ", "there ", "and ", "done"], pause_after=3)
    upstream.script(reply)
    answer_id = chat.send(conversation_id, "Go on")

    def flushed() -> bool:
        with app.app_context():
            return db.session.get(Message, answer_id).content == "Half way there "

    wait_until(flushed, "the first three tokens are stored")
    snapshot = share(chat, conversation_id, kind="snapshot")
    reply.resume.set()
    assert chat.wait(answer_id).content == "Half way there and done"
    page = Chat(app).get(snapshot)
    assert answers(page.get_data(as_text=True))[-1] == "Half way there"
    assert "still being written when this link was made" in text(page)
    assert "sse-connect" not in page.get_data(as_text=True).split('id="messages"', 1)[1]  # nothing streams


def test_leaf_shows_another_version_without_changing_the_owners(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, first_answer = owner_with_answer(chat, upstream, "Version one")
    upstream.script(Reply(tokens=["Version two"]))
    chat.wait(int(chat.post(f"/messages/{first_answer}/retry").headers["Location"].rsplit("-", 1)[1]))
    path = share(chat, conversation_id)
    viewer = Chat(app)
    page = viewer.get(path).get_data(as_text=True)
    assert answers(page) == ["Version two"] and "2 / 2" in page
    previous = re.search(rf'href="({re.escape(path)}\?leaf=\d+)#message-\d+" aria-label="Previous version"', page)
    assert previous, "‹ is a link on the shared page"
    older = viewer.get(html.unescape(previous.group(1))).get_data(as_text=True)
    assert answers(older) == ["Version one"] and "1 / 2" in older and "another version" in older
    assert answers(chat.get(f"/c/{conversation_id}").get_data(as_text=True)) == ["Version two"]  # owner unchanged
    assert answers(viewer.get(path).get_data(as_text=True)) == ["Version two"]
    assert viewer.get(f"{path}?leaf=999999").status_code == 404


def test_signed_in_only_link_needs_an_account_and_previews_show_nothing(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream, "A private answer")
    path = share(chat, conversation_id, visibility="accounts")
    stranger = Chat(app)
    refused = stranger.get(path)
    body = refused.get_data(as_text=True)
    assert refused.status_code == 401 and "Only signed-in users" in text(refused)
    assert "/sign-in?next=" in body and "A private answer" not in body and "Hello there" not in body
    assert 'content="A shared conversation"' in body and 'name="robots" content="noindex"' in body
    stranger.post(f"/c/{conversation_id}/messages", {"content": "x"})  # now a guest (of its own)
    assert stranger.get(path).status_code == 403  # a guest is not an account

    reader = Chat(app)
    assert sign_up(reader, "reader", display_name="Rea Der").status_code == 303
    page = reader.get(path).get_data(as_text=True)
    assert "A private answer" in page
    # Even to a signed-in reader the preview tags say nothing of the conversation.
    assert '<meta property="og:title" content="A shared conversation">' in page
    assert "Hello there" not in page.split("</head>", 1)[0]


def test_open_graph_and_noindex_unless_the_owner_allows_indexing(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    quiet = share(chat, conversation_id)
    listed = share(chat, conversation_id, allow_indexing="on")
    viewer = Chat(app)
    response = viewer.get(quiet)
    head = response.get_data(as_text=True).split("</head>", 1)[0]
    assert '<meta property="og:title" content="Hello there">' in head
    assert '<meta property="og:description" content="Hello there">' in head
    assert '<meta name="robots" content="noindex">' in head and response.headers["X-Robots-Tag"] == "noindex"
    assert response.headers["Cache-Control"] == "private, no-cache"
    response = viewer.get(listed)
    assert 'name="robots"' not in response.get_data(as_text=True) and "X-Robots-Tag" not in response.headers
    assert "search engines may list it" in text(chat.get(f"/c/{conversation_id}/share"))


def test_images_are_seen_through_the_link_and_by_nobody_else(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    response = chat.post(
        "/conversations",
        {"content": "look", "images": [(png((255, 0, 0)), "red.png")]},
        content_type="multipart/form-data",
    )
    conversation_id = int(re.search(r"/c/(\d+)", response.headers["Location"]).group(1))
    chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    path = share(chat, conversation_id)
    viewer = Chat(app)
    page = viewer.get(path).get_data(as_text=True)
    image_url = re.search(r'<img src="([^"]+)"', page).group(1)
    assert image_url.startswith(f"{path}/images/")
    image_id = image_url.rsplit("/", 1)[1]
    shown = viewer.client.get(image_url)
    assert shown.status_code == 200 and shown.mimetype == "image/png" and shown.headers["X-Robots-Tag"] == "noindex"
    assert viewer.get(f"/images/{image_id}").status_code == 404  # not without the link
    other_path = share(chat, owner_with_answer(chat, upstream)[0])
    assert viewer.get(f"{other_path}/images/{image_id}").status_code == 404  # nor through another conversation's
    chat.post(f"/share/{path.rsplit('/', 1)[1]}/revoke")
    assert viewer.get(image_url).status_code == 404  # nor once the link is off


def test_continue_in_my_chats_copies_the_path_shown(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, first_answer = owner_with_answer(chat, upstream, "Version one")
    upstream.script(Reply(tokens=["Version two"]))
    chat.wait(int(chat.post(f"/messages/{first_answer}/retry").headers["Location"].rsplit("-", 1)[1]))
    path = share(chat, conversation_id)
    viewer = Chat(app)
    viewer.get(path)
    response = viewer.post(f"{path}/fork", {"leaf": str(first_answer)})
    assert response.status_code == 303
    copy_id = int(re.search(r"/c/(\d+)", response.headers["Location"]).group(1))
    assert copy_id != conversation_id
    mine = viewer.get(f"/c/{copy_id}").get_data(as_text=True)
    assert answers(mine) == ["Version one"] and "Hello there" in mine and 'id="composer"' in mine
    assert "1 / 2" not in mine  # only the path shown was copied
    upstream.script(Reply(tokens=["Going on"]))
    viewer.wait(viewer.send(copy_id, "Go on, in my copy"))
    assert answers(viewer.get(f"/c/{copy_id}").get_data(as_text=True))[-1] == "Going on"
    with app.app_context():  # the original is untouched
        original = db.session.get(Conversation, conversation_id)
        assert [m.content for m in original.path()][-1] == "Version two"
        count = db.select(db.func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
        assert db.session.scalar(count) == 3


# -- streams ------------------------------------------------------------------------------------------------
def live_events(viewer: Chat, path: str) -> Iterator[Event]:
    """A live link's page's one event stream, as the page's JavaScript opens it: its events as they come."""
    page = viewer.get(path).get_data(as_text=True)
    url = html.unescape(re.search(r'sse-connect="([^"]+)"', page).group(1))
    assert page.count("sse-connect=") == 1 and url.startswith(f"{path}/watch?shown=")
    stream = Stream(lambda: viewer.client.get(url, buffered=False))
    assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    return (e for e in parse(stream) if isinstance(e, Event))


def until_finished(events: Iterator[Event], answer_id: int) -> list[Event]:
    """The live stream's events until the page shows the answer finished: its final message out of band
    (``answer``), or the messages again (``changed``) if the owner's conversation was seen to change first."""
    seen: list[Event] = []
    for event in events:
        seen.append(event)
        finished = event.event == "answer" and f'id="message-{answer_id}"' in event.data
        if finished or (event.event == "changed" and 'data-status="streaming"' not in event.data):
            return seen
    raise AssertionError("the stream ended before the answer did")


def test_live_link_streams_the_answer_on_the_pages_one_stream(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    live = share(chat, conversation_id)
    snapshot = share(chat, conversation_id, kind="snapshot")
    reply = Reply(tokens=[f" w{i}" for i in range(60)], delay=0.02, pause_after=2)
    upstream.script(reply)
    answer_id = chat.send(conversation_id, "Stream it")
    viewer = Chat(app)
    page = viewer.get(live).get_data(as_text=True)
    assert 'data-status="streaming"' in page and f"/messages/{answer_id}/events" not in page  # no stream per answer
    assert '<noscript><meta http-equiv="refresh"' in page  # without JavaScript the page refreshes while it is written
    events = live_events(viewer, live)
    reply.resume.set()
    # The answer's rendered swaps and the words between renders come on the page's one stream, out of band.
    seen = until_finished(events, answer_id)
    answer = [e for e in seen if e.event == "answer"]
    renders = [e for e in answer if f'hx-swap-oob="innerHTML:#message-{answer_id} .tail"' in e.data]
    assert renders and f'hx-swap-oob="innerHTML:#blocks-{answer_id}"' in renders[0].data  # the first replaces
    assert any(f'hx-swap-oob="beforeend:#pending-{answer_id}"' in e.data for e in answer)  # text between renders
    done = seen[-1].data
    assert 'data-status="complete"' in done and "w59" in done and 'data-status="streaming"' not in done
    assert "/retry" not in done and "sse-connect" not in done
    # A snapshot and another version have no live stream: the page refreshes itself instead.
    assert "sse-connect" not in viewer.get(snapshot).get_data(as_text=True)
    assert viewer.get(f"{snapshot}/watch").status_code == 404
    assert viewer.get("/s/nope/watch").status_code == 404
    assert viewer.get(f"{live}/messages/{answer_id}/events").status_code == 404  # no such route any more


def test_another_version_of_a_live_link_refreshes_while_its_answer_is_written(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    live = share(chat, conversation_id)
    reply = Reply(tokens=["slow"] * 20, delay=0.01, pause_after=1)
    upstream.script(reply)
    answer_id = chat.send(conversation_id, "Another")
    page = Chat(app).get(f"{live}?leaf={answer_id}").get_data(as_text=True)
    assert 'data-status="streaming"' in page and "sse-connect" not in page
    assert '<meta http-equiv="refresh"' in page and "<noscript><meta" not in page  # with JavaScript too
    reply.resume.set()
    chat.wait(answer_id)


# -- the JSON API --------------------------------------------------------------------------------------------
def test_api_creates_lists_views_and_revokes(app, upstream) -> None:  # noqa: ANN001
    owner = ApiClient(app)
    conversation = owner.call("POST", "/conversations", {"title": "API chat"}).get_json()
    upstream.script(Reply(tokens=["From the API"]))
    sent = owner.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "Hi API"}).get_json()
    Chat(app).wait(sent["assistant_message"]["id"])

    created = owner.call("POST", f"/conversations/{conversation['id']}/shares", {"kind": "snapshot"})
    assert created.status_code == 201, created.get_data(as_text=True)
    link = created.get_json()
    assert link["kind"] == "snapshot" and link["visibility"] == "anyone" and link["url"].endswith(link["token"])
    listed = owner.call("GET", f"/conversations/{conversation['id']}/shares").get_json()["items"]
    assert [item["token"] for item in listed] == [link["token"]]

    anyone = app.test_client()
    shown = anyone.get(f"/api/v1/shared/{link['token']}")
    assert shown.status_code == 200
    body = shown.get_json()
    assert body["title"] == "API chat" and [m["content"] for m in body["messages"]] == ["Hi API", "From the API"]
    assert body["messages"][0]["author"].startswith("Guest ") and "feedback" not in body["messages"][1]

    stranger = ApiClient(app)
    assert stranger.call("GET", f"/conversations/{conversation['id']}/shares").status_code == 404
    assert stranger.call("DELETE", f"/shares/{link['token']}").status_code == 404
    assert owner.call("DELETE", f"/shares/{link['token']}").status_code == 204
    gone = anyone.get(f"/api/v1/shared/{link['token']}")
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "share_revoked"
    assert owner.call("GET", f"/conversations/{conversation['id']}/shares").get_json()["items"] == []


def test_api_errors_match_the_page(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    owner = ApiClient(app)
    conversation = owner.call("POST", "/conversations", {"title": "x"}).get_json()
    url = f"/conversations/{conversation['id']}/shares"
    past = owner.call("POST", url, {"expires_at": "2000-01-01T00:00:00Z"})
    assert past.status_code == 422 and "must be in the future" in past.get_json()["error"]["message"]
    assert owner.call("POST", url, {"kind": "forever"}).status_code == 422
    accounts_only = owner.call("POST", url, {"visibility": "accounts"}).get_json()
    refused = app.test_client().get(f"/api/v1/shared/{accounts_only['token']}")
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "sign_in_required"
    guest = ApiClient(app)
    refused = guest.call("GET", f"/shared/{accounts_only['token']}")
    assert refused.status_code == 403 and "sign in" in refused.get_json()["error"]["message"]
    page = Chat(app).get(f"/s/{accounts_only['token']}")
    assert page.status_code == 401  # the same rule, from the same core
    soon = owner.call("POST", url, {"expires_at": (utcnow() + timedelta(hours=1)).isoformat() + "Z"}).get_json()
    assert soon["expires_at"] and not soon["expired"]


def test_openapi_documents_the_share_routes(app) -> None:  # noqa: ANN001
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    paths = document["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/conversations/{conversation_id}/shares"])
    assert "delete" in paths["/api/v1/shares/{token}"]
    viewer = paths["/api/v1/shared/{token}"]["get"]
    assert "security" not in viewer and viewer["parameters"][0]["schema"]["type"] == "string"
    assert "SharedConversation" in document["components"]["schemas"]


@pytest.mark.parametrize("kind", ["live", "snapshot"])
def test_deleting_the_conversation_ends_its_links(app, chat: Chat, upstream, kind: str) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    path = share(chat, conversation_id, kind=kind)
    assert chat.post(f"/c/{conversation_id}/delete").status_code == 303
    assert Chat(app).get(path).status_code == 404
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ShareLink)) == 0


@pytest.mark.postgres
def test_share_links_on_postgresql(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    """The migration's table on PostgreSQL: a snapshot made mid-answer (its frozen JSON), live, fork, revoke;
    and the migration goes down and up again."""
    app = make_app(DATABASE_URL=postgres_url)
    owner = Chat(app)
    conversation_id, _ = owner_with_answer(owner, upstream)
    reply = Reply(tokens=["Part ", "one ", "and ", "two"], pause_after=2)
    upstream.script(reply)
    answer_id = owner.send(conversation_id, "More")

    def flushed() -> bool:
        with app.app_context():
            return db.session.get(Message, answer_id).content == "Part one "

    wait_until(flushed, "two tokens are stored")
    snapshot = share(owner, conversation_id, kind="snapshot")
    live = share(owner, conversation_id)
    reply.resume.set()
    owner.wait(answer_id)
    viewer = Chat(app)
    assert answers(viewer.get(snapshot).get_data(as_text=True))[-1] == "Part one"
    assert answers(viewer.get(live).get_data(as_text=True))[-1] == "Part one and two"
    viewer.get(live)
    copy = viewer.post(f"{live}/fork")
    assert copy.status_code == 303
    assert "Part one and two" in viewer.get(copy.headers["Location"]).get_data(as_text=True)
    owner.post(f"/share/{live.rsplit('/', 1)[1]}/revoke")
    assert viewer.get(live).status_code == 404

    from flask_migrate import downgrade, upgrade

    with app.app_context():
        db.session.remove()
        downgrade(revision="-1")  # this migration down and up again
        upgrade()


def test_anyone_link_works_with_guests_off_and_fork_asks_to_sign_in(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(GUESTS="off")
    owner = Chat(app)
    assert sign_up(owner, "owner", display_name="Ana").status_code == 303
    conversation_id, _ = owner_with_answer(owner, upstream)
    path = share(owner, conversation_id)
    stranger = Chat(app)
    page = stranger.get(path)
    assert page.status_code == 200 and "The first answer" in page.get_data(as_text=True)
    assert '<h2 class="author">Ana</h2>' in page.get_data(as_text=True)
    assert "Shared by Ana" in text(page)
    response = stranger.post(f"{path}/fork")
    assert response.status_code == 303 and "/sign-in" in response.headers["Location"]


def test_live_watch_stream_sends_the_new_messages_then_says_when_the_link_is_off(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = owner_with_answer(chat, upstream)
    path = share(chat, conversation_id)
    viewer = Chat(app)
    stream = Stream(lambda: viewer.client.get(f"{path}/watch", buffered=False))
    assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    events = (e for e in parse(stream) if isinstance(e, Event))
    upstream.script(Reply(tokens=["Newer"]))
    chat.wait(chat.send(conversation_id, "Something new"))
    changed = next(events)
    assert changed.event == "changed" and "Something new" in changed.data
    chat.post(f"/share/{path.rsplit('/', 1)[1]}/revoke")
    gone = next(e for e in events if e.event != "changed")
    assert gone.event == "gone" and "turned off" in gone.data
    assert viewer.get(f"{share(chat, conversation_id, kind='snapshot')}/watch").status_code == 404


def test_live_stream_shows_at_once_what_changed_before_it_began(app, chat: Chat, upstream) -> None:  # noqa: ANN001
    """The page names the state it shows: a message sent between the page and its stream is not missed."""
    conversation_id, _ = owner_with_answer(chat, upstream)
    path = share(chat, conversation_id)
    viewer = Chat(app)
    page = viewer.get(path).get_data(as_text=True)
    url = html.unescape(re.search(r'sse-connect="([^"]+)"', page).group(1))
    assert url.startswith(f"{path}/watch?shown=")
    upstream.script(Reply(tokens=["Meanwhile"]))
    chat.wait(chat.send(conversation_id, "Sent before the stream opened"))
    events = (e for e in parse(Stream(lambda: viewer.client.get(url, buffered=False))) if isinstance(e, Event))
    changed = next(events)
    assert changed.event == "changed" and "Sent before the stream opened" in changed.data
    assert "Meanwhile" in changed.data


@pytest.mark.redis
def test_live_link_streams_from_another_worker_with_redis(
    make_app, upstream, redis_url: str, redis_prefix: str
) -> None:  # noqa: ANN001
    """The owner's answer is written in worker A; a viewer's page and stream come from worker B."""
    worker_a = Chat(make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix))
    worker_b = make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    conversation_id, _ = owner_with_answer(worker_a, upstream)
    path = share(worker_a, conversation_id)
    viewer = Chat(worker_b)
    watch = live_events(viewer, path)
    upstream.script(Reply(tokens=[f" w{i}" for i in range(20)], delay=0.1))
    answer_id = worker_a.send(conversation_id, "Across workers")
    first = next(watch)  # worker B's watcher sees the new message
    assert first.event == "changed" and "Across workers" in first.data
    events = until_finished(watch, answer_id)  # the answer, on the same stream, from worker A through Redis
    assert "w0 w1" in events[-1].data and "w19" in events[-1].data
    assert any(f"#message-{answer_id} .tail" in e.data for e in events)


def test_api_viewer_follows_a_live_answer(app, upstream) -> None:  # noqa: ANN001
    owner = ApiClient(app)
    conversation = owner.call("POST", "/conversations", {"title": "Live API"}).get_json()
    live = owner.call("POST", f"/conversations/{conversation['id']}/shares", {}).get_json()
    snapshot = owner.call("POST", f"/conversations/{conversation['id']}/shares", {"kind": "snapshot"}).get_json()
    reply = Reply(tokens=["one ", "two ", "three"], pause_after=1)
    upstream.script(reply)
    sent = owner.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "Go"}).get_json()
    answer_id = sent["assistant_message"]["id"]
    anyone = app.test_client()
    shown = anyone.get(f"/api/v1/shared/{live['token']}").get_json()["messages"]
    stream_url = shown[-1]["stream_url"]
    assert (
        shown[-1]["status"] == "streaming"
        and stream_url == f"/api/v1/shared/{live['token']}/messages/{answer_id}/stream"
    )
    assert shown[0]["stream_url"] is None
    stream = Stream(lambda: anyone.get(stream_url, headers={"Accept": "application/x-ndjson"}, buffered=False))
    reply.resume.set()
    lines = list(ndjson(stream))
    assert any(line["type"] == "delta" for line in lines)
    assert lines[-1]["type"] == "done" and lines[-1]["message"]["content"] == "one two three"
    assert "feedback" not in lines[-1]["message"] and lines[-1]["message"]["stream_url"] is None
    assert anyone.get(f"/api/v1/shared/{snapshot['token']}/messages/{answer_id}/stream").status_code == 404
