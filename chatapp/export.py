"""Export: conversations as lossless JSON, readable Markdown, self-contained HTML, or a zip with the images.

Every export streams: one conversation's tree is in memory at a time, and a zip is written into a
generator piece by piece (``zipfile`` on an unseekable stream), never built whole. The JSON format
is documented in ``docs/export-format.md``; its pydantic models below are what the importer checks.
"""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from flask import render_template
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from . import images as images_module
from .blocking import Breather
from .errors import ChatError
from .extensions import db
from .models import STATUSES, Conversation, Image, Message, Note, Tree, utcnow
from .rendering import pygments_css

FORMAT = "chatapp.export"
VERSION = 1
FORMATS = ("json", "markdown", "html", "zip")
IMAGE_FOLDER = "images/"
MIMETYPES = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "zip": "application/zip",
}
EXTENSIONS = {"json": "json", "markdown": "md", "html": "html", "zip": "zip"}


# -- the JSON format (also what the importer validates) --------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a later version may add fields; this one ignores them


class ExportImage(_Loose):
    file: str = Field(max_length=300)  # the path inside a zip export: images/<name>
    mime: str = Field(max_length=32)
    width: int
    height: int
    size: int
    alt: str | None = Field(None, max_length=300)


class ExportMetrics(_Loose):
    ttft_ms: int | None = None
    duration_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = Field(None, max_length=50)


class ExportFeedback(_Loose):
    rating: Literal["up", "down"] | None = None
    comment: str | None = None


class ExportMessage(_Loose):
    id: int
    parent_id: int | None
    role: Literal["user", "assistant"]
    content: str
    status: Literal[STATUSES] = "complete"  # type: ignore[valid-type]
    error: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    model: str | None = Field(None, max_length=200)
    provider: str | None = Field(None, max_length=50)
    token_count: int | None = None
    metrics: ExportMetrics = ExportMetrics.model_validate({})
    feedback: ExportFeedback | None = None
    images: list[ExportImage] = []


class ExportNote(_Loose):
    content: str  # its length is checked on import (a longer note is cut, not refused)
    source: Literal["assistant", "user"]
    message_id: int | None = None  # the message it came from: an ``id`` of this conversation's messages
    tool_call_id: str | None = Field(None, max_length=200)
    answer_offset: int | None = None
    created_at: datetime
    updated_at: datetime | None = None


class ExportSettings(_Loose):
    model: str | None = Field(None, max_length=200)
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


class ExportConversation(_Loose):
    id: int
    title: str = Field(min_length=1)
    created_at: datetime
    updated_at: datetime
    settings: ExportSettings = ExportSettings.model_validate({})
    active_leaf_id: int | None
    visible_path: list[int] = []
    messages: list[ExportMessage]
    notes: list[ExportNote] = []


class ExportDocument(_Loose):
    """The whole file: what it is, then the conversations."""

    format: Literal["chatapp.export"]
    version: int
    exported_at: datetime
    conversations: list[ExportConversation]


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if moment else None


def image_data(image: Image) -> dict:
    """An image reference: its path inside a zip export, and what it is."""
    return {
        "file": IMAGE_FOLDER + image.filename,
        "mime": image.mime,
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "alt": image.alt,
    }


def message_data(m: Message) -> dict:
    """One message, every stored field."""
    feedback = {"rating": m.feedback_rating, "comment": m.feedback_comment}
    return {
        "id": m.id,
        "parent_id": m.parent_id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "error": m.error,
        "created_at": _iso(m.created_at),
        "updated_at": _iso(m.updated_at),
        "model": m.model,
        "provider": m.provider,
        "token_count": m.token_count,
        "metrics": {
            "ttft_ms": m.ttft_ms,
            "duration_ms": m.duration_ms,
            "prompt_tokens": m.prompt_tokens,
            "completion_tokens": m.completion_tokens,
            "finish_reason": m.finish_reason,
        },
        "feedback": feedback if m.feedback_rating or m.feedback_comment else None,
        "images": [image_data(i) for i in m.images],
    }


