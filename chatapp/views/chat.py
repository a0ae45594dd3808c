"""The chat pages: every action is a plain form; HTMX requests get just the fragments."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from .. import conversations
from ..conversations import ChatError
from ..errors import wants_fragment
from ..events import SSE_HEADERS, Done, resume_offset, sse
from ..extensions import db
from ..identity import current_user
from ..limits import uploads
from ..models import Conversation, Message
from ..streaming_markdown import Rendered, follow_rendered
from .responses import PAGE_MESSAGES, image_response, render_branch, render_chat

bp = Blueprint("chat", __name__)


@bp.after_request
def _vary(response: Response) -> Response:
    response.vary.add("HX-Request")
    return response


def _conversation_or_404(conversation_id: int) -> Conversation:
    return conversations.owned_conversation(current_user().id, conversation_id)


def _message_or_404(message_id: int) -> Message:
    return conversations.owned_message(current_user().id, message_id)


def _to_message(message: Message):  # noqa: ANN202
    """Redirect (303, after a POST) to the conversation, scrolled to ``message``."""
    return redirect(
        url_for(".conversation", conversation_id=message.conversation_id, _anchor=f"message-{message.id}"), 303
    )


@bp.get("/")
def index():  # noqa: ANN201
    """A new, empty chat; ``?prompt=`` puts an example prompt in the composer (without JS too);
    ``?folder=<id>`` starts it in that folder, ``?temporary=1`` as a temporary chat."""
    user = current_user()
    conversations.discard_temporary(user)  # starting another chat ends a temporary one
    folder_id = request.args.get("folder", type=int)
    folder = conversations.owned_folder(user.id, folder_id) if folder_id else None
    temporary = request.args.get("temporary") == "1"
    return render_chat(None, draft=request.args.get("prompt", ""), folder=folder, temporary=temporary)


@bp.post("/conversations")
@uploads("images")
def create():  # noqa: ANN201
    """Start a conversation with its first message."""
    content = request.form.get("content", "")
    folder = request.form.get("folder_id", "")
    if folder and not (folder.isascii() and folder.isdigit() and len(folder) <= 18):
        raise ChatError("folder_id must be one of your folders.", 422, "invalid")
    conversation, sent = conversations.start_conversation(
        current_user(),
        content,
        _uploaded_images(),
        folder_id=int(folder) if folder else None,
        temporary=request.form.get("temporary") == "1",
    )
    _describe_images(sent.user_message)
    if sent.answer is None:  # refused (too long): the conversation's page puts it back in the composer
        return redirect(url_for(".conversation", conversation_id=conversation.id, _anchor="composer"), 303)
    return _to_message(sent.answer)


@bp.get("/c/<int:conversation_id>")
def conversation(conversation_id: int):  # noqa: ANN201
    """One conversation at its latest messages; ``?before=``, ``?after=`` or ``?around=<message id>``
    show another part (HTMX: just the messages before or after, loaded in place). ``?leaf=<message id>``
    (a search result): that message and those around it on its own branch, read-only, without changing
    the visible path. For browsers without JS: ``?edit=<id>`` shows that message as an edit form,
    ``?rename=1`` the title as a form, ``?refresh=N`` counts self-refreshes, ``?hold=1`` stops them."""
    found = _conversation_or_404(conversation_id)
    conversations.discard_temporary(current_user(), keep=found.id)
    before, after, around = (request.args.get(name, type=int) for name in ("before", "after", "around"))
    leaf = request.args.get("leaf", type=int)
    branch = conversations.branch_of(found, leaf) if leaf else None
    around = around or leaf
    if wants_fragment() and (before or after):
        visible, earlier, later = found.visible_window(PAGE_MESSAGES, before, after, leaf=branch)
        edges = {"earlier": earlier, "later": None} if before else {"earlier": 0, "later": later}
        return render_template(
            "partials/messages.html", conversation=found, visible=visible, reading_leaf=branch, **edges
        )
    return render_chat(
        found,
        before=before,
        after=after,
        around=around,
        leaf=branch,
        reading=leaf if branch else None,
        editing=request.args.get("edit", type=int),
        renaming=bool(request.args.get("rename")),
        refresh=max(request.args.get("refresh", 0, type=int), 0),
        hold=bool(request.args.get("hold")),
    )


@bp.post("/c/<int:conversation_id>/messages")
@uploads("images")
def send(conversation_id: int):  # noqa: ANN201
    """Send a message; the answer streams in the background."""
    conversation = _conversation_or_404(conversation_id)
    sent = conversations.send(conversation, request.form.get("content", ""), _uploaded_images())
    _describe_images(sent.user_message)
    status = 422 if sent.answer is None else 200
    if wants_fragment():
        conversations_list = Conversation.for_user(current_user().id)
        html = render_template(
            "partials/sent.html", sent=sent, conversation=conversation, conversations=conversations_list
        )
        return html, status
    if sent.answer is None:  # refused (too long): the conversation's page puts it back in the composer
        return redirect(url_for(".conversation", conversation_id=conversation.id, _anchor="composer"), 303)
    return _to_message(sent.answer)


def _describe_images(message: Message) -> None:
    """Alt text for the message's new images: the descriptions given, else the uploads' file names."""
    names = [upload.filename for upload in request.files.getlist("images") if upload.filename]
    if not names:
        return
    descriptions = request.form.getlist("image_alt")
    for index, image in enumerate(message.images):
        given = " ".join(descriptions[index].split()) if index < len(descriptions) else ""
        name = names[index] if index < len(names) else ""
        fallback = " ".join("".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable()).split())
        image.alt = (given or fallback)[:300] or None
    db.session.commit()


def _uploaded_images() -> list[bytes]:
    """The files of the composer's image field (an empty field sends one nameless part: skipped)."""
    images = []
    for upload in request.files.getlist("images"):
        if upload.filename:
            with upload.stream:
                images.append(upload.read())
    return images


