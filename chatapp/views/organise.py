"""Organising chats: pin, archive (and the Archive page), folders, moving chats. Plain forms (303)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from sqlalchemy import select

from .. import conversations, folders
from ..errors import ChatError
from ..extensions import db
from ..identity import current_user
from ..models import Conversation, Folder

bp = Blueprint("organise", __name__)


@bp.after_request
def _vary(response: Response) -> Response:
    response.vary.add("HX-Request")
    return response


@bp.app_template_global()
def sidebar_sections(chats: list[Conversation]) -> list[tuple[str, str | None, list[Conversation]]]:
    """The sidebar's first groups: Pinned, then each folder (title, link, its unpinned chats)."""
    pinned = [c for c in chats if c.pinned_at is not None]
    sections: list[tuple[str, str | None, list[Conversation]]] = [("Pinned", None, pinned)] if pinned else []
    for folder in _folders():
        members = [c for c in chats if c.folder_id == folder.id and c.pinned_at is None]
        sections.append((folder.name, url_for("organise.folder", folder_id=folder.id), members))
    return sections


@bp.app_template_global()
def unfiled(chats: list[Conversation]) -> list[Conversation]:
    """The sidebar's chats that are neither pinned nor in one of the user's folders (grouped by date)."""
    folder_ids = {folder.id for folder in _folders()}
    return [c for c in chats if c.pinned_at is None and c.folder_id not in folder_ids]


def _folders() -> list[Folder]:
    """The current user's folders, read once per request."""
    if "folders" not in g:
        user = current_user()
        g.folders = Folder.for_user(user.id) if user.id else []
    return g.folders


def _back(default: str):  # noqa: ANN202
    """303 to the page the form was on (``next``, a path on this site), else ``default``."""
    target = request.form.get("next", "")
    parts = urlsplit(target)
    local = target.startswith("/") and not target.startswith("//") and not parts.scheme and not parts.netloc
    return redirect(target if local and "\\" not in target else default, 303)


def _conversation(conversation_id: int) -> Conversation:
    return conversations.owned_conversation(current_user().id, conversation_id)


def _folder(folder_id: int) -> Folder:
    return conversations.owned_folder(current_user().id, folder_id)


def _chat_url(conversation: Conversation) -> str:
    return url_for("chat.conversation", conversation_id=conversation.id)


@bp.post("/c/<int:conversation_id>/pin")
def pin(conversation_id: int):  # noqa: ANN201
    """Pin (``pinned=1``) or unpin (``pinned=0``) a chat: pinned chats come first in the sidebar."""
    conversation = _conversation(conversation_id)
    conversations.update_conversation(conversation, {"pinned": request.form.get("pinned") == "1"})
    return _back(_chat_url(conversation))


@bp.post("/c/<int:conversation_id>/archive")
def archive(conversation_id: int):  # noqa: ANN201
    """Archive (``archived=1``) a chat, out of the sidebar, or restore it (``archived=0``)."""
    conversation = _conversation(conversation_id)
    archived = request.form.get("archived") == "1"
    conversations.update_conversation(conversation, {"archived": archived})
    return _back(url_for("organise.archived") if archived else _chat_url(conversation))


@bp.get("/archive")
def archived():  # noqa: ANN201
    """The archived chats, each restorable."""
    user = current_user()
    query = (
        select(Conversation)
        .where(
            Conversation.user_id == user.id, Conversation.archived_at.is_not(None), Conversation.temporary.is_(False)
        )
        .order_by(Conversation.archived_at.desc(), Conversation.id.desc())
    )
    chats = list(db.session.scalars(query)) if user.id else []
    return render_template("archive.html", archived=chats, conversations=Conversation.for_user(user.id))


@bp.get("/c/<int:conversation_id>/move")
def move_form(conversation_id: int):  # noqa: ANN201
    """Choose the folder a chat goes in (or none)."""
    conversation = _conversation(conversation_id)
    user = current_user()
    return render_template(
        "move.html",
        chat=conversation,
        folders=Folder.for_user(user.id),
        conversations=Conversation.for_user(user.id),
    )


@bp.post("/c/<int:conversation_id>/move")
def move(conversation_id: int):  # noqa: ANN201
    """Put a chat in a folder (``folder_id``), or take it out (empty)."""
    conversation = _conversation(conversation_id)
    raw = request.form.get("folder_id", "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ChatError("Choose one of the folders listed.", 422, "invalid", {"fields": [{"field": "folder_id"}]})
    conversations.update_conversation(conversation, {"folder_id": int(raw) if raw else None})
    return _back(_chat_url(conversation))


@bp.get("/folders")
def folder_list():  # noqa: ANN201
    """The user's folders and a form for a new one."""
    return _folders_page()


def _folders_page(status: int = 200, error: ChatError | None = None, form: dict | None = None):  # noqa: ANN202
    user = current_user()
    folder_rows = Folder.for_user(user.id) if user.id else []
    return render_template(
        "folders.html",
        folders=folder_rows,
        conversations=Conversation.for_user(user.id),
        error=error,
        form=form or {},
    ), status


def _form_fields() -> dict:
    return {name: request.form.get(name, "") for name in ("name", "system_prompt", "model")}


@bp.post("/folders")
def create_folder():  # noqa: ANN201
    """Make a folder; what was typed comes back with the error if something is wrong."""
    fields = _form_fields()
    try:
        folder = folders.create_folder(current_user(), fields)
    except ChatError as exc:
        if exc.status != 422:
            raise
        return _folders_page(422, exc, fields)
    return redirect(url_for(".folder", folder_id=folder.id), 303)


@bp.get("/folders/<int:folder_id>")
def folder(folder_id: int):  # noqa: ANN201
    """A folder: its chats, a new chat in it, its settings."""
    return _folder_page(_folder(folder_id))


def _folder_page(found: Folder, status: int = 200, error: ChatError | None = None, form: dict | None = None):  # noqa: ANN202
    return render_template(
        "folder.html",
        folder=found,
        chats=folders.chats_in(found),
        conversations=Conversation.for_user(current_user().id),
        error=error,
        form=form or {},
    ), status


@bp.post("/folders/<int:folder_id>")
def update_folder(folder_id: int):  # noqa: ANN201
    """Rename a folder or change the system prompt and model its new chats start with."""
    found = _folder(folder_id)
    fields = _form_fields()
    try:
        folders.update_folder(found, fields)
    except ChatError as exc:
        if exc.status != 422:
            raise
        db.session.rollback()
        return _folder_page(found, 422, exc, fields)
    return redirect(url_for(".folder", folder_id=found.id), 303)


@bp.get("/folders/<int:folder_id>/delete")
def confirm_delete_folder(folder_id: int):  # noqa: ANN201
    """Ask what happens to the folder's chats before deleting it."""
    found = _folder(folder_id)
    return render_template(
        "folder_delete.html",
        folder=found,
        count=len(folders.chats_in(found)),
        conversations=Conversation.for_user(current_user().id),
    )


@bp.post("/folders/<int:folder_id>/delete")
def delete_folder(folder_id: int):  # noqa: ANN201
    """Delete a folder: ``chats=keep`` moves its chats out, ``chats=delete`` deletes them with it."""
    choice = request.form.get("chats", "")
    if choice not in ("keep", "delete"):
        raise ChatError("Choose whether the folder's chats are kept or deleted.", 422, "invalid")
    folders.delete_folder(_folder(folder_id), with_chats=choice == "delete")
    return redirect(url_for(".folder_list"), 303)
