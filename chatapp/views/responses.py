"""Responses that several views send alike (views never import each other: they share these)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from flask import Response, g, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from .. import images, rooms
from ..conversations import NOT_FOUND, role_in
from ..errors import ChatError
from ..extensions import db
from ..generation import current_generator
from ..identity import current_user
from ..models import ERROR, MEMBER, OWNER, Conversation, Image

PAGE_MESSAGES = 50  # messages of a conversation shown at once


@dataclass(frozen=True)
class RoomView:
    """How the visitor sees a conversation: their role, and whether it is shared (a room)."""

    user_id: str | None
    role: str | None
    is_room: bool

    @property
    def can_send(self) -> bool:
        """Members and the owner send, edit their own messages, retry and stop."""
        return rooms.can(self.role, MEMBER)

    @property
    def is_owner(self) -> bool:
        """The owner manages the room."""
        return self.role == OWNER


def room_view(conversation_id: int | None) -> RoomView:
    """The visitor's view of a conversation (once per request and conversation)."""
    user_id = current_user().id
    if conversation_id is None:
        return RoomView(user_id, OWNER, False)
    cache = g.setdefault("room_views", {})
    if conversation_id not in cache:
        conversation = db.session.get(Conversation, conversation_id)
        role = role_in(conversation, user_id) if conversation else None
        # Only people in the room get its stream (a read-only share link's visitor has no role here).
        shared = bool(conversation and role is not None and rooms.is_room(conversation))
        cache[conversation_id] = RoomView(user_id, role, shared)
    return cache[conversation_id]


def room_context(conversation: Conversation | None, streaming: object = None) -> dict:
    """What the page shows of a room: members, presence, and its one event stream's address."""
    if conversation is None:
        return {}
    view = room_view(conversation.id)
    if not view.is_room:
        return {"room": view}
    after = {"answer": streaming.id, "after": len(streaming.content)} if streaming is not None else {}  # type: ignore[attr-defined]
    return {
        "room": view,
        "members": rooms.members(conversation),
        "presence": rooms.presence_text(conversation.id, current_user().id),
        "room_page": secrets.token_hex(8),
        "room_since": f"{time.time():.3f}",
        "room_after": after,
    }


def image_response(image: Image) -> BaseResponse:
    """An attached image's bytes, cached privately (the page and the API serve the same)."""
    try:
        data = images.load(image)
    except images.storage.Missing:
        raise ChatError(NOT_FOUND, 404, "not_found") from None  # e.g. a local file on a disk wiped by a deploy
    response = Response(data, mimetype=image.mime)
    response.cache_control.private = True  # for its owner only: no shared caches
    response.cache_control.max_age = 86400
    response.set_etag(image.filename)  # a random name for bytes that never change
    return response.make_conditional(request)


def render_chat(
    conversation: Conversation | None,
    status: int = 200,
    before: int | None = None,
    after: int | None = None,
    around: int | None = None,
    **context: object,
) -> tuple[str, int]:
    """The whole page: sidebar, the latest messages of the visible path (or another part of it), composer.

    A refused (too long) last message goes back into the composer with its error, after any redirect.
    """
    # The streaming answer first, then the messages: an answer that ends in between is shown ended with
    # one more refresh, never as still being written with no refresh to come (JS off).
    streaming = conversation.streaming_message() if conversation else None
    visible: list = []
    earlier = later = 0
    if conversation:
        editing = context.get("editing")  # the message being edited must be among those shown
        around = around or (editing if isinstance(editing, int) else None)
        visible, earlier, later = conversation.visible_window(PAGE_MESSAGES, before, after, around)
    last = visible[-1][0] if visible and not later else None
    if last is not None and last.role == "user" and last.status == ERROR:
        context.setdefault("draft", last.content)
        context.setdefault("composer_error", last.error)
    html = render_template(
        "chat.html",
        conversation=conversation,
        conversations=Conversation.for_sidebar(current_user().id),
        visible=visible,
        earlier=earlier,
        later=later,
        streaming=streaming,
        provider=current_generator().provider,
        **room_context(conversation, streaming),
        **context,
    )
    return html, status


def render_branch(conversation: Conversation) -> str:
    """The message list after the visible branch changed (HTMX), with the composer's button."""
    visible, earlier, later = conversation.visible_window(PAGE_MESSAGES)
    return render_template(
        "partials/branch.html",
        conversation=conversation,
        visible=visible,
        earlier=earlier,
        later=later,
        streaming=conversation.streaming_message(),
    )
