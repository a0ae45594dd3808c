"""Responses that several views send alike (views never import each other: they share these)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Response, g, render_template, request, stream_with_context
from markupsafe import escape
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from .. import conversations, export, images, notes, presets, prices, rooms
from ..conversations import NOT_FOUND, meter, role_in
from ..errors import ChatError
from ..events import SSE_HEADERS, Done, NoteSaved, Status, Tick, resume_offset, sse
from ..extensions import db
from ..generation import current_generator
from ..identity import current_user, session_user
from ..models import ERROR, MEMBER, OWNER, Conversation, Image, Message, Note, utcnow
from ..streaming_markdown import AnswerText, AnswerUpdate, Rendered, Text, follow_rendered

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
    visitor = session_user()  # not current_user(): a share link's page is for visitors who may not chat here
    user_id = visitor.id if visitor else None
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


def answer_events(
    message_id: int,
    finished: Callable[[Message | None], str],
    with_notes: bool = False,
    access: rooms.AccessCheck | None = None,
) -> Response:
    """An answer's page stream (Server-Sent Events): its Markdown rendered as it grows, the text between
    renders, why no text came yet ("retrying"), then ``finished(message)``, the HTML that replaces it.
    ``with_notes``: the notes the answer saves go to the page's Notes panel as they come.

    ``access``: the reader's access, checked as the stream goes (a member removed from the room is cut
    off within ``rooms.HEARTBEAT`` seconds with a ``gone`` event).

    Resumes from ``Last-Event-ID`` or ``?after=``; a page that reconnects (``Last-Event-ID``, or
    ``?resumed=1`` from the page's own reconnect) may show text past its last render, so it gets a
    render before any more text.
    """
    last_event_id = request.headers.get("Last-Event-ID")
    after = resume_offset(last_event_id, request.args.get("after"))
    resumed = bool(last_event_id) or request.args.get("resumed") == "1"
    waiting = bool(request.args.get("waiting"))  # the page shows why no text came yet (e.g. "Retrying…")
    db.session.close()
    pending = f'<span id="pending-{message_id}" hx-swap-oob="innerHTML"></span>'

    def stream():  # noqa: ANN202
        nonlocal waiting
        for update in follow_rendered(message_id, after, resumed=resumed):
            if access and not isinstance(update, Done) and access.lost():
                yield sse(NOT_FOUND, "gone")
                return
            if isinstance(update, Tick):
                continue
            if isinstance(update, Text):
                # No id: a page that reconnects resumes from its last render.
                yield sse(str(escape(update.text)), "text")
            elif isinstance(update, Rendered):
                # One event per render: the tail, the blocks finished since appended out of band, and
                # the text shown since the last render cleared, so all change in the same swap.
                blocks = update.blocks and f'<div hx-swap-oob="beforeend:#blocks-{message_id}">{update.blocks}</div>'
                writing = ""
                if waiting:  # text at last: "Writing" again, in the same swap
                    state = render_template("partials/answer_state.html")
                    writing, waiting = f'<span hx-swap-oob="innerHTML:#state-{message_id}">{state}</span>', False
                yield sse(blocks + pending + (update.tail.strip() or " ") + writing, "tail", update.end)
            elif isinstance(update, Status):
                yield sse(render_template("partials/answer_state.html", status=update.state), "status")
                waiting = True
            elif isinstance(update, NoteSaved):  # into the Notes panel, out of band; never into the answer
                html = notes_html([update.note["id"]]) if with_notes else ""
                db.session.close()  # hand the connection back: the stream may stay open for minutes
                if html:
                    yield sse(html, "note")
            elif isinstance(update, Done):
                # With the answer's notes (the page skips those it has): one that ended before this
                # stream began sends nothing else.
                saved = notes_html(_assistant_notes(update.message)) if with_notes else ""
                yield sse((finished(update.message) or " ") + saved, "done")
            else:
                yield ": ping\n\n"

    return Response(stream_with_context(stream()), headers=SSE_HEADERS)


def answer_fragment(update: AnswerUpdate | AnswerText) -> str:
    """An answer's growth as out-of-band fragments, for a page whose one event stream carries it (a room's
    page, a live share link's page): the blocks finished since, the new tail and the text shown since the
    last render cleared, all in one swap; or the words between renders, as plain text after the tail."""
    if isinstance(update, AnswerText):
        return f'<span hx-swap-oob="beforeend:#pending-{update.message_id}">{escape(update.text)}</span>'
    rendered, message_id = update.rendered, update.message_id
    blocks = ""
    if update.whole:  # all its blocks: they replace what the page shows (e.g. an older render of it)
        blocks = f'<div hx-swap-oob="innerHTML:#blocks-{message_id}">{rendered.blocks}</div>'
    elif rendered.blocks:
        blocks = f'<div hx-swap-oob="beforeend:#blocks-{message_id}">{rendered.blocks}</div>'
    pending = f'<span hx-swap-oob="innerHTML:#pending-{message_id}"></span>'
    tail = f'<div hx-swap-oob="innerHTML:#message-{message_id} .tail">{rendered.tail.strip()}</div>'
    return blocks + pending + tail


def notes_html(note_ids: list[int]) -> str:
    """Saved notes for the page's stream: appended to the panel's list, and its count, out of band."""
    found = [note for note in (db.session.get(Note, i) for i in note_ids) if note is not None]  # not deleted since
    if not found:
        return ""
    items = "".join(render_template("partials/note.html", note=note) for note in found)
    counter = render_template("partials/notes_count.html", note_count=len(found[0].conversation.notes), oob=True)
    return f'<ol hx-swap-oob="beforeend:#notes-list">{items}</ol>{counter}'


def _assistant_notes(message: Message | None) -> list[int]:
    """The notes saved from an answer (one query: every stream of an ending answer asks)."""
    if message is None:
        return []
    return list(db.session.scalars(select(Note.id).where(Note.message_id == message.id).order_by(Note.id)))


def render_chat(
    conversation: Conversation | None,
    status: int = 200,
    before: int | None = None,
    after: int | None = None,
    around: int | None = None,
    leaf: int | None = None,
    **context: object,
) -> tuple[str, int]:
    """The whole page: sidebar, the latest messages of the visible path (or another part of it), composer.

    A refused (too long) last message goes back into the composer with its error, after any redirect.
    ``leaf``: show the branch down to that message instead of the visible path (read-only).
    """
    # The streaming answer first, then the messages: an answer that ends in between is shown ended with
    # one more refresh, never as still being written with no refresh to come (JS off).
    streaming = conversation.streaming_message() if conversation else None
    visible: list = []
    earlier = later = 0
    if conversation:
        editing = context.get("editing")  # the message being edited must be among those shown
        around = around or (editing if isinstance(editing, int) else None)
        visible, earlier, later = conversation.visible_window(PAGE_MESSAGES, before, after, around, leaf)
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
        reading_leaf=leaf,
        presets=presets.list_presets(current_user().id) if not conversation else [],
        meter=meter(conversation, str(context.get("draft") or ""), context.get("starting")),  # type: ignore[arg-type]
        total_cost=prices.conversation_cost(conversation.id) if conversation else None,
        **room_context(conversation, streaming),
        **{"notes": notes.list_notes(conversation) if conversation else [], **context},
    )
    return html, status


def render_notes(conversation: Conversation, status: int = 200, **context: object) -> tuple[str, int]:
    """The Notes panel alone, open (HTMX): after adding a note, or saving a message to notes."""
    html = render_template(
        "partials/notes.html",
        conversation=conversation,
        notes=notes.list_notes(conversation),
        notes_open=True,
        **context,
    )
    return html, status


def render_meter(conversation: Conversation | None, draft: str, starting: dict | None = None) -> str:
    """The composer's token meter for ``draft`` (and the conversation's cost so far); ``starting``: a new
    chat's settings."""
    return render_template(
        "partials/meter.html",
        conversation=conversation,
        meter=meter(conversation, draft, starting),
        total_cost=prices.conversation_cost(conversation.id) if conversation else None,
    )


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


def export_download(user_id: str | None, conversation_id: int | None, fmt: str) -> BaseResponse:
    """An export as a download, streamed: one conversation (``conversation_id``) or all of the user's.

    All conversations in Markdown or HTML come as a zip (a file each, with the images).
    """
    fmt = export.parse_format(fmt)
    if conversation_id is not None:
        conversation = conversations.owned_conversation(user_id, conversation_id)
        ids, title = [conversation.id], conversation.title
    else:
        ids, title = (export.conversation_ids(user_id) if user_id else []), f"chatapp-export-{utcnow():%Y-%m-%d}"
        fmt = "zip" if fmt in ("markdown", "html") else fmt
    body: Iterator[str] | Iterator[bytes]
    if fmt == "json":
        body = export.json_chunks(ids)
    elif fmt == "zip":
        body = export.zip_chunks(ids)
    elif fmt == "markdown":
        body = iter([export.markdown(conversation)])
    else:
        body = iter([export.html(conversation)])
    response = Response(stream_with_context(body), mimetype=export.MIMETYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename(title, fmt)}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.no_store = True
    return response
