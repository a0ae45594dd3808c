"""The chat pages: every action is a plain form; HTMX requests get just the fragments."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import conversations, notes, presets, rooms
from ..conversations import ChatError
from ..errors import wants_fragment
from ..extensions import db
from ..identity import current_user
from ..limits import uploads
from ..models import MEMBER, OWNER, VIEWER, Conversation, Message, Note, Preset
from .responses import (
    PAGE_MESSAGES,
    answer_events,
    image_response,
    render_branch,
    render_chat,
    render_meter,
    render_notes,
)

bp = Blueprint("chat", __name__)


@bp.after_request
def _vary(response: Response) -> Response:
    response.vary.add("HX-Request")
    return response


@bp.before_request
def _room_page() -> None:
    g.room_page = request.headers.get("X-Room-Page")  # a room's page: its own actions come back in the response


def _conversation_or_404(conversation_id: int, need: str = VIEWER) -> Conversation:
    return conversations.conversation_access(current_user().id, conversation_id, need)


def _message_or_404(message_id: int, need: str = VIEWER) -> Message:
    return conversations.message_access(current_user().id, message_id, need)


def _me() -> str:
    return current_user().id


def _to_message(message: Message):  # noqa: ANN202
    """Redirect (303, after a POST) to the conversation, scrolled to ``message``."""
    return redirect(
        url_for(".conversation", conversation_id=message.conversation_id, _anchor=f"message-{message.id}"), 303
    )


@bp.get("/")
def index():  # noqa: ANN201
    """A new, empty chat; ``?prompt=`` puts an example prompt in the composer (without JS too);
    ``?preset=<id>`` chooses one of the user's presets and puts its opening prompt there; ``?folder=<id>``
    starts it in that folder, ``?temporary=1`` as a temporary chat."""
    user = current_user()
    conversations.discard_temporary(user)  # starting another chat ends a temporary one
    folder_id = request.args.get("folder", type=int)
    folder = conversations.owned_folder(user.id, folder_id) if folder_id else None
    temporary = request.args.get("temporary") == "1"
    preset = _chosen_preset(request.args.get("preset", ""))
    draft = request.args.get("prompt", "") or (preset.opening_prompt if preset and preset.opening_prompt else "")
    starting = conversations.starting_settings(user, preset, folder) if preset or folder else None
    return render_chat(
        None,
        draft=draft,
        chosen_preset=preset.id if preset else None,
        starting=starting,
        folder=folder,
        temporary=temporary,
    )


def _chosen_preset(raw: str) -> Preset | None:
    """The preset named by a form or query value (empty: none), if it is the user's."""
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ChatError("Choose one of your presets.", 422, "invalid", {"fields": [{"field": "preset_id"}]})
    return presets.owned_preset(current_user().id, int(raw))