def note_data(n: Note) -> dict:
    """One note; ``message_id`` is an exported message's id (the file keeps the ids)."""
    return {
        "content": n.content,
        "source": n.source,
        "message_id": n.message_id,
        "tool_call_id": n.tool_call_id,
        "answer_offset": n.answer_offset,
        "created_at": _iso(n.created_at),
        "updated_at": _iso(n.updated_at),
    }


def conversation_data(conversation: Conversation, tree: Tree | None = None) -> dict:
    """One conversation, lossless: settings, every message of every branch, the visible path, the notes."""
    tree = tree or Tree(conversation.id)
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "settings": {
            "model": conversation.model,
            "system_prompt": conversation.system_prompt,
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens,
        },
        "active_leaf_id": conversation.active_leaf_id,
        "visible_path": [m.id for m in tree.path(conversation.active_leaf_id)],
        "messages": [message_data(m) for m in tree.by_id.values()],  # oldest first: a parent before its children
        "notes": [note_data(n) for n in conversation.notes],  # oldest first
    }


# -- choosing what to export -----------------------------------------------------------------------------
def parse_format(value: str | None) -> str:
    """The format asked for (``md`` is ``markdown``); a 422 naming the choices otherwise."""
    value = {"md": "markdown", "htm": "html"}.get(value or "", value or "json")
    if value not in FORMATS:
        raise ChatError(
            f"format must be one of {', '.join(FORMATS)}; {value!r} is not.",
            422,
            details={"fields": [{"field": "format"}]},
        )
    return value


def conversation_ids(user_id: str) -> list[int]:
    """The ids of every conversation of the user, most recently active first."""
    query = select(Conversation.id).where(Conversation.user_id == user_id)
    return list(db.session.scalars(query.order_by(Conversation.updated_at.desc(), Conversation.id.desc())))


def _each(ids: Iterable[int]) -> Iterator[tuple[Conversation, Tree]]:
    """Each conversation with its tree, one at a time; each is let go before the next is loaded."""
    breathe = Breather()
    for conversation_id in ids:
        breathe()
        conversation = db.session.get(Conversation, conversation_id)
        if conversation is None:  # deleted while the export ran
            continue
        tree = Tree(conversation.id)
        yield conversation, tree
        for message in tree.by_id.values():
            db.session.expunge(message)
        db.session.expunge(conversation)


