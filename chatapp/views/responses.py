"""Responses that several views send alike (views never import each other: they share these)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, render_template, request, stream_with_context
from werkzeug.wrappers import Response as BaseResponse

from .. import conversations, export, images
from ..conversations import NOT_FOUND
from ..errors import ChatError
from ..generation import current_generator
from ..identity import current_user
from ..models import ERROR, Conversation, Image, utcnow

PAGE_MESSAGES = 50  # messages of a conversation shown at once


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
        conversations=Conversation.for_user(current_user().id),
        visible=visible,
        earlier=earlier,
        later=later,
        streaming=streaming,
        provider=current_generator().provider,
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