@bp.post("/conversations")
@uploads("images")
def create():  # noqa: ANN201
    """Start a conversation with its first message, with the chosen preset's settings (else the defaults).

    A preset's opening prompt is sent when the message box was left empty."""
    user = current_user()
    preset = _chosen_preset(request.form.get("preset_id", ""))
    content = request.form.get("content", "")
    if preset and preset.opening_prompt and not content.strip() and not _uploaded_images_named():
        content = preset.opening_prompt
    folder = request.form.get("folder_id", "")
    if folder and not (folder.isascii() and folder.isdigit() and len(folder) <= 18):
        raise ChatError("folder_id must be one of your folders.", 422, "invalid")
    conversation, sent = conversations.start_conversation(
        user,
        content,
        _uploaded_images(),
        conversations.starting_settings(user, preset) if preset else None,  # else the folder's, or the defaults
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
    ``?rename=1`` the title as a form, ``?refresh=N`` counts self-refreshes, ``?hold=1`` stops them,
    ``?notes=1`` opens the Notes panel."""
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
        notes_open=bool(request.args.get("notes")),
    )


@bp.post("/c/<int:conversation_id>/messages")
@uploads("images")
def send(conversation_id: int):  # noqa: ANN201
    """Send a message; the answer streams in the background."""
    conversation = _conversation_or_404(conversation_id, MEMBER)
    sent = conversations.send(conversation, request.form.get("content", ""), _uploaded_images(), by=_me())
    _describe_images(sent.user_message)
    status = 422 if sent.answer is None else 200
    if wants_fragment():
        conversations_list = Conversation.for_sidebar(current_user().id)
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


def _uploaded_images_named() -> bool:
    return any(upload.filename for upload in request.files.getlist("images"))


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
    message = _message_or_404(message_id, MEMBER)
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
    message = _message_or_404(message_id, MEMBER)
    content = request.form.get("content", "")
    try:
        answer = conversations.edit(message, content, by=_me())
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
    """Write a new answer beside this one (the old one is kept as a sibling); ``model`` chooses who writes it."""
    answer = conversations.retry(_message_or_404(message_id, MEMBER), request.form.get("model") or None, by=_me())
    return render_branch(answer.conversation) if wants_fragment() else _to_message(answer)


@bp.get("/messages/<int:message_id>/markdown")
def markdown_source(message_id: int):  # noqa: ANN201
    """The message's text as stored (Markdown), as plain text: what Copy copies."""
    message = _message_or_404(message_id)
    response = Response(message.content, mimetype="text/plain")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response


@bp.post("/messages/<int:message_id>/feedback")
def feedback(message_id: int):  # noqa: ANN201
    """Thumbs up or down (the same again clears it) and an optional comment on an answer."""
    message = _message_or_404(message_id)
    rating = request.form.get("rating", message.feedback_rating or "") or None
    comment = request.form.get("comment", message.feedback_comment or "")
    try:
        conversations.give_feedback(message, rating, comment)
    except ChatError as exc:
        if exc.status != 422:
            raise
        if wants_fragment():
            return render_template("partials/feedback.html", message=message, error=exc.message, draft=comment), 422
        return render_chat(
            message.conversation, 422, around=message.id, feedback_error=(message.id, exc.message, comment)
        )
    if wants_fragment():
        return render_template("partials/feedback.html", message=message, saved=True)
    return _to_message(message)


@bp.post("/c/<int:conversation_id>/settings")
def settings(conversation_id: int):  # noqa: ANN201
    """Save the conversation's model, system prompt, temperature and max tokens: the next answer uses them."""
    conversation = _conversation_or_404(conversation_id)
    form = {key: request.form.get(key, "") for key in ("model", "system_prompt", "temperature", "max_tokens")}
    try:
        fields = {
            "model": form["model"].strip() or None,
            "system_prompt": form["system_prompt"].strip() or None,
            "settings": {
                "temperature": conversations.parse_number(form["temperature"], "temperature", float, 0, 2),
                "max_tokens": conversations.parse_number(form["max_tokens"], "max_tokens", int, 1, None),
            },
        }
        if fields["system_prompt"] and len(fields["system_prompt"]) > 20000:
            raise ChatError("The system prompt can be at most 20,000 characters.", 422, "invalid")
        conversations.update_conversation(conversation, fields)
    except ChatError as exc:
        if exc.status != 422:
            raise
        db.session.rollback()
        if wants_fragment():
            html = render_template(
                "partials/chat_settings.html", conversation=conversation, settings_form=form, settings_error=exc.message
            )
            return html, 422
        return render_chat(conversation, 422, settings_form=form, settings_error=exc.message)
    if wants_fragment():
        html = render_template(
            "partials/chat_settings.html", conversation=conversation, settings_saved=True, oob_model=True
        )
        return html
    return redirect(url_for(".conversation", conversation_id=conversation.id, saved=1, _anchor="chat-settings"), 303)


@bp.post("/meter")
@bp.post("/c/<int:conversation_id>/meter")
def meter(conversation_id: int | None = None):  # noqa: ANN201
    """The token meter for the draft in the message box (the composer asks as you type); a new chat's
    ``preset_id`` counts that preset's system prompt."""
    conversation = _conversation_or_404(conversation_id) if conversation_id else None
    preset = _chosen_preset(request.form.get("preset_id", "")) if conversation is None else None
    starting = conversations.starting_settings(current_user(), preset) if preset else None
    return render_meter(conversation, request.form.get("content", ""), starting)


@bp.post("/messages/<int:message_id>/continue")
def continue_(message_id: int):  # noqa: ANN201
    """Let a stopped or interrupted answer go on, in the same message."""
    answer = conversations.continue_answer(_message_or_404(message_id, MEMBER), by=_me())
    return render_branch(answer.conversation) if wants_fragment() else _to_message(answer)


@bp.post("/messages/<int:message_id>/show")
def show(message_id: int):  # noqa: ANN201
    """Switch to this version of a message and the latest path beneath it."""
    message = _message_or_404(message_id, MEMBER)
    conversations.show(message)
    return render_branch(message.conversation) if wants_fragment() else _to_message(message)


@bp.post("/messages/<int:message_id>/stop")
def stop(message_id: int):  # noqa: ANN201
    """Stop an answer; it keeps exactly the text shown so far."""
    message = conversations.stop(_message_or_404(message_id, MEMBER))
    if wants_fragment():
        return render_template("partials/finished.html", message=message)
    return redirect(url_for(".conversation", conversation_id=message.conversation_id), 303)


@bp.get("/messages/<int:message_id>/events")
def events(message_id: int):  # noqa: ANN201
    """Server-Sent Events for an answer: its Markdown rendered as it grows, the text between renders,
    then the rendered message."""
    message = _message_or_404(message_id)
    return answer_events(
        message_id,
        lambda message: render_template("partials/finished.html", message=message),
        with_notes=True,
        access=rooms.AccessCheck(message.conversation_id, current_user().id),
    )


@bp.post("/c/<int:conversation_id>/rename")
def rename(conversation_id: int):  # noqa: ANN201
    """Give the conversation a new title."""
    conversation = _conversation_or_404(conversation_id, OWNER)
    conversations.rename(conversation, request.form.get("title", ""))
    return redirect(url_for(".conversation", conversation_id=conversation.id), 303)


@bp.get("/c/<int:conversation_id>/delete")
def confirm_delete(conversation_id: int):  # noqa: ANN201
    """Ask before deleting (works without JavaScript)."""
    conversation = _conversation_or_404(conversation_id, OWNER)
    conversations_list = Conversation.for_sidebar(current_user().id)
    return render_template("confirm_delete.html", conversation=conversation, conversations=conversations_list)


@bp.post("/c/<int:conversation_id>/delete")
def delete(conversation_id: int):  # noqa: ANN201
    """Delete the conversation and all its messages, every branch."""
    conversations.delete(_conversation_or_404(conversation_id, OWNER))
    return redirect(url_for(".index"), 303)


# -- notes ------------------------------------------------------------------------------------------
def _note_or_404(note_id: int) -> Note:
    return notes.owned_note(current_user().id, note_id)


def _to_notes(conversation_id: int, anchor: str = "notes"):  # noqa: ANN202
    """Redirect (303, after a POST) to the conversation with its Notes panel open."""
    return redirect(url_for(".conversation", conversation_id=conversation_id, notes=1, _anchor=anchor), 303)


@bp.post("/c/<int:conversation_id>/notes")
def add_note(conversation_id: int):  # noqa: ANN201
    """Add a note of the user's to the conversation's Notes panel."""
    conversation = _conversation_or_404(conversation_id)
    content = request.form.get("content", "")
    try:
        note = notes.add_note(conversation, content)
    except ChatError as exc:
        if exc.status not in (413, 422):
            raise
        if wants_fragment():
            return render_notes(conversation, exc.status, note_draft=content, note_error=exc.message)
        return render_chat(conversation, exc.status, notes_open=True, note_draft=content, note_error=exc.message)
    return render_notes(conversation) if wants_fragment() else _to_notes(conversation.id, f"note-{note.id}")


@bp.post("/messages/<int:message_id>/save-note")
def save_to_notes(message_id: int):  # noqa: ANN201
    """ "Save to notes": the message's text becomes a note."""
    message = _message_or_404(message_id)
    note = notes.save_message(message)
    if wants_fragment():
        return render_notes(message.conversation)
    return _to_notes(message.conversation_id, f"note-{note.id}")


@bp.post("/notes/<int:note_id>/edit")
def edit_note(note_id: int):  # noqa: ANN201
    """Change a note's text."""
    note = _note_or_404(note_id)
    content = request.form.get("content", "")
    try:
        notes.edit_note(note, content)
    except ChatError as exc:
        if exc.status not in (413, 422):
            raise
        db.session.rollback()
        context = {"editing_note": note.id, "note_edit_draft": content, "note_edit_error": exc.message}
        if wants_fragment():
            return render_template("partials/note.html", note=note, **context), exc.status
        return render_chat(note.conversation, exc.status, notes_open=True, **context)  # type: ignore[arg-type]
    if wants_fragment():
        return render_template("partials/note.html", note=note)
    return _to_notes(note.conversation_id, f"note-{note.id}")


@bp.post("/notes/<int:note_id>/delete")
def delete_note(note_id: int):  # noqa: ANN201
    """Delete a note."""
    note = _note_or_404(note_id)
    conversation = note.conversation
    notes.delete_note(note)
    if wants_fragment():
        count = len(notes.list_notes(conversation))
        return render_template("partials/notes_count.html", note_count=count, oob=True)
    return _to_notes(conversation.id)
