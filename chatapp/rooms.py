"""Live rooms: a conversation shared with members, its events, presence and typing.

The owner invites people with an invite link; each joins as a member (sends, edits their own
messages, retries, stops) or a viewer (reads). What happens in a room (an answer starts, the
visible path changes, someone types, joins, leaves or is removed) is published as a room event
through the broker, so every page and socket of the room hears it, in whichever process or host.
Presence is a key per open page or socket with a short TTL, refreshed by its heartbeat.
No Flask request handling here: the doors format what ``follow_room`` yields.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from flask import current_app, g, has_app_context
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import joinedload

from .errors import ChatError
from .events import Ping
from .extensions import db
from .generation import current_generator
from .models import MEMBER, OWNER, ROLE_RANK, STREAMING, VIEWER, Conversation, Message, RoomMember, User, utcnow
from .streaming_markdown import AnswerDone, AnswerText, AnswerUpdate, pump_answer

log = logging.getLogger(__name__)

PRESENCE_SETTLE = 0.3  # seconds a follower lets presence changes pile up before it looks again (a room filling up)
PRESENCE_TTL = 15.0  # seconds a page or socket counts as present without a heartbeat
HEARTBEAT = 4.0  # seconds between a follower's heartbeats (presence, access re-check, keep-alive)
TYPING_FOR = 4.0  # seconds "… is typing" stays after the last keystroke reported
SEEN_EVERY = 60.0  # seconds between writes of a member's last_seen_at while their page is open
JOIN_ROLES = (MEMBER, VIEWER)


# -- membership ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """Someone in a room: the owner or a member row."""

    user_id: str
    name: str
    role: str
    last_seen_at: object
    member_id: int | None  # the RoomMember row (None: the owner)


def is_room(conversation: Conversation) -> bool:
    """True once the conversation is shared: it has an invite link or members."""
    if conversation.invite_token:
        return True
    return db.session.scalar(_any_member(), {"conversation_id": conversation.id}) is not None


@functools.cache
def _any_member() -> Select:
    """One member of a conversation (bound as ``conversation_id``): built once, as every send asks."""
    return select(RoomMember.id).where(RoomMember.conversation_id == bindparam("conversation_id")).limit(1)


def members(conversation: Conversation) -> list[Member]:
    """The owner, then the members in the order they joined."""
    owner = conversation.owner
    found = [Member(owner.id, owner.name, OWNER, owner.last_seen_at, None)]
    rows = db.session.scalars(
        select(RoomMember)
        .where(RoomMember.conversation_id == conversation.id)
        .order_by(RoomMember.id)
        .options(joinedload(RoomMember.user))  # one query, not one per member
    )
    found += [Member(m.user_id, m.user.name, m.role, m.last_seen_at, m.id) for m in rows]
    return found


def _check_role(role: str) -> str:
    if role not in JOIN_ROLES:
        raise ChatError(
            f"role must be one of: {', '.join(JOIN_ROLES)}.", 422, "invalid", {"fields": [{"field": "role"}]}
        )
    return role


def create_invite(conversation: Conversation, role: str = MEMBER) -> str:
    """A new invite link for the room (any earlier link stops working); the token is returned."""
    conversation.invite_role = _check_role(role)
    conversation.invite_token = secrets.token_urlsafe(24)
    db.session.commit()
    return conversation.invite_token


def end_invite(conversation: Conversation) -> None:
    """The invite link stops working; members stay."""
    conversation.invite_token = None
    db.session.commit()


def invited_conversation(token: str) -> Conversation:
    """The conversation an invite token opens; a 404 ChatError if the link was ended or never existed."""
    conversation = db.session.scalar(select(Conversation).where(Conversation.invite_token == token)) if token else None
    if conversation is None:
        raise ChatError("This invite link does not work: its owner may have ended it. Ask for a new one.", 404)
    return conversation


def join(token: str, user: User) -> Conversation:
    """Join the room of an invite link with its role (the owner and existing members just return)."""
    conversation = invited_conversation(token)
    if conversation.user_id == user.id:
        return conversation
    existing = db.session.scalar(
        select(RoomMember).where(RoomMember.conversation_id == conversation.id, RoomMember.user_id == user.id)
    )
    if existing is not None:
        return conversation
    limit = int(current_app.config["MAX_ROOM_MEMBERS"])
    count = 1 + len(conversation.members)
    if count >= limit:
        raise ChatError(
            f"This room is full: it has {count} people and MAX_ROOM_MEMBERS is {limit}. Ask its owner to make room.",
            409,
            "room_full",
            {"limit": limit},
        )
    db.session.add(RoomMember(conversation_id=conversation.id, user_id=user.id, role=conversation.invite_role))
    db.session.commit()
    publish(conversation.id, "members")
    return conversation


def member_row(conversation: Conversation, member_id: int) -> RoomMember:
    """A member row of this room; a 404 ChatError otherwise."""
    member = db.session.get(RoomMember, member_id)
    if member is None or member.conversation_id != conversation.id:
        raise ChatError("No such member in this conversation.", 404, "not_found")
    return member


def remove(conversation: Conversation, member: RoomMember) -> None:
    """Take someone out of the room: their pages and sockets are cut off within seconds."""
    user_id = member.user_id
    db.session.delete(member)
    db.session.commit()
    publish(conversation.id, "removed", user_id=user_id)
    publish(conversation.id, "members")


def seen(conversation_id: int, user_id: str) -> None:
    """Note that a member has the room open now (for the members list's "last seen")."""
    row = db.session.scalar(
        select(RoomMember).where(RoomMember.conversation_id == conversation_id, RoomMember.user_id == user_id)
    )
    if row is not None:
        row.last_seen_at = utcnow()
        db.session.commit()


def role_now(conversation_id: int, user_id: str) -> str | None:
    """The user's role in the conversation as stored now (None: no access any more)."""
    owner = db.session.scalar(select(Conversation.user_id).where(Conversation.id == conversation_id))
    if owner is None:
        return None
    if owner == user_id:
        return OWNER
    return db.session.scalar(
        select(RoomMember.role).where(RoomMember.conversation_id == conversation_id, RoomMember.user_id == user_id)
    )


class AccessCheck:
    """For an open stream: does its reader still have access? Asked on every update, it looks at the
    database at most every ``HEARTBEAT`` seconds (then hands the connection back), so a member removed
    meanwhile is cut off within that time."""

    def __init__(self, conversation_id: int, user_id: str | None) -> None:
        self.conversation_id, self.user_id = conversation_id, user_id
        self.checked = time.monotonic()

    def lost(self) -> bool:
        """True once the reader has no role in the conversation (removed, left, or it was deleted)."""
        if time.monotonic() - self.checked < HEARTBEAT:
            return False
        self.checked = time.monotonic()
        role = role_now(self.conversation_id, self.user_id) if self.user_id is not None else None
        db.session.close()
        return role is None


def is_removed(conversation_id: int, user_id: str) -> bool:
    """True if the conversation still exists and the user has no role in it any more (removed, or left);
    False while they are in it, and once it is deleted (that is not a removal)."""
    owner = db.session.scalar(select(Conversation.user_id).where(Conversation.id == conversation_id))
    return owner is not None and role_now(conversation_id, user_id) is None


def can(role: str | None, need: str) -> bool:
    """True if ``role`` is at least ``need``."""
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[need]


# -- events ----------------------------------------------------------------------------------------------
def publish(conversation_id: int, kind: str, origin: str | None = None, **data: object) -> None:
    """Tell every page and socket of the room (any process) that something happened.

    The page or socket it came from (``origin``, by default the request's ``g.room_page``) is named,
    so a page does not get back what its own response already shows.
    """
    origin = origin or (g.get("room_page") if has_app_context() else None)
    try:
        current_generator().broker.publish_room(
            conversation_id, {"kind": kind, "at": time.time(), "origin": origin, **data}
        )
    except Exception:  # a room event lost must never fail the action that caused it
        log.exception("could not publish a %s event for conversation %s", kind, conversation_id)


def answer_started(
    conversation: Conversation, answer_id: int, appended: bool = False, author_id: str | None = None
) -> None:
    """An answer began in a room: appended after a new message, or in a new branch (edit, retry, continue)."""
    if is_room(conversation):  # a conversation nobody shares has no room pages to tell
        publish(conversation.id, "answer", message_id=answer_id, appended=appended, author_id=author_id)


def path_changed(conversation: Conversation) -> None:
    """The visible path of a room changed (a version switch): every page shows the new one."""
    if is_room(conversation):
        publish(conversation.id, "path")


def typing(conversation_id: int, user: User, is_typing: bool = True, origin: str | None = None) -> None:
    """``user`` is typing (or stopped) in the room, on the page or socket ``origin``."""
    publish(conversation_id, "typing", origin, user_id=user.id, name=user.name, is_typing=is_typing)


# -- presence --------------------------------------------------------------------------------------------
def present(conversation_id: int, key: str, user: User | tuple[str, str], door: str = "page") -> None:
    """Mark a page or socket (``key``) as present, and tell the room."""
    touch(conversation_id, key, user, door)
    user_id, name = (user.id, user.name) if isinstance(user, User) else user
    publish(conversation_id, "presence", key, joined={"user_id": user_id, "name": name, "door": door})


def touch(conversation_id: int, key: str, user: User | tuple[str, str], door: str = "page") -> None:
    """Refresh the presence key (a heartbeat)."""
    user_id, name = (user.id, user.name) if isinstance(user, User) else user
    value = json.dumps({"user_id": user_id, "name": name, "door": door})
    current_generator().broker.presence_touch(conversation_id, key, value, PRESENCE_TTL)


def absent(conversation_id: int, key: str, user: User | tuple[str, str] | None = None) -> None:
    """The page or socket ``key`` left (closed, or its beacon arrived): tell the room."""
    if not current_generator().broker.presence_drop(conversation_id, key):
        return  # already gone (the page's beacon came first): told once
    user_id, name = (user.id, user.name) if isinstance(user, User) else (user or (None, None))
    publish(conversation_id, "presence", key, left={"user_id": user_id, "name": name})


def here(conversation_id: int) -> dict[str, str]:
    """Who is in the room now: user id -> display name (one entry per person, however many pages)."""
    people: dict[str, str] = {}
    for raw in current_generator().broker.presence(conversation_id):
        try:
            found = json.loads(raw)
            people[found["user_id"]] = found["name"]
        except (ValueError, KeyError, TypeError):
            continue
    return people


def names_line(names: list[str], suffix: str) -> str:
    """ "Ana", "Ana and Bo", "Ana, Bo and 1 other", "Ana, Bo and 3 others", then ``suffix``."""
    names = sorted(names, key=str.casefold)
    if not names:
        return ""
    if len(names) == 1:
        return f"{names[0]} {suffix}"
    if len(names) == 2:
        return f"{names[0]} and {names[1]} {suffix}"
    rest = len(names) - 2
    return f"{names[0]}, {names[1]} and {rest} other{'s' if rest > 1 else ''} {suffix}"


def presence_text(conversation_id: int, user_id: str) -> str:
    """ "Ana, Bo and 1 other here" (everyone but you), or "Only you here"."""
    others = [name for uid, name in here(conversation_id).items() if uid != user_id]
    return names_line(others, "here") if others else "Only you here"


def typing_text(typists: dict[str, str]) -> str:
    """ "Bo is typing…", "Ana and Bo are typing…"."""
    names = list(typists.values())
    if not names:
        return ""
    return names_line(names, "is typing…" if len(names) == 1 else "are typing…")


# -- following a room ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewMessages:
    """A message was sent and its answer started: show both at the end."""

    answer_id: int


@dataclass(frozen=True)
class PathChanged:
    """The visible path changed (edit, retry, continue, version switch): show it again."""


@dataclass(frozen=True)
class Presence:
    """Who is here changed."""

    text: str
    people: dict[str, str]


@dataclass(frozen=True)
class Typing:
    """Who is typing changed."""

    text: str


@dataclass(frozen=True)
class MembersChanged:
    """Someone joined, left or was removed: the members list changed."""


@dataclass(frozen=True)
class Joined:
    """Another page or socket (``key``) opened the room (for the WebSocket's ``user_joined``)."""

    user_id: str
    name: str
    key: str


@dataclass(frozen=True)
class Left:
    """A page or socket (``key``) closed (for the WebSocket's ``user_left``)."""

    user_id: str | None
    name: str | None
    key: str


@dataclass(frozen=True)
class Typed:
    """Someone typed, or stopped, on the page or socket ``key`` (for ``typing_indicator``)."""

    user_id: str
    name: str
    is_typing: bool
    key: str | None


@dataclass(frozen=True)
class Removed:
    """This follower's user has no access any more: the stream ends."""


RoomUpdate = (
    NewMessages
    | PathChanged
    | AnswerUpdate
    | AnswerText
    | AnswerDone
    | Presence
    | Typing
    | MembersChanged
    | Removed
    | Joined
    | Left
    | Typed
    | Ping
)


@dataclass
class _Follower:
    conversation_id: int
    user_id: str
    key: str
    queue: queue.Queue = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)
    answers: set[int] = field(default_factory=set)
    render: bool = True  # follow and render answers (a page), or not (a socket)


