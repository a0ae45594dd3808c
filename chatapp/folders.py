"""Folders of conversations: a name, and optionally the system prompt and model new chats in it start with."""

from __future__ import annotations

from sqlalchemy import select, update

from . import conversations
from .errors import ChatError
from .extensions import db
from .models import Conversation, Folder, User

NAME_MAX = 100
SYSTEM_PROMPT_MAX = 20000


def create_folder(user: User, fields: dict) -> Folder:
    """A new folder for the user (``name``, optional ``system_prompt`` and ``model``)."""
    if user.id is None:
        raise ChatError("Start a chat before making folders.", 409, "no_identity")
    folder = Folder(user_id=user.id)
    _apply(folder, {"name": "", **fields})
    db.session.add(folder)
    db.session.commit()
    return folder


def update_folder(folder: Folder, fields: dict) -> Folder:
    """Change the fields sent; those left out stay as they are."""
    _apply(folder, fields)
    db.session.commit()
    return folder


def _apply(folder: Folder, fields: dict) -> None:
    if "name" in fields:
        name = " ".join((fields["name"] or "").split())
        if not name:
            raise _field("name", "A folder needs a name.")
        if len(name) > NAME_MAX:
            raise _field("name", f"A folder's name can be at most {NAME_MAX} characters; this one has {len(name)}.")
        folder.name = name
    if "system_prompt" in fields:
        prompt = (fields["system_prompt"] or "").strip()
        if len(prompt) > SYSTEM_PROMPT_MAX:
            raise _field("system_prompt", f"The system prompt can be at most {SYSTEM_PROMPT_MAX:,} characters.")
        folder.system_prompt = prompt or None
    if "model" in fields:
        folder.model = conversations.check_model((fields["model"] or "").strip() or None)


def _field(name: str, message: str) -> ChatError:
    return ChatError(message, 422, "invalid", {"fields": [{"field": name}]})


def delete_folder(folder: Folder, with_chats: bool = False) -> int:
    """Delete a folder; its chats move out of it, or (``with_chats``) are deleted with it. How many chats."""
    members = list(db.session.scalars(select(Conversation).where(Conversation.folder_id == folder.id)))
    if with_chats:
        for conversation in members:
            conversations.delete(conversation)
    else:
        db.session.execute(update(Conversation).where(Conversation.folder_id == folder.id).values(folder_id=None))
    db.session.delete(folder)
    db.session.commit()
    return len(members)


def chats_in(folder: Folder) -> list[Conversation]:
    """The folder's conversations (not archived or temporary), most recently active first."""
    query = (
        select(Conversation)
        .where(
            Conversation.folder_id == folder.id,
            Conversation.archived_at.is_(None),
            Conversation.temporary.is_(False),
        )
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    )
    return list(db.session.scalars(query))