def filename(title: str | None, fmt: str) -> str:
    """A download's file name: the conversation's title (or "chatapp-export"), with the format's extension."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", title or "").strip("-.")[:60] or "chatapp-export"
    return f"{stem}.{EXTENSIONS[fmt]}"


# -- JSON ------------------------------------------------------------------------------------------------
def json_chunks(ids: Iterable[int]) -> Iterator[str]:
    """The JSON export of these conversations, a conversation at a time."""
    header = {"format": FORMAT, "version": VERSION, "exported_at": _iso(utcnow())}
    yield json.dumps(header, ensure_ascii=False)[:-1] + ', "conversations": [\n'
    for index, (conversation, tree) in enumerate(_each(ids)):
        yield ("" if index == 0 else ",\n") + json.dumps(conversation_data(conversation, tree), ensure_ascii=False)
    yield "\n]}\n"


# -- Markdown --------------------------------------------------------------------------------------------
def _speaker(message: Message) -> str:
    return "You" if message.role == "user" else f"Assistant ({message.model})" if message.model else "Assistant"


def markdown(conversation: Conversation, tree: Tree | None = None) -> str:
    """The visible path as readable Markdown, images linked as ``images/<name>`` (as in the zip), then the notes."""
    tree = tree or Tree(conversation.id)
    lines = [f"# {conversation.title}", "", f"*Exported from chatapp · started {_human(conversation.created_at)}*", ""]
    if conversation.system_prompt:
        lines += ["> **System prompt:** " + conversation.system_prompt.replace("\n", "\n> "), ""]
    for message in tree.path(conversation.active_leaf_id):
        lines += [f"## {_speaker(message)}", "", f"*{_human(message.created_at)}*", ""]
        lines += [message.content or "", ""]
        lines += [f"![{(i.alt or 'image').replace(']', '')}]({IMAGE_FOLDER}{i.filename})" for i in message.images]
        if message.images:
            lines.append("")
        if message.error:
            lines += [f"> {message.status}: {message.error}", ""]
    if conversation.notes:
        lines += ["## Notes", ""]
    for note in conversation.notes:
        who = "the assistant" if note.source == "assistant" else "you"
        lines += [f"*Saved by {who} · {_human(note.created_at)}*", "", note.content, ""]
    return "\n".join(lines).rstrip() + "\n"


def _human(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# -- HTML ------------------------------------------------------------------------------------------------
def html(conversation: Conversation, tree: Tree | None = None, inline_images: bool = True) -> str:
    """One self-contained page: inline CSS, no scripts; other versions of a message in ``<details>``.

    Images are embedded as ``data:`` URLs (``inline_images``) or linked as ``images/<name>`` (in a zip).
    """
    tree = tree or Tree(conversation.id)
    path = tree.path(conversation.active_leaf_id)
    on_path = {m.id for m in path}
    entries = []
    for message in path:
        others = [m for m in tree.children[message.parent_id] if m.id not in on_path]
        # Each other version, followed by the latest messages of its branch.
        branches = [tree.path(tree.newest_leaf(other).id)[len(tree.path(other.parent_id)) :] for other in others]
        entries.append((message, branches))

    def source(image: Image) -> str:
        if not inline_images:
            return IMAGE_FOLDER + image.filename
        try:
            return f"data:{image.mime};base64,{base64.b64encode(images_module.load(image)).decode()}"
        except images_module.storage.Missing:
            return IMAGE_FOLDER + image.filename

    return render_template(
        "export/conversation.html",
        conversation=conversation,
        entries=entries,
        speaker=_speaker,
        human=_human,
        source=source,
        code_css=_code_css(),
    )


@lru_cache(maxsize=1)
def _code_css() -> str:
    return pygments_css()


# -- zip -------------------------------------------------------------------------------------------------
class _Pipe(io.RawIOBase):
    """A write-only, unseekable file whose bytes are taken out as they come (zipfile writes into it)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        """It takes writes."""
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        """Keep the bytes until they are taken."""
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """The bytes written since the last take."""
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _stamp(moment: datetime) -> tuple[int, int, int, int, int, int]:
    return (max(moment.year, 1980), moment.month, moment.day, moment.hour, moment.minute, moment.second)


def zip_chunks(ids: list[int]) -> Iterator[bytes]:
    """A zip of ``conversations.json``, a Markdown and an HTML file per conversation, and ``images/``.

    Written into a generator: at most one conversation (or one image) is in memory at a time.
    """
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("conversations.json", _stamp(utcnow()))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            for chunk in json_chunks(ids):
                member.write(chunk.encode())
                if len(pipe.parts) > 0:
                    yield pipe.take()
        yield pipe.take()
        names: set[str] = set()
        for conversation, tree in _each(ids):
            stem = filename(f"{conversation.id}-{conversation.title}", "json").rsplit(".", 1)[0]
            stamp = _stamp(conversation.updated_at)
            archive.writestr(zipfile.ZipInfo(f"{stem}.md", stamp), markdown(conversation, tree), zipfile.ZIP_DEFLATED)
            page = html(conversation, tree, inline_images=False)
            archive.writestr(zipfile.ZipInfo(f"{stem}.html", stamp), page, zipfile.ZIP_DEFLATED)
            yield pipe.take()
            for message in tree.by_id.values():
                for image in message.images:
                    if image.filename in names:
                        continue
                    names.add(image.filename)
                    try:
                        data = images_module.load(image)
                    except images_module.storage.Missing:
                        continue  # e.g. a local file lost with a wiped disk: the JSON still describes it
                    info = zipfile.ZipInfo(IMAGE_FOLDER + image.filename, _stamp(image.created_at))
                    archive.writestr(info, data, zipfile.ZIP_STORED)  # already compressed
                    yield pipe.take()
    yield pipe.take()