def follow_room(
    conversation_id: int,
    user: tuple[str, str],
    key: str,
    since: float,
    answer_after: dict[int, int] | None = None,
    door: str = "page",
    stop: threading.Event | None = None,
) -> Generator[RoomUpdate, None, None]:
    """Everything a page of the room must show from time ``since`` on (when it was rendered).

    ``user`` is (user id, display name); ``key`` names the page (its presence key, and the origin its
    own requests carry);
    ``answer_after`` gives, per answer streaming when the page was rendered, the text it showed;
    a socket (``door="ws"``) follows answers itself: none are rendered for it. Ends when the user
    loses access (Removed), when ``stop`` is set, or when the caller stops iterating.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the app itself, for threads
    broker = current_generator().broker
    user_id = user[0]
    follower = _Follower(conversation_id, user_id, key, render=door == "page")
    threading.Thread(target=_pump_room, args=(app, broker, follower, since), daemon=True, name="room-pump").start()
    present(conversation_id, key, user, door)
    seen(conversation_id, user_id)
    streaming = db.session.scalar(
        select(Message.id).where(Message.conversation_id == conversation_id, Message.status == STREAMING).limit(1)
    )
    db.session.close()
    if streaming is not None and follower.render:
        _follow_answer(app, follower, streaming, (answer_after or {}).get(streaming, 0))
    people: dict[str, str] | None = None
    typists: dict[str, tuple[str, float]] = {}
    last_beat = last_seen = time.monotonic()
    presence_due: float | None = last_beat  # when to look at who is here again (None: nothing changed)
    try:
        yield Ping()
        while stop is None or not stop.is_set():
            wait = 1.0 if presence_due is None else max(0.0, presence_due - time.monotonic())
            try:
                item = follower.queue.get(timeout=wait)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if item is not None:
                kind, value = item
                if kind == "room":
                    for update in _room_event(app, follower, value, typists, now):
                        yield update
                        if isinstance(update, Removed):
                            return
                    if value.get("kind") == "presence" and presence_due is None:
                        presence_due = now + PRESENCE_SETTLE  # one look for a burst of arrivals
                elif kind == "answer":
                    yield value
            if any(until < now for _name, until in typists.values()):
                for uid in [uid for uid, (_n, until) in typists.items() if until < now]:
                    del typists[uid]
                yield Typing(typing_text({uid: name for uid, (name, _u) in typists.items()}))
            if (presence_due is not None and now >= presence_due) or now - last_beat >= HEARTBEAT:
                presence_due = None
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    touch(conversation_id, key, user, door)
                    if role_now(conversation_id, user_id) is None:
                        yield Removed()
                        return
                    if now - last_seen >= SEEN_EVERY:
                        last_seen = now
                        seen(conversation_id, user_id)
                    db.session.close()
                    yield Ping()
                found = here(conversation_id)
                if found != people:
                    people = found
                    others = [name for uid, name in found.items() if uid != user_id]
                    yield Presence(names_line(others, "here") if others else "Only you here", found)
    finally:
        follower.closed.set()
        try:
            absent(conversation_id, key, user)
        except Exception:
            log.exception("could not drop the presence of a page of conversation %s", conversation_id)


def _room_event(
    app: object, follower: _Follower, event: dict, typists: dict[str, tuple[str, float]], now: float
) -> Iterator[RoomUpdate]:
    kind = event.get("kind")
    mine = event.get("origin") == follower.key
    if kind == "answer":
        message_id = int(event["message_id"])
        author = event.get("author_id")
        if author in typists:  # they sent what they typed
            del typists[author]
            yield Typing(typing_text({uid: name for uid, (name, _u) in typists.items()}))
        if not mine:
            yield NewMessages(message_id) if event.get("appended") else PathChanged()
        if follower.render:
            _follow_answer(app, follower, message_id, 0)
    elif kind == "path" and not mine:
        yield PathChanged()
    elif kind == "presence" and not mine:
        if joined := event.get("joined"):
            yield Joined(joined["user_id"], joined["name"], str(event.get("origin")))
        if (left := event.get("left")) is not None:
            yield Left(left.get("user_id"), left.get("name"), str(event.get("origin")))
    elif kind == "typing" and not mine:
        yield Typed(str(event["user_id"]), str(event.get("name")), bool(event.get("is_typing")), event.get("origin"))
    if kind == "typing" and event.get("user_id") != follower.user_id:  # never shown to the typist, in any tab
        if event.get("is_typing"):
            typists[str(event["user_id"])] = (str(event.get("name")), now + TYPING_FOR)
        else:
            typists.pop(str(event["user_id"]), None)
        yield Typing(typing_text({uid: name for uid, (name, _u) in typists.items()}))
    elif kind == "removed" and event.get("user_id") == follower.user_id:
        yield Removed()
    elif kind == "members":
        yield MembersChanged()


def _pump_room(app: object, broker: object, follower: _Follower, since: float) -> None:
    """Room events since ``since`` into the follower's queue, until it closes (a thread per page)."""
    cursor = None
    while not follower.closed.is_set():
        try:
            events, cursor = broker.read_room(follower.conversation_id, cursor, 1.0)  # type: ignore[attr-defined]
        except Exception:
            log.exception("reading the events of conversation %s failed", follower.conversation_id)
            time.sleep(1.0)
            continue
        for event in events:
            if float(event.get("at", 0)) > since:
                follower.queue.put(("room", event))


def _follow_answer(app: object, follower: _Follower, message_id: int, after: int) -> None:
    """Rendered updates of one answer into the follower's queue, in a thread of its own."""
    if message_id in follower.answers:
        return
    follower.answers.add(message_id)
    pump_answer(
        app,
        message_id,
        after,
        lambda update: follower.queue.put(("answer", update)),
        follower.closed,
        ended=lambda: follower.answers.discard(message_id),
    )
