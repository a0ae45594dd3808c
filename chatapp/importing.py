"""Import: chatapp's own JSON export (or its zip) and ChatGPT's data export, in the background.

The upload is saved to a file, recognised from its first bytes (a bad or unknown file is refused
before any job starts), then read with a streaming JSON parser (ijson), one conversation at a time,
so memory holds one conversation whatever the file's size. Each conversation is imported in one
transaction, or not at all; the job's row holds the progress and the report, so both survive a
restart. A conversation already imported (the same content, by SHA-256) is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, BinaryIO

import ijson
from flask import Flask, current_app
from pydantic import ValidationError
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from . import images as images_module
from . import search
from .blocking import Breather
from .errors import ChatError
from .export import FORMAT, VERSION, ExportConversation, ExportImage, ExportNote
from .extensions import db
from .models import (
    COMPLETE,
    INTERRUPTED,
    NEW_TITLE,
    STREAMING,
    Conversation,
    ConversationSource,
    ImportJob,
    Message,
    Note,
    User,
    utcnow,
)
from .notes import MAX_NOTE_CHARS

log = logging.getLogger(__name__)
breathe = Breather()  # called between messages: other requests run while an import works

CHATAPP, CHATGPT = "chatapp", "chatgpt"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
LEFTOVER_AFTER = timedelta(days=1)
STALE_AFTER = timedelta(seconds=60)  # a running job without a heartbeat this long was stopped by a restart
SAVE_EVERY = 1.0  # seconds between writes of a running job's report
REPORT_LIMIT = 2000  # entries kept in a report; the counts stay exact
DETECT_EVENTS = 100_000  # parser events read to recognise a file before giving up
COPY_CHUNK = 1 << 20
INSERT_BATCH = 500  # messages per INSERT statement
UNZIPPED_RATIO = 10  # conversations.json in a zip may unpack to this many times MAX_IMPORT_BYTES
UNKNOWN = (
    "This file is not one chatapp can import. Upload chatapp's own export (.json or .zip) or ChatGPT's data "
    "export (conversations.json, or the .zip that holds it)."
)


class Problem(Exception):
    """Why one conversation of the file cannot be imported (it is skipped; the others go on)."""


# -- receiving the file ----------------------------------------------------------------------------------
def import_folder() -> str:
    """Where uploads wait to be imported: ``instance/imports``."""
    return os.path.join(current_app.instance_path, "imports")


def receive(user: User, stream: IO[bytes], filename: str) -> ImportJob:
    """Save the upload, check what it is, and start importing it in the background.

    A file over ``MAX_IMPORT_BYTES`` (413) or one that is not a known export (415/422) is refused
    with nothing saved.
    """
    limit = current_app.config["MAX_IMPORT_BYTES"]
    if any(state(job) in (QUEUED, RUNNING) for job in jobs_for(user.id, 3)):
        raise ChatError("One of your imports is still running. Wait for it to finish, then import the next file.", 409)
    os.makedirs(import_folder(), exist_ok=True)
    _remove_leftovers()
    path = os.path.join(import_folder(), secrets.token_hex(16) + ".upload")
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := stream.read(COPY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ChatError(
                        f"The file is larger than the import limit of {limit:,} bytes (MAX_IMPORT_BYTES).", 413
                    )
                out.write(chunk)
        if not size:
            raise ChatError("The file is empty. Choose an export file to import.", 422)
        kind = detect(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise
    job = ImportJob(user_id=user.id, filename=(filename or "upload")[:255], size=size, kind=kind, status=QUEUED)
    db.session.add(job)
    db.session.commit()
    start(current_app._get_current_object(), job.id, path)  # type: ignore[attr-defined]
    return job


def _remove_leftovers() -> None:
    """Delete uploads a day old: their import was cut short by a restart (a finished one deletes its file)."""
    cutoff = time.time() - LEFTOVER_AFTER.total_seconds()
    for entry in os.scandir(import_folder()):
        if entry.name.endswith(".upload") and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)


def detect(path: str) -> str:
    """``chatapp`` or ``chatgpt``, from the file's first bytes; a ChatError saying what is wrong otherwise."""
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                name = _json_member(archive)
                unpacked, most = (
                    archive.getinfo(name).file_size,
                    UNZIPPED_RATIO * current_app.config["MAX_IMPORT_BYTES"],
                )
                if unpacked > most:
                    raise ChatError(
                        f"The {name} in this zip is {unpacked:,} bytes unpacked; the most an import reads is {most:,}.",
                        413,
                    )
                with archive.open(name) as member:
                    return _detect_json(member)
        except zipfile.BadZipFile:
            raise ChatError(
                "This zip file is damaged and cannot be read. Export again and upload the new file.", 422
            ) from None
    with open(path, "rb") as file:
        return _detect_json(file)


