"""Live rooms without a browser: invite links, roles through every door, one answer at a time, the room's
event stream, presence and removal. The browser tests are in test_rooms_browser.py."""

from __future__ import annotations

import json
import re
import time

import pytest

from chatapp import rooms
from chatapp.extensions import db
from chatapp.generation import current_generator
from chatapp.models import Message, RoomMember
from tests.auth import PASSWORD, sidebar_titles, sign_up, text
from tests.clients import ApiClient, WebSocket, ndjson, serve, stored
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import Event, Stream, parse


def invite_link(owner: Chat, conversation_id: int, role: str = "member") -> str:
    """The owner makes an invite link through the page's form; returns its token."""
    response = owner.post(f"/c/{conversation_id}/invite", {"role": role})
    assert response.status_code == 303
    page = owner.get(f"/c/{conversation_id}").get_data(as_text=True)
    return re.search(r'id="invite-link" class="invite-link" readonly value="[^"]*/join/([^"]+)"', page).group(1)


def join(app, token: str) -> Chat:  # noqa: ANN001
    """A new visitor (a guest) opens the invite link and presses Join, without JavaScript."""
    visitor = Chat(app)
    page = visitor.get(f"/join/{token}")
    assert page.status_code == 200 and "Join" in text(page)
    response = visitor.post(f"/join/{token}")
    assert response.status_code == 303, response.get_data(as_text=True)
    return visitor


def room(chat: Chat) -> tuple[int, Chat, Chat, str]:
    """A conversation of ``chat`` with a member and a viewer: (conversation id, member, viewer, member token)."""
    conversation_id, answer_id = chat.start("Hello room")
    chat.wait(answer_id)
    member = join(chat.app, invite_link(chat, conversation_id, "member"))
    viewer = join(chat.app, invite_link(chat, conversation_id, "viewer"))
    return conversation_id, member, viewer, ""


def room_events(visitor: Chat, conversation_id: int) -> tuple[Stream, str]:
    """Open the room page's one event stream, as the page's JavaScript does: (stream, page key)."""
    page = visitor.get(f"/c/{conversation_id}").get_data(as_text=True)
    url = re.search(r'sse-connect="(/c/\d+/events[^"]*)"', page).group(1).replace("&amp;", "&")
    key = re.search(r'data-page="([0-9a-f]{16})"', page).group(1)
    return Stream(lambda: visitor.client.get(url, buffered=False)), key


def until(events, predicate, what: str) -> Event:  # noqa: ANN001
    for event in events:
        if isinstance(event, Event) and predicate(event):
            return event
    raise AssertionError(f"the stream ended before {what}")


