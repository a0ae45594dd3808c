"""WebSocket API at ``/api/v1/ws``: JSON messages with request and conversation ids.

Several requests may run at once on one socket; every chunk carries its request id, message id and
offset, and is sent by the follower of that one message, so chunks never mix. Subscribers of a
conversation also get the chunks of answers started elsewhere (the page, REST, another socket).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections import defaultdict
from typing import Any

from flask import Blueprint, Flask, current_app, g
from pydantic import ValidationError
from simple_websocket import ConnectionClosed
from sqlalchemy import select

from .. import conversations, rooms, schemas
from ..blocking import take_turn
from ..conversations import NOT_FOUND
from ..errors import API_CODES, ChatError
from ..events import Delta, Done, NoteSaved, Status, follow
from ..extensions import db, sock
from ..identity import require_bearer
from ..models import ERROR, MEMBER, STREAMING, VIEWER, ApiToken, Conversation, Message, User, siblings_of_each

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
bp.before_request(require_bearer)  # the same bearer token as the REST API (header or ?token=)

WATCH_EVERY = 0.3  # seconds between looks for new answers in a subscribed conversation
RECHECK_EVERY = 2.0  # seconds between checks that the token is still valid (revoked, user disabled)
CLOSE_UNAUTHORIZED = 1008  # close code: the token was revoked or its user disabled
CLOSE_REMOVED = 4403  # close code: the socket's user was removed from a conversation it had open
NO_LONGER_IN = "You are no longer in this conversation."
# conversation id -> open connections subscribed to it (this process)
SUBSCRIBERS: dict[int, set[Connection]] = defaultdict(set)
SUBSCRIBERS_LOCK = threading.Lock()


class Connection:
    """One client socket."""

    def __init__(self, ws: Any, user_id: str, token: str, app: Flask) -> None:
        self.ws = ws
        self.user_id = user_id
        self.token = token
        self.app = app
        self.lock = threading.Lock()
        self.following: set[int] = set()  # message ids this socket already streams
        self.subscriptions: set[int] = set()
        self.room_stops: dict[int, threading.Event] = {}
        self.key = secrets.token_hex(8)  # this socket's presence key in the rooms it subscribes to
        self.open = True

    def send(self, kind: str, **data: Any) -> None:
        """Send one JSON message (from any thread)."""
        with self.lock:
            self._send(kind, data)

    def _send(self, kind: str, data: dict) -> None:
        if self.open:
            try:
                self.ws.send(json.dumps({"type": kind, **data}))
            except (ConnectionClosed, OSError):  # closed by the client, or its socket already gone
                self.open = False

    def close(self, code: int, reason: str, last: tuple[str, dict] | None = None) -> None:
        """Send ``last`` (a message type and its fields), then close the socket with ``code`` and
        ``reason``, from any thread: nothing is sent after it, and it is done once."""
        with self.lock:
            if last is not None:
                self._send(*last)
            if not self.open:
                return
            self.open = False
            with contextlib.suppress(ConnectionClosed, OSError):  # the client closed it first
                self.ws.close(reason=code, message=reason)

    def removed(self, conversation_id: int) -> None:
        """The user lost access to the conversation: say so, then close the socket, so no answer it
        followed there goes on (room events and the answers' own access checks both land here)."""
        told = {"conversation_id": conversation_id, "code": "removed", "message": NO_LONGER_IN}
        self.close(CLOSE_REMOVED, f"removed from conversation {conversation_id}", ("error", told))

    def run(self) -> None:
        """Read and answer client messages until the socket closes or its token stops being valid."""
        self.send("connection_established", user_id=self.user_id)
        checked = time.monotonic()
        try:
            while self.open:
                raw = self.ws.receive(timeout=RECHECK_EVERY)
                if time.monotonic() - checked >= RECHECK_EVERY or raw is None:
                    checked = time.monotonic()
                    if not self.token_still_valid():
                        told = {"code": "unauthorized", "message": "This token was revoked or its user disabled."}
                        self.close(CLOSE_UNAUTHORIZED, "unauthorized", ("error", told))
                        break
                if raw is not None:
                    self.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self.open = False
            with self.app.app_context():
                for conversation_id in list(self.subscriptions):
                    self.unsubscribe(conversation_id)

    def token_still_valid(self) -> bool:
        """True while the token exists and belongs to this socket's user (revoking or disabling ends it)."""
        with self.app.app_context():
            try:
                return ApiToken.user_for(self.token) == self.user_id
            finally:
                db.session.remove()

    def handle(self, raw: str | bytes) -> None:
        """Dispatch one client message; problems become ``error`` messages, never a closed socket."""
        try:
            message = json.loads(raw)
        except ValueError:
            self.send("error", code="invalid_json", message="That was not valid JSON.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.send("error", code="invalid_message", message='Send an object with a "type" field.')
            return
        handler = HANDLERS.get(message["type"])
        request_id = message.get("request_id")
        if handler is None:
            known = ", ".join(sorted(HANDLERS))
            self.send(
                "error", request_id=request_id, code="unknown_type", message=f"Unknown type; use one of: {known}."
            )
            return
        take_turn()  # like an HTTP write: a burst of messages from many sockets does not run in one turn
        with self.app.app_context():
            try:
                handler(self, message)
            except ChatError as exc:
                db.session.rollback()
                code = exc.code or API_CODES.get(exc.status, "error")
                self.send("error", request_id=request_id, code=code, message=exc.message, details=exc.details)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                self.send("error", request_id=request_id, code="invalid", message=f"Invalid fields: {problems}")
            except Exception:
                log.exception("WebSocket message %r failed", message.get("type"))
                db.session.rollback()
                self.send("error", request_id=request_id, code="internal", message="The server could not do that.")
            finally:
                db.session.remove()

    # -- following answers ---------------------------------------------------------------------------
    def follow(self, message_id: int, request_id: Any, conversation_id: int) -> None:
        """Stream one answer's chunks and its end to this socket, in a thread of its own."""
        if message_id in self.following:
            return
        self.following.add(message_id)
        threading.Thread(target=self._follow, args=(message_id, request_id, conversation_id), daemon=True).start()

    def _follow(self, message_id: int, request_id: Any, conversation_id: int) -> None:
        ids = {"request_id": request_id, "conversation_id": conversation_id}
        checked = time.monotonic()
        with self.app.app_context():
            try:
                # Ticks when quiet: the access check runs even while the model server pauses.
                for update in follow(message_id, tick=rooms.HEARTBEAT):
                    if not self.open or (request_id is None and conversation_id not in self.subscriptions):
                        return  # closed, or unsubscribed from the conversation this answer was followed for
                    if time.monotonic() - checked >= rooms.HEARTBEAT or isinstance(update, Done):
                        checked = time.monotonic()  # a member removed meanwhile gets nothing more
                        if self.is_removed(conversation_id, keep=isinstance(update, Done)):
                            self.removed(conversation_id)
                            return
                    if isinstance(update, Delta):
                        self.send("chunk", **ids, message_id=message_id, seq=update.end, content=update.text)
                    elif isinstance(update, Status):  # e.g. retrying the model server
                        status = schemas.StreamStatus(message_id=message_id, **update.state).model_dump(mode="json")
                        self.send("status", **ids, **status)
                    elif isinstance(update, NoteSaved):  # the assistant saved a note: its own message type
                        self.send("note", **ids, message_id=message_id, note=update.note)
                    elif isinstance(update, Done):
                        message = update.message
                        if message is None:  # deleted while it was being written
                            self.send("error", request_id=request_id, code="not_found", message=NOT_FOUND)
                            return
                        if message.status == ERROR:
                            self.send("error", request_id=request_id, code="generation_failed", message=message.error)
                        self.send("done", **ids, message=schemas.MessageOut.from_message(message))
            finally:
                db.session.remove()
                self.following.discard(message_id)

    def is_removed(self, conversation_id: int, keep: bool = False) -> bool:
        """True once the socket's user was removed from the conversation (a deleted one ends its answers
        with ``not_found`` instead); ``keep``: leave the session open (a loaded final message must not be
        detached)."""
        removed = rooms.is_removed(conversation_id, self.user_id)
        if not keep:
            db.session.close()
        return removed

    def watch(self, conversation_id: int) -> None:
        """While subscribed, start following every answer that begins in the conversation."""
        with self.app.app_context():
            try:
                while self.open and conversation_id in self.subscriptions:
                    query = select(Message.id).where(
                        Message.conversation_id == conversation_id, Message.status == STREAMING
                    )
                    for message_id in db.session.scalars(query):
                        self.follow(message_id, None, conversation_id)
                    db.session.close()
                    time.sleep(WATCH_EVERY)
            finally:
                db.session.remove()

    def unsubscribe(self, conversation_id: int) -> None:
        self.subscriptions.discard(conversation_id)
        with SUBSCRIBERS_LOCK:
            SUBSCRIBERS[conversation_id].discard(self)
        stop = self.room_stops.pop(conversation_id, None)
        if stop is not None:
            stop.set()  # its room follower ends within a second, telling the room this socket left

    def room(self, conversation_id: int, identity: tuple[str, str], stop: threading.Event) -> None:
        """Tell this socket who joins, leaves and types in the room (pages and sockets, any process);
        a removed member is told, then the socket closes (``CLOSE_REMOVED``)."""
        ids = {"conversation_id": conversation_id}
        people: dict[str, str] = {}  # who was here at the last look
        told_left: dict[str | None, float] = {}  # user id -> when a user_left was sent for them
        with self.app.app_context():
            updates = rooms.follow_room(conversation_id, identity, self.key, time.time(), door="ws", stop=stop)
            try:
                for update in updates:
                    if not self.open:
                        return
                    if isinstance(update, rooms.Joined):
                        self.send("user_joined", **ids, user_id=update.user_id, name=update.name)
                    elif isinstance(update, rooms.Left):
                        told_left[update.user_id] = time.monotonic()
                        self.send("user_left", **ids, user_id=update.user_id, name=update.name)
                    elif isinstance(update, rooms.Presence):
                        # A page or socket whose connection just died is gone once its presence key expires.
                        for user_id, name in people.items():
                            recent = time.monotonic() - told_left.get(user_id, float("-inf")) < rooms.PRESENCE_TTL * 2
                            if user_id not in update.people and user_id != self.user_id and not recent:
                                told_left[user_id] = time.monotonic()
                                self.send("user_left", **ids, user_id=user_id, name=name)
                        people = dict(update.people)
                    elif isinstance(update, rooms.Typed):
                        typing = {"user_id": update.user_id, "name": update.name, "is_typing": update.is_typing}
                        self.send("typing_indicator", **ids, **typing)
                    elif isinstance(update, rooms.Removed):
                        self.subscriptions.discard(conversation_id)
                        if self.is_removed(conversation_id):
                            self.removed(conversation_id)
                        else:  # deleted: said once; the socket stays for the user's other conversations
                            self.send("error", **ids, code="removed", message=NO_LONGER_IN)
                        return
            except Exception:
                log.exception("following the room of conversation %s failed", conversation_id)
            finally:
                updates.close()
                db.session.remove()


def require(message: dict, *fields: str) -> None:
    """ChatError naming the missing fields."""
    missing = [f for f in fields if f not in message]
    if missing:
        raise ChatError(f"Missing field(s): {', '.join(missing)}.", 422, "missing_field")


def own(connection: Connection, conversation_id: Any, need: str = VIEWER) -> Conversation:
    if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
        raise ChatError("conversation_id must be a number.", 422, "invalid_field")
    return conversations.conversation_access(connection.user_id, conversation_id, need)


def on_send_message(connection: Connection, message: dict) -> None:
    require(message, "request_id", "conversation_id", "content")
    data = schemas.MessageCreate.model_validate({k: message[k] for k in ("content", "parent_id") if k in message})
    if message["conversation_id"] is None:
        user = db.session.get(User, connection.user_id)
        if user is None:
            raise ChatError("This token's identity no longer exists.", 401, "unauthorized")
        conversation, sent = conversations.start_conversation(user, data.content)
    else:
        conversation = own(connection, message["conversation_id"], MEMBER)
        sent = conversations.send(conversation, data.content, parent_id=data.parent_id, by=connection.user_id)
    ids = {"request_id": message["request_id"], "conversation_id": conversation.id}
    created = [sent.user_message, *([sent.answer] if sent.answer else [])]
    for made, position in zip(created, siblings_of_each(created), strict=True):  # their positions in one query
        connection.send("message_created", **ids, message=schemas.MessageOut.from_message(made, position=position))
    if sent.answer is None:
        raise ChatError(sent.user_message.error or "", 422, "message_too_long")
    connection.follow(sent.answer.id, message["request_id"], conversation.id)


def on_stop(connection: Connection, message: dict) -> None:
    require(message, "message_id")
    message_id = message["message_id"]
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatError("message_id must be a number.", 422, "invalid_field")
    conversations.stop(conversations.message_access(connection.user_id, message_id, MEMBER))


def on_subscribe(connection: Connection, message: dict) -> None:
    require(message, "conversation_id")
    conversation_id = own(connection, message["conversation_id"]).id
    if conversation_id in connection.subscriptions:
        return
    user = db.session.get(User, connection.user_id)
    connection.subscriptions.add(conversation_id)
    with SUBSCRIBERS_LOCK:
        SUBSCRIBERS[conversation_id].add(connection)
    stop = connection.room_stops[conversation_id] = threading.Event()
    identity = (connection.user_id, user.name if user else "")
    threading.Thread(target=connection.room, args=(conversation_id, identity, stop), daemon=True).start()
    threading.Thread(target=connection.watch, args=(conversation_id,), daemon=True).start()


def on_unsubscribe(connection: Connection, message: dict) -> None:
    require(message, "conversation_id")
    connection.unsubscribe(own(connection, message["conversation_id"]).id)


def on_typing(connection: Connection, message: dict) -> None:
    require(message, "conversation_id", "is_typing")
    conversation = own(connection, message["conversation_id"], MEMBER)
    user = db.session.get(User, connection.user_id)
    if user is not None:  # to every page and socket of the room, in any process
        rooms.typing(conversation.id, user, bool(message["is_typing"]), origin=connection.key)


def on_ping(connection: Connection, message: dict) -> None:
    connection.send("pong", request_id=message.get("request_id"))


HANDLERS = {
    "send_message": on_send_message,
    "stop": on_stop,
    "subscribe": on_subscribe,
    "unsubscribe": on_unsubscribe,
    "typing": on_typing,
    "ping": on_ping,
}


@sock.route("/api/v1/ws", bp=bp)
def socket(ws: Any) -> None:
    """The WebSocket endpoint (bearer token in the Authorization header or ``?token=``)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the app itself, for threads
    Connection(ws, g.api_user_id, g.api_token, app).run()