def _json_member(archive: zipfile.ZipFile) -> str:
    """The conversations.json in a zip (at its top or one folder down)."""
    names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "conversations.json" and n.count("/") <= 1]
    if not names:
        raise ChatError(
            "This zip holds no conversations.json. Upload chatapp's export zip or ChatGPT's data export zip.", 422
        )
    return min(names, key=len)


def _detect_json(stream: IO[bytes]) -> str:
    """Read just enough of the JSON to tell chatapp's export from ChatGPT's conversations list."""
    head = stream.read(1)
    while head in (b" ", b"\n", b"\r", b"\t"):
        head = stream.read(1)
    if head not in (b"{", b"["):
        raise ChatError(UNKNOWN, 415)
    events = ijson.parse(_Prefixed(head, stream), use_float=True)
    try:
        if head == b"[":
            for count, (prefix, event, value) in enumerate(events):
                if (prefix, event) == ("item", "map_key") and value == "mapping":
                    return CHATGPT
                if (prefix, event) in (("", "end_array"), ("item", "end_map")) or count > DETECT_EVENTS:
                    break
            raise ChatError(UNKNOWN + " (This JSON list does not hold ChatGPT conversations: no mapping.)", 415)
        header: dict[str, Any] = {}
        key = None
        for count, (prefix, event, value) in enumerate(events):
            if prefix == "" and event == "map_key":
                key = value
                if key == "conversations":
                    break
            elif prefix == key and event in ("string", "number"):
                header[key] = value
            if count > DETECT_EVENTS:
                break
    except ijson.JSONError as exc:
        raise ChatError(f"The file is not valid JSON ({exc}). Export again and upload the new file.", 422) from None
    if header.get("format") != FORMAT:
        raise ChatError(UNKNOWN + f' (Its "format" is {header.get("format")!r}, not "{FORMAT}".)', 415)
    version = header.get("version")
    if not isinstance(version, int | float) or int(version) > VERSION:
        raise ChatError(
            f"This export is format version {version}; this chatapp reads version {VERSION} and older. "
            "Update chatapp to import it.",
            422,
        )
    return CHATAPP


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        """It can be read."""
        return True

    def read(self, size: int = -1) -> bytes:
        """The put-back bytes first, then the stream's."""
        if size == 0:
            return b""
        if self.head:
            head, self.head = self.head, b""
            return head + self.stream.read(max(size - len(head), 0) if size > 0 else -1)
        return self.stream.read(size)

    def readinto(self, buffer: Any) -> int:
        """Read into a buffer."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Counting(io.RawIOBase):
    """A file that counts the bytes read from it (the job's progress)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.count = file, 0

    def readable(self) -> bool:
        """It can be read."""
        return True

    def seekable(self) -> bool:
        """Zip files need to seek."""
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move in the file."""
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        """Where in the file."""
        return self.file.tell()

    def read(self, size: int = -1) -> bytes:
        """Read, counting."""
        data = self.file.read(size)
        self.count = max(self.count, self.file.tell())
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into a buffer, counting."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# -- running a job ---------------------------------------------------------------------------------------
def start(app: Flask, job_id: int, path: str) -> None:
    """Import in a background thread (a greenlet under gevent), outliving the request."""
    threading.Thread(target=run, args=(app, job_id, path), name=f"import-{job_id}", daemon=True).start()


def run(app: Flask, job_id: int, path: str) -> None:
    """Import the saved file for the job, then delete the file; a failure is written to the job."""
    with app.app_context():
        try:
            _run(job_id, path)
        except Exception as exc:  # noqa: BLE001 - whatever happened, the job must say it ended
            log.exception("import %s failed", job_id)
            db.session.rollback()
            job = db.session.get(ImportJob, job_id)
            if job is not None and job.status not in (DONE, FAILED):
                job.status, job.error, job.finished_at = FAILED, f"The import stopped: {exc}", utcnow()
                db.session.commit()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            db.session.remove()


@dataclass
class Entry:
    """One conversation of the file in the report."""

    title: str
    outcome: str  # "imported" or "skipped"
    notes: list[str] = field(default_factory=list)
    conversation_id: int | None = None


@dataclass
class _Progress:
    job_id: int
    entries: list[dict] = field(default_factory=list)
    imported: int = 0
    skipped: int = 0
    saved_at: float = 0.0

    def add(self, entry: Entry) -> None:
        if entry.outcome == "imported":
            self.imported += 1
        else:
            self.skipped += 1
        if len(self.entries) < REPORT_LIMIT:
            self.entries.append(entry.__dict__)

    def write(self, job: ImportJob, bytes_read: int, force: bool = False) -> None:
        """Counts always; the report at most every SAVE_EVERY seconds (it grows)."""
        job.imported, job.skipped, job.bytes_read, job.updated_at = self.imported, self.skipped, bytes_read, utcnow()
        if force or time.monotonic() - self.saved_at >= SAVE_EVERY:
            job.report = json.dumps(self.entries, ensure_ascii=False)
            self.saved_at = time.monotonic()


def _run(job_id: int, path: str) -> None:
    job = db.session.get(ImportJob, job_id)
    if job is None:
        return
    job.status = RUNNING
    db.session.commit()
    user_id, kind = job.user_id, job.kind
    progress = _Progress(job_id)
    with open(path, "rb") as raw, contextlib.ExitStack() as stack:
        counting = _Counting(raw)
        archive: zipfile.ZipFile | None = None
        stream: IO[bytes] = counting  # type: ignore[assignment]
        if raw.read(4).startswith(b"PK\x03\x04"):
            raw.seek(0)
            archive = stack.enter_context(zipfile.ZipFile(counting))
            stream = stack.enter_context(archive.open(_json_member(archive)))
        else:
            raw.seek(0)
        items = ijson.items(stream, "conversations.item" if kind == CHATAPP else "item", use_float=True)
        try:
            for raw_conversation in items:
                entry = _import_one(kind, raw_conversation, user_id, archive)
                progress.add(entry)
                job = db.session.get(ImportJob, job_id)
                assert job is not None
                progress.write(job, counting.count)
                db.session.commit()
                breathe()
        except ijson.JSONError as exc:
            db.session.rollback()
            job = db.session.get(ImportJob, job_id)
            assert job is not None
            done = progress.imported + progress.skipped
            job.error = (
                f"The file stops being valid JSON after {done} conversation{'s' if done != 1 else ''} ({exc}). "
                "The conversations before that point are imported; export again and import the new file "
                "(those already imported are skipped)."
            )
            job.status = FAILED
        else:
            job = db.session.get(ImportJob, job_id)
            assert job is not None
            job.status = DONE
    progress.write(job, job.size, force=True)
    job.finished_at = utcnow()
    db.session.commit()


def _import_one(kind: str, raw: Any, user_id: str, archive: zipfile.ZipFile | None) -> Entry:
    """One conversation in one transaction: all of it, or nothing and the reason why."""
    title = str(raw.get("title") or NEW_TITLE)[:200] if isinstance(raw, dict) else "(not a conversation)"
    if not isinstance(raw, dict):
        return Entry(title, "skipped", ["This item is not a conversation (not a JSON object)."])
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    existing = db.session.scalar(
        select(ConversationSource.conversation_id)
        .join(Conversation, Conversation.id == ConversationSource.conversation_id)
        .where(ConversationSource.source_hash == digest, Conversation.user_id == user_id)
    )
    if existing is not None:
        return Entry(
            title, "skipped", ["Already imported: this conversation is here from an earlier import."], existing
        )
    stored: list[str] = []
    try:
        if kind == CHATAPP:
            conversation, notes = _chatapp(raw, user_id, archive, stored)
        else:
            conversation, notes = _chatgpt(raw, user_id, stored)
        source_id = raw.get("conversation_id") or raw.get("id")
        source_id = str(source_id)[:255] if source_id is not None else None
        db.session.add(
            ConversationSource(conversation_id=conversation.id, source=kind, source_id=source_id, source_hash=digest)
        )
        db.session.flush()
        search.index_conversation(conversation.id)  # searchable at once, in the same transaction
        return Entry(conversation.title, "imported", notes, conversation.id)
    except (Problem, ValidationError, ChatError, SQLAlchemyError, ValueError, TypeError) as exc:
        db.session.rollback()
        images_module.remove_files(stored)
        return Entry(title, "skipped", [_reason(exc)])


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(map(str, e['loc'])) or '(conversation)'}: {e['msg']}" for e in exc.errors()[:3]]
        return "Not a valid chatapp conversation: " + "; ".join(problems) + "."
    if isinstance(exc, ChatError):
        return exc.message
    if isinstance(exc, SQLAlchemyError):
        return "The database refused it (a value is out of range or too long)."
    return str(exc)


def _naive(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _title(text: str | None) -> str:
    return " ".join((text or "").split())[:200] or NEW_TITLE


# -- chatapp's own export --------------------------------------------------------------------------------
def _chatapp(raw: dict, user_id: str, archive: zipfile.ZipFile | None, stored: list[str]) -> tuple[Conversation, list]:
    data = ExportConversation.model_validate(raw)
    notes: Counter[str] = Counter()
    conversation = Conversation(
        user_id=user_id,
        title=_title(data.title),
        model=data.settings.model,
        system_prompt=data.settings.system_prompt,
        temperature=data.settings.temperature,
        max_tokens=data.settings.max_tokens,
        created_at=_naive(data.created_at),
        updated_at=_naive(data.updated_at),
    )
    db.session.add(conversation)
    db.session.flush()
    rows: list[dict] = []
    position: dict[int, int] = {}  # a message's id in the file → its row
    for m in sorted(data.messages, key=lambda m: m.id):
        if m.id in position:
            raise Problem(f"Two messages have the id {m.id}.")
        if m.parent_id is not None and m.parent_id not in position:
            raise Problem(f"Message {m.id} answers message {m.parent_id}, which is not an earlier message of it.")
        status = m.status
        if status == STREAMING:
            status = INTERRUPTED
            notes["an answer that was still being written is kept as interrupted"] += 1
        position[m.id] = len(rows)
        rows.append(
            {
                "parent": position[m.parent_id] if m.parent_id is not None else None,
                "role": m.role,
                "content": m.content,
                "status": status,
                "error": m.error,
                "token_count": m.token_count,
                "model": m.model,
                "provider": m.provider,
                "ttft_ms": m.metrics.ttft_ms,
                "duration_ms": m.metrics.duration_ms,
                "prompt_tokens": m.metrics.prompt_tokens,
                "completion_tokens": m.metrics.completion_tokens,
                "finish_reason": m.metrics.finish_reason,
                "feedback_rating": m.feedback.rating if m.feedback else None,
                "feedback_comment": m.feedback.comment if m.feedback else None,
                "created_at": _naive(m.created_at),
                "updated_at": _naive(m.updated_at or m.created_at),
            }
        )
    if data.active_leaf_id is not None and data.active_leaf_id not in position:
        raise Problem(f"The visible path ends at message {data.active_leaf_id}, which is not in the conversation.")
    ids = _insert_messages(conversation.id, rows, user_id)
    for m in data.messages:
        for number, image in enumerate(m.images, 1):
            problem = _image(image, ids[position[m.id]], archive, number, user_id, stored)
            if problem:
                notes[problem] += 1
            breathe()
    conversation.active_leaf_id = ids[position[data.active_leaf_id]] if data.active_leaf_id is not None else None
    _add_saved_notes(conversation, data.notes, {old: ids[row] for old, row in position.items()}, notes)
    return conversation, _notes(notes)


def _add_saved_notes(
    conversation: Conversation, saved: list[ExportNote], new_ids: dict[int, int], notes: Counter[str]
) -> None:
    """The conversation's notes (its Notes panel), each linked to its message's new id.

    A note whose message is not in the file is kept without the link; a note over MAX_NOTE_CHARS is cut
    to that length (as a tool's note is when saved), an empty one left out; each counted in ``notes``.
    """
    for n in saved:
        content = n.content.strip()
        if not content:
            notes["empty notes left out"] += 1
            continue
        if len(content) > MAX_NOTE_CHARS:
            notes[f"notes over {MAX_NOTE_CHARS:,} characters cut to that length"] += 1
        message_id = new_ids.get(n.message_id) if n.message_id is not None else None
        if n.message_id is not None and message_id is None:
            notes["notes kept without their message, which is not in the file"] += 1
        created = _naive(n.created_at)
        db.session.add(
            Note(
                conversation_id=conversation.id,
                message_id=message_id,
                content=content[:MAX_NOTE_CHARS],
                source=n.source,
                tool_call_id=n.tool_call_id,
                answer_offset=n.answer_offset,
                created_at=created,
                updated_at=_naive(n.updated_at) or created,
            )
        )


def _insert_messages(conversation_id: int, rows: list[dict], author_id: str) -> list[int]:
    """Insert a conversation's messages in two statements, not one per message; their new ids, in order.
    The user messages are ``author_id``'s (the importer's: theirs to edit).

    Each row names its parent by position (``parent``), always an earlier row. The rows go in in
    order (so ids keep the file's order: versions stay in order, a later branch gets later ids), then
    each gets its parent's new id.
    """
    if not rows:
        return []
    # Core statements (the ORM would split rows whose None columns differ into one INSERT each).
    table = Message.__table__
    connection = db.session.connection()
    values = [
        {k: v for k, v in row.items() if k != "parent"}
        | {"conversation_id": conversation_id, "author_id": author_id if row["role"] == "user" else None}
        for row in rows
    ]
    for start in range(0, len(values), INSERT_BATCH):
        breathe()
        add = insert(table).returning(table.c.id, sort_by_parameter_order=True)  # type: ignore[arg-type]
        ids = list(connection.execute(add, values[start : start + INSERT_BATCH]).scalars())
        for row, new_id in zip(rows[start : start + INSERT_BATCH], ids, strict=True):
            row["id"] = new_id
    parents = [{"row": row["id"], "parent": rows[row["parent"]]["id"]} for row in rows if row["parent"] is not None]
    if parents:
        change = update(table).where(table.c.id == bindparam("row")).values(parent_id=bindparam("parent"))  # type: ignore[arg-type]
        connection.execute(change, parents)
    return [row["id"] for row in rows]


def _image(
    image: ExportImage, message_id: int, archive: zipfile.ZipFile | None, number: int, user_id: str, stored: list
) -> str | None:
    """Store one image from the zip; None, or why it was left out (the message is imported without it)."""
    if archive is None:
        return "images left out: they are only in the zip export (import the zip to bring them)"
    try:
        info = archive.getinfo(image.file)
    except KeyError:
        return "images left out: not found in the zip"
    if info.file_size > current_app.config["MAX_IMAGE_BYTES"]:
        return "images left out: larger than MAX_IMAGE_BYTES"
    try:
        prepared = images_module.prepare(archive.read(info), number)
        images_module.check_quota(user_id, [len(prepared.data)])
    except ChatError as exc:
        return f"images left out: {exc.message}"
    except (zipfile.BadZipFile, OSError):
        return "images left out: damaged in the zip"
    row = images_module.store(prepared, message_id)
    row.alt = image.alt
    stored.append(row.filename)
    db.session.add(row)
    db.session.flush()
    return None


def _notes(notes: Counter[str]) -> list[str]:
    """Each note once, capitalised, with how many times it happened."""
    return [text[0].upper() + text[1:] + (f" ({count})" if count > 1 else "") for text, count in notes.items()]


# -- ChatGPT's data export -------------------------------------------------------------------------------
def _time(value: Any) -> datetime | None:
    """ChatGPT's times are seconds since 1970 (a float), or null."""
    if isinstance(value, int | float) and 0 < value < 32503680000:
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    return None


def _text_of(message: dict, notes: Counter[str]) -> str | None:
    """The text of a user or assistant node, or None (the reason counted in ``notes``) to skip it."""
    content = message.get("content") or {}
    kind = content.get("content_type")
    metadata = message.get("metadata") or {}
    if metadata.get("is_visually_hidden_from_conversation"):
        notes["hidden messages skipped"] += 1
        return None
    if kind == "text":
        text = "\n".join(p for p in content.get("parts") or [] if isinstance(p, str))
    elif kind == "multimodal_text":
        parts = content.get("parts") or []
        text = "\n".join(p for p in parts if isinstance(p, str))
        others = [p for p in parts if not isinstance(p, str)]
        pictures = sum(1 for p in others if isinstance(p, dict) and p.get("content_type") == "image_asset_pointer")
        if pictures:
            notes["images not imported (the text around them is)"] += pictures
        if len(others) > pictures:
            notes["non-text parts (audio, files) not imported"] += len(others) - pictures
    elif kind == "code":
        language = content.get("language") if content.get("language") not in (None, "unknown") else ""
        text = f"```{language}\n{content.get('text') or ''}\n```"
        notes["code the assistant ran, kept as a code block"] += 1
    else:
        notes[f"{kind or 'unknown'} content skipped (not text)"] += 1
        return None
    if not text.strip():
        if kind != "multimodal_text":
            notes["empty messages skipped"] += 1
        return None
    return text


def _chatgpt(raw: dict, user_id: str, stored: list[str]) -> tuple[Conversation, list]:
    mapping = raw.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise Problem("It has no mapping (the message tree), so it is not a ChatGPT conversation.")
    notes: Counter[str] = Counter()
    created = _time(raw.get("create_time")) or utcnow()
    conversation = Conversation(
        user_id=user_id,
        title=_title(raw.get("title")),
        created_at=created,
        updated_at=_time(raw.get("update_time")) or created,
    )
    db.session.add(conversation)
    db.session.flush()
    # Depth first, children in their listed (creation) order: a parent comes before its children, and a
    # later branch after an earlier one, as when they are made here.
    rows: list[dict] = []
    kept: dict[str, int | None] = {}  # node id → the row of the nearest imported message at or above it
    roots = [key for key, node in mapping.items() if not isinstance(node, dict) or node.get("parent") not in mapping]
    stack: list[tuple[str, int | None]] = [(key, None) for key in reversed(roots)]
    while stack:
        key, parent = stack.pop()
        node = mapping.get(key)
        if key in kept or not isinstance(node, dict):
            continue
        row = _chatgpt_row(node, conversation, notes)
        if row is not None:
            rows.append(row | {"parent": parent})
        kept[key] = len(rows) - 1 if row is not None else parent
        children = [c for c in node.get("children") or [] if isinstance(c, str)]
        stack.extend((child, kept[key]) for child in reversed(children))
        breathe()
    if not rows:
        raise Problem("It has no user or assistant text to import.")
    ids = _insert_messages(conversation.id, rows, user_id)
    current = raw.get("current_node")
    leaf = kept.get(current) if isinstance(current, str) else None
    conversation.active_leaf_id = ids[leaf if leaf is not None else -1]
    return conversation, _notes(notes)


def _chatgpt_row(node: dict, conversation: Conversation, notes: Counter[str]) -> dict | None:
    """One node of the mapping as a message's row; None if it is skipped (the reason counted)."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None  # the tree's empty root
    role = (message.get("author") or {}).get("role")
    if role == "system":
        text = _text_of(message, Counter())
        if text and not conversation.system_prompt:
            conversation.system_prompt = text
            notes["system message kept as the conversation's system prompt"] += 1
        else:
            notes["system messages skipped"] += 1
        return None
    if role == "tool":
        notes["tool messages skipped (browsing, code output, plugins)"] += 1
        return None
    if role not in ("user", "assistant"):
        notes[f"messages from {role or 'an unknown author'} skipped"] += 1
        return None
    text = _text_of(message, notes)
    if text is None:
        return None
    metadata = message.get("metadata") or {}
    created = _time(message.get("create_time")) or conversation.created_at
    model = metadata.get("model_slug") if role == "assistant" else None
    return {
        "role": role,
        "content": text,
        "status": COMPLETE,
        "model": str(model)[:200] if model else None,
        "provider": "chatgpt" if role == "assistant" else None,
        "created_at": created,
        "updated_at": _time(message.get("update_time")) or created,
    }


# -- reading jobs ----------------------------------------------------------------------------------------
def owned_job(user_id: str | None, job_id: int) -> ImportJob:
    """The import job if it belongs to ``user_id``; a 404 ChatError otherwise."""
    job = db.session.get(ImportJob, job_id)
    if job is None or user_id is None or job.user_id != user_id:
        raise ChatError("Not found: this import belongs to someone else, or never was.", 404, "not_found")
    return job


def jobs_for(user_id: str | None, limit: int = 10) -> list[ImportJob]:
    """The user's latest imports, newest first."""
    if user_id is None:
        return []
    query = select(ImportJob).where(ImportJob.user_id == user_id).order_by(ImportJob.id.desc()).limit(limit)
    return list(db.session.scalars(query))


def state(job: ImportJob) -> str:
    """The job's status; a running job that stopped heart-beating (the server restarted) is ``interrupted``."""
    if job.status in (QUEUED, RUNNING) and utcnow() - job.updated_at > STALE_AFTER:
        return "interrupted"
    return job.status


def report(job: ImportJob) -> list[dict]:
    """The job's report: one entry per conversation read (title, outcome, notes, conversation id)."""
    return list(json.loads(job.report or "[]"))


def percent(job: ImportJob) -> int:
    """How much of the file has been read, 0–100."""
    if job.status == DONE:
        return 100
    return min(99, int(100 * job.bytes_read / job.size)) if job.size else 0


def iter_entries(job: ImportJob) -> Iterator[dict]:
    """The report's entries, skipped ones first (they are what needs attention)."""
    entries = report(job)
    yield from (e for e in entries if e["outcome"] != "imported")
    yield from (e for e in entries if e["outcome"] == "imported")