@bp.get("/images/<int:image_id>")
def image(image_id: int):  # noqa: ANN201
    """An attached image, for its owner only."""
    return image_response(conversations.owned_image(current_user().id, image_id))


@bp.get("/messages/<int:message_id>")
def message(message_id: int):  # noqa: ANN201
    """One message as a fragment (HTMX: e.g. to cancel an edit), else its place in the conversation."""
    message = _message_or_404(message_id)
    if wants_fragment():
        return render_template("partials/message.html", message=message)
    return redirect(url_for(".conversation", conversation_id=message.conversation_id, _anchor=f"message-{message.id}"))


@bp.get("/messages/<int:message_id>/edit")
def edit_form(message_id: int):  # noqa: ANN201
    """The edit form in place of the message (HTMX), or the page with it inline."""
    message = _message_or_404(message_id)
    if wants_fragment():
        return render_template("partials/edit_form.html", message=message)
    return redirect(
        url_for(
            ".conversation", conversation_id=message.conversation_id, edit=message.id, _anchor=f"message-{message.id}"
        )
    )


@bp.post("/messages/<int:message_id>/edit")
def edit(message_id: int):  # noqa: ANN201
    """Save an edited version of a message beside the original, and answer it."""
    message = _message_or_404(message_id)
    content = request.form.get("content", "")
    try:
        answer = conversations.edit(message, content)
    except ChatError as exc:
        if exc.status != 422:
            raise
        if wants_fragment():
            html = render_template("partials/edit_form.html", message=message, draft=content, error=exc.message)
            return html, 422, {"HX-Retarget": f"#message-{message.id}", "HX-Reswap": "outerHTML"}
        return render_chat(message.conversation, 422, editing=message.id, edit_draft=content, edit_error=exc.message)
    if wants_fragment():
        return render_branch(answer.conversation)
    return _to_message(answer)


@bp.post("/messages/<int:message_id>/retry")
def retry(message_id: int):  # noqa: ANN201
    """Write a new answer beside this one (the old one is kept as a sibling)."""
    answer = conversations.retry(_message_or_404(message_id))
    return render_branch(answer.conversation) if wants_fragment() else _to_message(answer)


@bp.post("/messages/<int:message_id>/continue")
def continue_(message_id: int):  # noqa: ANN201
    """Let a stopped or interrupted answer go on, in the same message."""
    answer = conversations.continue_answer(_message_or_404(message_id))
    return render_branch(answer.conversation) if wants_fragment() else _to_message(answer)


@bp.post("/messages/<int:message_id>/show")
def show(message_id: int):  # noqa: ANN201
    """Switch to this version of a message and the latest path beneath it."""
    message = _message_or_404(message_id)
    conversations.show(message)
    return render_branch(message.conversation) if wants_fragment() else _to_message(message)


@bp.post("/messages/<int:message_id>/stop")
def stop(message_id: int):  # noqa: ANN201
    """Stop an answer; it keeps exactly the text shown so far."""
    message = conversations.stop(_message_or_404(message_id))
    if wants_fragment():
        return render_template("partials/finished.html", message=message)
    return redirect(url_for(".conversation", conversation_id=message.conversation_id), 303)


@bp.get("/messages/<int:message_id>/events")
def events(message_id: int):  # noqa: ANN201
    """Server-Sent Events for an answer: its Markdown rendered as it grows, then the rendered message."""
    _message_or_404(message_id)
    after = resume_offset(request.headers.get("Last-Event-ID"), request.args.get("after"))
    db.session.close()

    def stream():  # noqa: ANN202
        for update in follow_rendered(message_id, after):
            if isinstance(update, Rendered):
                # One event per update: the tail, and the blocks finished since appended out of band,
                # so both change in the same swap. Never empty data: browsers drop such events.
                blocks = update.blocks and f'<div hx-swap-oob="beforeend:#blocks-{message_id}">{update.blocks}</div>'
                yield sse(blocks + (update.tail or " "), "tail", update.end)
            elif isinstance(update, Done):
                yield sse(render_template("partials/finished.html", message=update.message), "done")
            else:
                yield ": ping\n\n"

    return Response(stream_with_context(stream()), headers=SSE_HEADERS)


@bp.post("/c/<int:conversation_id>/rename")
def rename(conversation_id: int):  # noqa: ANN201
    """Give the conversation a new title."""
    conversation = _conversation_or_404(conversation_id)
    conversations.rename(conversation, request.form.get("title", ""))
    return redirect(url_for(".conversation", conversation_id=conversation.id), 303)


@bp.get("/c/<int:conversation_id>/delete")
def confirm_delete(conversation_id: int):  # noqa: ANN201
    """Ask before deleting (works without JavaScript)."""
    conversation = _conversation_or_404(conversation_id)
    conversations_list = Conversation.for_user(current_user().id)
    return render_template("confirm_delete.html", conversation=conversation, conversations=conversations_list)


@bp.post("/c/<int:conversation_id>/delete")
def delete(conversation_id: int):  # noqa: ANN201
    """Delete the conversation and all its messages, every branch."""
    conversations.delete(_conversation_or_404(conversation_id))
    return redirect(url_for(".index"), 303)
