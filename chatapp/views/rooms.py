"""Rooms on the page: the invite link, joining, members, and the room's one event stream per page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from flask import Blueprint, Response, g, redirect, render_template, request, stream_with_context, url_for
from markupsafe import escape

from .. import conversations, rooms
from ..errors import ChatError
from ..events import SSE_HEADERS, Ping, sse
from ..extensions import db
from ..identity import current_user
from ..models import MEMBER, OWNER, VIEWER, Conversation, Message
from ..rooms import (
    MembersChanged,
    NewMessages,
    PathChanged,
    Presence,
    Removed,
    RoomUpdate,
    Typing,
)
from ..streaming_markdown import AnswerDone, AnswerText, AnswerUpdate
from .responses import PAGE_MESSAGES, answer_fragment, room_view

bp = Blueprint("rooms", __name__)

PAGE_KEY = re.compile(r"[0-9a-f]{16}")


@bp.before_request
def _room_page() -> None:
    g.room_page = request.headers.get("X-Room-Page")


def _page_key(raw: str | None) -> str:
    if not raw or not PAGE_KEY.fullmatch(raw):
        raise ChatError("page must be the page key the conversation page gave out (16 hex digits).", 422)
    return raw


def _to_members(conversation_id: int):  # noqa: ANN202
    return redirect(url_for("chat.conversation", conversation_id=conversation_id, members=1, _anchor="members"), 303)


# -- invite link, joining, members -----------------------------------------------------------------------
@bp.post("/c/<int:conversation_id>/invite")
def invite(conversation_id: int):  # noqa: ANN201
    """Make a new invite link (the owner): people who open it join as members or viewers."""
    conversation = conversations.conversation_access(current_user().id, conversation_id, OWNER)
    rooms.create_invite(conversation, request.form.get("role", MEMBER))
    return _to_members(conversation.id)


@bp.post("/c/<int:conversation_id>/invite/end")
def end_invite(conversation_id: int):  # noqa: ANN201
    """End the invite link (the owner); members stay."""
    conversation = conversations.conversation_access(current_user().id, conversation_id, OWNER)
    rooms.end_invite(conversation)
    return _to_members(conversation.id)


@bp.post("/c/<int:conversation_id>/members/<int:member_id>/remove")
def remove(conversation_id: int, member_id: int):  # noqa: ANN201
    """Remove a member (the owner), or leave the room (the member themselves)."""
    me = current_user().id
    conversation = conversations.conversation_access(me, conversation_id, VIEWER)
    member = rooms.member_row(conversation, member_id)
    if member.user_id != me:
        conversations.require_role(conversations.role_in(conversation, me), OWNER)
    rooms.remove(conversation, member)
    if member.user_id == me:
        return redirect(url_for("chat.index"), 303)
    return _to_members(conversation.id)


@bp.get("/join/<token>")
def join(token: str):  # noqa: ANN201
    """The invite page: what the link opens, and a button to join (a GET changes nothing)."""
    conversation = rooms.invited_conversation(token)
    user = current_user()
    if conversations.role_in(conversation, user.id) is not None:
        return redirect(url_for("chat.conversation", conversation_id=conversation.id), 303)
    return render_template(
        "join.html",
        conversation=conversation,
        token=token,
        conversations=Conversation.for_sidebar(user.id),
        owner=conversation.owner.name,
    )


@bp.post("/join/<token>")
def join_post(token: str):  # noqa: ANN201
    """Join the room (a guest is made first if guests are on and nobody is signed in)."""
    conversation = rooms.join(token, current_user())
    return redirect(url_for("chat.conversation", conversation_id=conversation.id), 303)


# -- presence and typing ---------------------------------------------------------------------------------
@bp.post("/c/<int:conversation_id>/typing")
def typing(conversation_id: int):  # noqa: ANN201
    """The page reports typing in the message box (every few seconds while it lasts)."""
    user = current_user()
    conversations.conversation_access(user.id, conversation_id, MEMBER)
    rooms.typing(conversation_id, user, request.form.get("typing", "1") != "0")
    return "", 204


@bp.post("/c/<int:conversation_id>/leave")
def leave(conversation_id: int):  # noqa: ANN201
    """The page is closing (a beacon on ``pagehide``): it no longer counts as present."""
    user = current_user()
    conversations.conversation_access(user.id, conversation_id, VIEWER)
    rooms.absent(conversation_id, _page_key(request.form.get("page")), user)
    return "", 204


# -- the page's one event stream -------------------------------------------------------------------------
@bp.get("/c/<int:conversation_id>/events")
def events(conversation_id: int):  # noqa: ANN201
    """Everything the room's page must show, as SSE ``room`` events of fragments for HTMX to swap in."""
    user = current_user()
    conversations.conversation_access(user.id, conversation_id, VIEWER)
    key = _page_key(request.args.get("page"))
    since = request.args.get("since", type=float) or time.time()
    answer, after = request.args.get("answer", type=int), request.args.get("after", 0, type=int)
    identity = (user.id, user.name)  # loaded now: the user is detached once the session closes
    room_view(conversation_id)
    db.session.close()

    def stream() -> Iterator[str]:
        updates = rooms.follow_room(conversation_id, identity, key, since, {answer: after} if answer else None)
        try:
            for update in updates:
                if isinstance(update, Ping):
                    yield ": ping\n\n"
                    continue
                html = _fragment(conversation_id, update)
                db.session.close()
                if html:
                    yield sse(html, "room")
                if isinstance(update, Removed):
                    yield sse("closed", "closed")
                    return
        finally:
            updates.close()

    return Response(stream_with_context(stream()), headers=SSE_HEADERS)


def _fragment(conversation_id: int, update: RoomUpdate) -> str:
    """The HTML (out-of-band fragments) that shows ``update`` on the visitor's page."""
    if isinstance(update, AnswerUpdate | AnswerText):
        return answer_fragment(update)
    if isinstance(update, NewMessages):
        answer = db.session.get(Message, update.answer_id)
        question = db.session.get(Message, answer.parent_id) if answer and answer.parent_id else None
        if answer is None or question is None:
            return ""
        return render_template("partials/room_new.html", question=question, answer=answer)
    if isinstance(update, AnswerDone):
        message = db.session.get(Message, update.message_id)
        return render_template("partials/room_done.html", message=message) if message else ""
    if isinstance(update, PathChanged):
        conversation = db.session.get(Conversation, conversation_id)
        if conversation is None:
            return ""
        visible, earlier, later = conversation.visible_window(PAGE_MESSAGES)
        return render_template(
            "partials/room_path.html",
            conversation=conversation,
            visible=visible,
            earlier=earlier,
            later=later,
            streaming=conversation.streaming_message(),
        )
    if isinstance(update, Presence):
        return f'<p id="presence" class="presence" hx-swap-oob="true">{_escape(update.text)}</p>'
    if isinstance(update, Typing):
        return f'<p id="typing" class="typing-note" hx-swap-oob="true">{_escape(update.text)}</p>'
    if isinstance(update, MembersChanged):
        conversation = db.session.get(Conversation, conversation_id)
        if conversation is None:
            return ""
        return render_template(
            "partials/members.html",
            conversation=conversation,
            members=rooms.members(conversation),
            room=room_view(conversation_id),
            oob=True,
        )
    if isinstance(update, Removed):
        return render_template("partials/room_closed.html")
    return ""


def _escape(text: str) -> str:
    return str(escape(text))


bp.add_app_template_global(room_view, "room_view")