def test_roles_are_honoured_by_the_page(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, member, viewer, _ = room(chat)
    # The member sends without JavaScript (a plain form, 303), and every user message shows who sent it.
    answer = member.send(conversation_id, "From the member")
    member.wait(answer)
    owner_page = text(chat.get(f"/c/{conversation_id}"))
    with chat.app.app_context():
        sent = db.session.scalar(db.select(Message).where(Message.content == "From the member"))
        member_name, own_id = sent.author.name, sent.id
        first = db.session.scalar(db.select(Message).where(Message.content == "Hello room")).id
    assert f"{member_name} From the member" in owner_page and "You Hello room" in owner_page
    assert "Echo: From the member" in owner_page
    owner_html = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert '<span id="members-count">3</span>' in owner_html and "remove-member" in owner_html

    # A viewer reads, live and without JavaScript, but cannot write: no message box, and a 403 saying why.
    viewer_page = viewer.get(f"/c/{conversation_id}")
    assert viewer_page.status_code == 200 and "From the member" in text(viewer_page)
    assert 'id="composer"' not in viewer_page.get_data(as_text=True)
    refused = viewer.post(f"/c/{conversation_id}/messages", {"content": "let me in"})
    assert refused.status_code == 403 and "viewer" in text(refused)
    assert viewer.post(f"/messages/{answer}/retry").status_code == 403

    # A member edits only their own messages; retry and stop are theirs too; managing is the owner's.
    assert member.post(f"/messages/{first}/edit", {"content": "hijack"}).status_code == 403
    edit_page = member.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert f"/messages/{own_id}/edit" in edit_page and f"/messages/{first}/edit" not in edit_page
    assert member.post(f"/c/{conversation_id}/rename", {"title": "Mine now"}).status_code == 403
    assert member.post(f"/c/{conversation_id}/delete").status_code == 403
    retried = member.post(f"/messages/{answer}/retry")
    assert retried.status_code == 303
    member.wait(member.latest_answer(conversation_id))
    assert member.post(f"/messages/{own_id}/edit", {"content": "From the member, edited"}).status_code == 303
    member.wait(member.latest_answer(conversation_id))
    assert "Echo: From the member, edited" in text(chat.get(f"/c/{conversation_id}"))

    # The room is in the members' sidebars; a member can leave it.
    assert "Hello room" in sidebar_titles(member)
    with chat.app.app_context():
        row = db.session.scalar(db.select(RoomMember).where(RoomMember.role == "viewer"))
        other = db.session.scalar(db.select(RoomMember).where(RoomMember.role == "member"))
    assert viewer.post(f"/c/{conversation_id}/members/{other.id}/remove").status_code == 403  # only the owner
    assert viewer.post(f"/c/{conversation_id}/members/{row.id}/remove").status_code == 303
    assert viewer.get(f"/c/{conversation_id}").status_code == 404 and "Hello room" not in sidebar_titles(viewer)

    # Strangers see nothing at all.
    stranger = Chat(chat.app)
    assert stranger.get(f"/c/{conversation_id}").status_code == 404


def test_one_answer_at_a_time_names_who_is_answered(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, member, _viewer, _ = room(chat)
    reply = Reply(tokens=["slow"] * 50, delay=0.01, pause_after=2)
    upstream.script(reply)
    answer = chat.send(conversation_id, "Mine first")
    owner_name = text(member.get(f"/c/{conversation_id}")).split(" Mine first")[0].rsplit(" ", 2)[-2:]
    refused = member.post(f"/c/{conversation_id}/messages", {"content": "Me too"})
    assert refused.status_code == 409
    assert f"An answer to {' '.join(owner_name)} is still being written" in text(refused)
    # Stop works for any member.
    assert member.post(f"/messages/{answer}/stop").status_code == 303
    assert chat.wait(answer).status == "stopped"
    reply.resume.set()


def test_the_room_stream_shows_what_others_send_from_any_door(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, member, viewer, _ = room(chat)
    stream, _key = room_events(viewer, conversation_id)
    events = parse(stream)
    # The member's API token: the same identity through the REST door.
    api = ApiClient(chat.app)
    join_token = invite_link(chat, conversation_id, "member")
    assert api.call("POST", "/join", {"token": join_token}).status_code == 200
    until(events, lambda e: e.event == "room" and 'id="presence"' in e.data, "presence was sent")
    upstream.script(Reply(tokens=[f" w{i}" for i in range(12)], delay=0.03))
    sent = api.call("POST", f"/conversations/{conversation_id}/messages", {"content": "Through the API"})
    assert sent.status_code == 202
    answer_id = sent.get_json()["assistant_message"]["id"]
    assert sent.get_json()["user_message"]["author_name"].startswith("Guest")
    new = until(events, lambda e: e.event == "room" and "Through the API" in e.data, "the new message came")
    assert f'id="message-{answer_id}"' in new.data and 'class="stop"' in new.data
    grew = until(events, lambda e: e.event == "room" and f"#message-{answer_id} .tail" in e.data, "the answer grew")
    assert "<p>w0" in grew.data
    done = until(events, lambda e: e.event == "room" and 'hx-swap-oob="true"' in e.data and "w11" in e.data, "done")
    assert 'data-status="complete"' in done.data and 'class="send"' in done.data
    # A version switch by a member moves every page: the path is re-sent whole.
    with chat.app.app_context():
        first_answer = db.session.scalar(db.select(Message).where(Message.content == "Echo: Hello room")).id
    member.post(f"/messages/{answer_id}/retry")
    member.wait(member.latest_answer(conversation_id))
    assert member.post(f"/messages/{first_answer}/show").status_code == 303
    path = until(events, lambda e: e.event == "room" and 'hx-swap-oob="innerHTML:#messages"' in e.data, "path")
    assert "Hello room" in path.data


def test_presence_typing_and_the_websocket_names(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, member, viewer, _ = room(chat)
    owner_stream, owner_key = room_events(chat, conversation_id)
    owner_events = parse(owner_stream)
    until(owner_events, lambda e: 'id="presence"' in e.data and "Only you here" in e.data, "alone at first")
    with chat.app.app_context():
        names = {m.user_id: m.user.name for m in db.session.scalars(db.select(RoomMember))}
    member_name = names[next(iter(names))]
    member_stream, _ = room_events(member, conversation_id)
    until(owner_events, lambda e: 'id="presence"' in e.data and f"{member_name} here" in e.data, "the member came")
    # Typing reaches the others, never the typist.
    member_events = parse(member_stream)
    assert member.post(f"/c/{conversation_id}/typing", {"typing": "1"}).status_code == 204
    typing = until(owner_events, lambda e: 'id="typing"' in e.data and "typing" in e.data, "typing shown")
    assert f"{member_name} is typing…" in typing.data
    # ... and clears by itself a few seconds later.
    until(owner_events, lambda e: 'id="typing"' in e.data and "typing…" not in e.data, "typing cleared")
    # A viewer may not type (there is no box to type in).
    assert viewer.post(f"/c/{conversation_id}/typing").status_code == 403
    # The page's beacon on leaving: the others see it at once.
    left_at = time.monotonic()
    assert chat.post(f"/c/{conversation_id}/leave", {"page": owner_key}).status_code == 204
    until(member_events, lambda e: 'id="presence"' in e.data and "Only you here" in e.data, "the owner left")
    assert time.monotonic() - left_at < 2


def test_the_websocket_hears_page_participants_by_name(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    owner = ApiClient(app)
    conversation_id = owner.call("POST", "/conversations", {"title": "Sockets"}).get_json()["id"]
    invite = owner.call("POST", f"/conversations/{conversation_id}/invite", {"role": "member"})
    assert invite.status_code == 201 and invite.get_json()["role"] == "member"
    visitor = join(app, invite.get_json()["token"])
    with serve(app) as base_url:
        ws = WebSocket(base_url, owner.token)
        ws.send(type="subscribe", conversation_id=conversation_id)
        ws.send(type="ping", request_id="p")
        ws.until(lambda m: m["type"] == "pong")
        stream, key = room_events(visitor, conversation_id)
        joined = ws.until(lambda m: m["type"] == "user_joined")
        assert joined["name"].startswith("Guest") and joined["conversation_id"] == conversation_id
        visitor.post(f"/c/{conversation_id}/typing")
        typing = ws.until(lambda m: m["type"] == "typing_indicator")
        assert typing["name"] == joined["name"] and typing["is_typing"] is True
        visitor.post(f"/c/{conversation_id}/leave", {"page": key})
        assert ws.until(lambda m: m["type"] == "user_left")["name"] == joined["name"]
        members = owner.call("GET", f"/conversations/{conversation_id}/members").get_json()
        paths = owner.call("GET", "/openapi.json").get_json()["paths"]
        assert {"get"} <= set(paths["/api/v1/conversations/{conversation_id}/members"])
        assert {"post", "delete"} <= set(paths["/api/v1/conversations/{conversation_id}/invite"])
        assert [m["role"] for m in members["items"]] == ["owner", "member"]
        assert members["invite"]["url"].endswith(invite.get_json()["token"])
        # The owner removes the member through the API; their socket, if any, and pages are cut off.
        member_id = members["items"][1]["member_id"]
        assert owner.call("DELETE", f"/conversations/{conversation_id}/members/{member_id}").status_code == 204
        assert visitor.get(f"/c/{conversation_id}").status_code == 404
        ws.close()


def test_a_removed_member_is_cut_off_and_an_ended_link_stops_working(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, member, _viewer, _ = room(chat)
    token = invite_link(chat, conversation_id)
    stream, _ = room_events(member, conversation_id)
    events = parse(stream)
    until(events, lambda e: 'id="presence"' in e.data, "the stream is open")
    with chat.app.app_context():
        member_id = db.session.scalars(db.select(RoomMember.id).order_by(RoomMember.id)).first()
    assert chat.post(f"/c/{conversation_id}/members/{member_id}/remove").status_code == 303
    removed_at = time.monotonic()
    closed = until(events, lambda e: "no longer in this conversation" in e.data, "the member was told")
    assert closed.event == "room"
    assert until(events, lambda e: e.event == "closed", "the stream closed")
    assert next(events, None) is None and time.monotonic() - removed_at < 5  # the stream has ended
    assert member.get(f"/c/{conversation_id}").status_code == 404
    assert member.post(f"/c/{conversation_id}/messages", {"content": "still here?"}).status_code == 404
    # Ending the invite link: it stops working, for new visitors; nobody else is affected.
    assert chat.post(f"/c/{conversation_id}/invite/end").status_code == 303
    assert Chat(chat.app).get(f"/join/{token}").status_code == 404


def test_max_room_members(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(MAX_ROOM_MEMBERS=2)
    owner = Chat(app)
    conversation_id, answer = owner.start("Small room")
    owner.wait(answer)
    token = invite_link(owner, conversation_id)
    join(app, token)
    late = Chat(app)
    late.get(f"/join/{token}")
    refused = late.post(f"/join/{token}")
    assert refused.status_code == 409 and "MAX_ROOM_MEMBERS is 2" in text(refused)


def test_messages_of_a_deleted_account_stay_as_from_a_deleted_user(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer = chat.start("Owner here")
    chat.wait(answer)
    token = invite_link(chat, conversation_id)
    ana = Chat(chat.app)
    sign_up(ana, "ana")
    ana.get(f"/join/{token}")
    assert ana.post(f"/join/{token}").status_code == 303
    ana.wait(ana.send(conversation_id, "Ana was here"))
    assert "ana Ana was here" in text(chat.get(f"/c/{conversation_id}"))
    ana.get("/settings/delete")
    assert ana.post("/settings/delete", {"password": PASSWORD}).status_code == 303
    page = text(chat.get(f"/c/{conversation_id}"))
    assert "a deleted user Ana was here" in page and "Echo: Ana was here" in page


def test_rooms_on_postgres(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    owner = Chat(make_app(DATABASE_URL=postgres_url))
    conversation_id, member, viewer, _ = room(owner)
    reply = Reply(tokens=["slow"] * 50, delay=0.01, pause_after=2)
    upstream.script(reply)
    answer = member.send(conversation_id, "Member asks")
    refused = owner.post(f"/c/{conversation_id}/messages", {"content": "Owner too"})
    assert refused.status_code == 409 and "An answer to Guest" in text(refused)
    assert viewer.post(f"/messages/{answer}/stop").status_code == 403
    assert owner.post(f"/messages/{answer}/stop").status_code == 303
    reply.resume.set()
    assert owner.wait(answer).status == "stopped"
    assert "Member asks" in text(viewer.get(f"/c/{conversation_id}"))
    member.get("/settings/delete")
    assert member.post("/settings/delete", {"confirm": "yes"}).status_code == 303
    assert "a deleted user Member asks" in text(owner.get(f"/c/{conversation_id}"))


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_a_removed_members_api_stream_is_cut_off(chat: Chat, upstream, accept: str) -> None:  # noqa: ANN001
    conversation_id, answer = chat.start("Owner")
    chat.wait(answer)
    api = ApiClient(chat.app)
    assert api.call("POST", "/join", {"token": invite_link(chat, conversation_id)}).status_code == 200
    reply = Reply(tokens=["slow"] * 50, delay=0.01, pause_after=3)
    upstream.script(reply)
    answer = chat.send(conversation_id, "Long one")
    stream = api.stream("GET", f"/messages/{answer}/stream", Accept=accept)
    if accept == "application/x-ndjson":  # JSON lines, as events: (type, the line)
        events = (Event(line["type"], json.dumps(line), None) for line in ndjson(stream))
    else:
        events = parse(stream)
    until(events, lambda e: e.event == "delta", "the member reads the answer")
    member_id = api.call("GET", f"/conversations/{conversation_id}/members").get_json()["items"][1]["member_id"]
    chat.post(f"/c/{conversation_id}/members/{member_id}/remove")
    started = time.monotonic()
    cut = until(events, lambda e: e.event == "error", "the member was cut off")
    assert "not_found" in cut.data and time.monotonic() - started < 5
    assert next(events, None) is None  # the stream has ended
    reply.resume.set()


def test_a_removed_members_own_answer_stream_on_the_page_is_cut_off(chat: Chat, upstream) -> None:  # noqa: ANN001
    # The room page follows answers on its one room stream; an answer's own stream (the chat page's)
    # is open to room members too, and is cut off the same way.
    conversation_id, member, _viewer, _ = room(chat)
    reply = Reply(tokens=["slow "] * 50, delay=0.01, pause_after=3)
    upstream.script(reply)
    answer = chat.send(conversation_id, "Long one")
    events = parse(Stream(lambda: member.client.get(f"/messages/{answer}/events", buffered=False)))
    until(events, lambda e: e.event in ("text", "tail"), "the member reads the answer")
    with chat.app.app_context():
        member_id = db.session.scalars(db.select(RoomMember.id).order_by(RoomMember.id)).first()
    assert chat.post(f"/c/{conversation_id}/members/{member_id}/remove").status_code == 303
    removed_at = time.monotonic()
    until(events, lambda e: e.event == "gone", "the member was cut off")
    assert next(events, None) is None and time.monotonic() - removed_at < 5  # the stream has ended
    assert member.get(f"/messages/{answer}/events").status_code == 404  # and cannot be opened again
    reply.resume.set()


def test_a_connection_that_just_dies_leaves_when_its_presence_expires(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    owner = ApiClient(app)
    conversation_id = owner.call("POST", "/conversations", {"title": "Ghosts"}).get_json()["id"]
    with serve(app) as base_url:
        ws = WebSocket(base_url, owner.token)
        ws.send(type="subscribe", conversation_id=conversation_id)
        ws.send(type="ping", request_id="p")
        ws.until(lambda m: m["type"] == "pong")
        with app.app_context():  # a page that joined and then lost its connection: no more heartbeats
            value = json.dumps({"user_id": "ghost", "name": "Ghost", "door": "page"})
            current_generator().broker.presence_touch(conversation_id, "0123456789abcdef", value, 1.0)
            rooms.publish(conversation_id, "presence", "0123456789abcdef", joined={"user_id": "ghost", "name": "Ghost"})
        assert ws.until(lambda m: m["type"] == "user_joined")["name"] == "Ghost"
        started = time.monotonic()
        left = ws.until(lambda m: m["type"] == "user_left", timeout=20)
        assert left["name"] == "Ghost" and time.monotonic() - started < 20
        ws.close()


def test_with_guests_off_an_invite_asks_to_sign_in_first(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(GUESTS="off")
    owner = Chat(app)
    assert sign_up(owner, "owner").status_code == 303
    conversation_id, answer = owner.start("Accounts only")
    owner.wait(answer)
    token = invite_link(owner, conversation_id)
    visitor = Chat(app)
    response = visitor.get(f"/join/{token}")
    assert response.status_code == 303 and "/sign-in" in response.headers["Location"]
    assert sign_up(visitor, "bobby").status_code == 303
    assert visitor.post(f"/join/{token}").status_code == 303
    assert "Accounts only" in text(visitor.get(f"/c/{conversation_id}"))


def removed_socket_is_closed(ws: WebSocket, conversation_id: int, removed_at: float) -> list[dict]:
    """After the owner removed the socket's user: the ``removed`` error, then the socket closed with 4403
    within 5 s of the removal; returns what came after the error (nothing, if the answer stopped)."""
    told = ws.until(lambda m: m["type"] == "error")
    assert told["code"] == "removed" and told["conversation_id"] == conversation_id
    after = len(ws.received)
    with pytest.raises(ConnectionError, match="closed by the server"):
        ws.until(lambda m: False, timeout=5)
    assert time.monotonic() - removed_at < 5
    assert ws.closed is not None and ws.closed.code == 4403
    assert ws.closed.reason == f"removed from conversation {conversation_id}"
    return ws.received[after:]


def member_socket_in_a_room(owner: Chat, base_url: str) -> tuple[int, ApiClient, WebSocket]:
    """The owner's conversation with a member (through the API) whose socket is open: (id, member, socket)."""
    conversation_id, answer = owner.start("Owner")
    owner.wait(answer)
    member = ApiClient(owner.app)
    assert member.call("POST", "/join", {"token": invite_link(owner, conversation_id)}).status_code == 200
    return conversation_id, member, WebSocket(base_url, member.token)


def remove_the_member(owner: Chat, member: ApiClient, conversation_id: int) -> float:
    """The owner removes the member on the page (a plain form); returns when."""
    members = member.call("GET", f"/conversations/{conversation_id}/members").get_json()["items"]
    member_id = next(m["member_id"] for m in members if m["role"] == "member")
    assert owner.post(f"/c/{conversation_id}/members/{member_id}/remove").status_code == 303
    return time.monotonic()


def test_a_removed_members_socket_is_closed_and_the_answer_it_followed_stops(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    owner = Chat(app)
    with serve(app) as base_url:
        conversation_id, member, ws = member_socket_in_a_room(owner, base_url)
        ws.send(type="subscribe", conversation_id=conversation_id)
        ws.send(type="ping", request_id="p")
        ws.until(lambda m: m["type"] == "pong")
        upstream.script(Reply(tokens=[f" t{i}" for i in range(300)], delay=0.03))  # about 9 s
        answer = owner.send(conversation_id, "A long story")
        ws.until(lambda m: m["type"] == "chunk" and m["message_id"] == answer)  # the member reads along
        removed_at = remove_the_member(owner, member, conversation_id)
        assert removed_socket_is_closed(ws, conversation_id, removed_at) == []  # no token after the error
        # The answer goes on for the room: only the removed member was cut off.
        assert owner.get(f"/c/{conversation_id}").status_code == 200
        assert stored(app, answer).status == "streaming"
        assert owner.post(f"/messages/{answer}/stop").status_code == 303


def test_a_removed_member_following_their_own_answer_on_a_socket_is_cut_off(make_app, upstream) -> None:  # noqa: ANN001
    """Not subscribed: the answer's own follower notices the removal (every rooms.HEARTBEAT), even while
    the model server is quiet."""
    app = make_app()
    owner = Chat(app)
    with serve(app) as base_url:
        conversation_id, member, ws = member_socket_in_a_room(owner, base_url)
        reply = Reply(tokens=[f" t{i}" for i in range(40)], delay=0.02, pause_after=5)
        upstream.script(reply)
        ws.send(type="send_message", request_id="q", conversation_id=conversation_id, content="Mine")
        answer = ws.until(lambda m: m["type"] == "message_created" and m["message"]["role"] == "assistant")
        ws.until(lambda m: m["type"] == "chunk")
        removed_at = remove_the_member(owner, member, conversation_id)
        assert removed_socket_is_closed(ws, conversation_id, removed_at) == []
        reply.resume.set()  # the rest is written for the room
        assert owner.wait(answer["message"]["id"]).status == "complete"


@pytest.mark.redis
def test_a_removed_members_socket_on_another_worker_is_closed(make_app, upstream, redis_url, redis_prefix) -> None:  # noqa: ANN001
    """The member's socket is on worker A; the owner removes them through worker B's page."""
    worker_a = make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    owner = Chat(make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix))
    with serve(worker_a) as base_url:
        conversation_id, member, ws = member_socket_in_a_room(owner, base_url)
        ws.send(type="subscribe", conversation_id=conversation_id)
        ws.send(type="ping", request_id="p")
        ws.until(lambda m: m["type"] == "pong")
        upstream.script(Reply(tokens=[f" t{i}" for i in range(300)], delay=0.03))
        answer = owner.send(conversation_id, "Across workers")  # written by worker B, read on A through Redis
        ws.until(lambda m: m["type"] == "chunk" and m["message_id"] == answer)
        removed_at = remove_the_member(owner, member, conversation_id)
        assert removed_socket_is_closed(ws, conversation_id, removed_at) == []
        assert owner.post(f"/messages/{answer}/stop").status_code == 303


def test_deleting_a_room_is_not_a_removal_the_owners_socket_stays_open(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    owner = ApiClient(app)
    conversation_id = owner.call("POST", "/conversations", {"title": "Short-lived"}).get_json()["id"]
    kept = owner.call("POST", "/conversations", {"title": "Kept"}).get_json()["id"]
    with serve(app) as base_url:
        ws = WebSocket(base_url, owner.token)
        ws.send(type="subscribe", conversation_id=conversation_id)
        ws.send(type="ping", request_id="p")
        ws.until(lambda m: m["type"] == "pong")
        assert owner.call("DELETE", f"/conversations/{conversation_id}").status_code == 204
        told = ws.until(lambda m: m["type"] == "error")
        assert told["conversation_id"] == conversation_id
        ws.send(type="subscribe", conversation_id=kept)  # the socket goes on for the owner's other conversations
        ws.send(type="ping", request_id="still here")
        assert ws.until(lambda m: m["type"] == "pong")["request_id"] == "still here" and ws.closed is None
        ws.close()
