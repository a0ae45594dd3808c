"""Notes beside a conversation: the assistant saves them through its ``save_note`` tool, the user by hand.

One core for every door: ownership, validation and limits live here, and each change reaches the
search index in the same transaction (a deleted note's entry goes with it: the foreign key cascades).
The tool's side (its definition, storing what a tool call asks, the per-process memory of models that
refuse tools, and the tool call and result replayed in later prompts) lives here too.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Mapping

from flask import current_app
from sqlalchemy import select

from . import search
from .errors import ChatError
from .extensions import db
from .models import Conversation, Message, Note, utcnow
from .tokens import PromptMessage, count_tokens

MAX_NOTE_CHARS = 10_000  # a note longer than this is refused (413); a saved message is cut to it
TOOL_NAME = "save_note"
SAVE_NOTE_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Save a short note for the user in the Notes panel beside this conversation: an idea, a fact, "
            "a decision or a to-do worth keeping. The note is shown apart from your answer, so do not "
            "repeat it in the answer."
        ),
        "parameters": {
            "type": "object",
            "properties": {"content": {"type": "string", "description": "The note's text (Markdown allowed)."}},
            "required": ["content"],
            "additionalProperties": False,
        },
    },
}
NOT_FOUND = "Not found: it may have been deleted, or it belongs to someone else."

_toolless: set[tuple[str, str]] = set()  # (upstream, model) that refused ``tools``, in this process
_toolless_lock = threading.Lock()


# -- the user's side ---------------------------------------------------------------------------------
def owned_note(user_id: str | None, note_id: int) -> Note:
    """The note if its conversation belongs to ``user_id``; a 404 ChatError otherwise."""
    note = db.session.get(Note, note_id)
    if note is None or user_id is None or note.conversation.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return note


def list_notes(conversation: Conversation) -> list[Note]:
    """The conversation's notes, oldest first."""
    return list(db.session.scalars(select(Note).where(Note.conversation_id == conversation.id).order_by(Note.id)))


def add_note(conversation: Conversation, content: str | None, message_id: int | None = None) -> Note:
    """A note of the user's; with ``message_id`` (a message of this conversation) its text unless given."""
    message = None
    if message_id is not None:
        message = db.session.get(Message, message_id)
        if message is None or message.conversation_id != conversation.id:
            raise ChatError(
                f"message_id {message_id} is not a message of this conversation.",
                422,
                "invalid_message",
                {"fields": [{"field": "message_id"}]},
            )
        if content is None or not content.strip():
            content = message.content[:MAX_NOTE_CHARS]
    note = Note(
        conversation_id=conversation.id,
        message_id=message.id if message else None,
        content=_clean(content or ""),
        source="user",
    )
    db.session.add(note)
    search.index_note(note)
    db.session.commit()
    return note


def save_message(message: Message) -> Note:
    """ "Save to notes": a note holding the message's text."""
    if not message.content.strip():
        raise ChatError("This message has no text to save.", 422, "empty_note")
    return add_note(message.conversation, None, message.id)


def edit_note(note: Note, content: str) -> Note:
    """Change a note's text (the assistant's notes too: later prompts show the text as it is now)."""
    note.content = _clean(content)
    note.updated_at = utcnow()
    search.index_note(note)
    db.session.commit()
    return note


def delete_note(note: Note) -> None:
    """Delete a note."""
    db.session.delete(note)
    db.session.commit()


def _clean(content: str) -> str:
    """The note's text, checked the same for every door: not empty, not over MAX_NOTE_CHARS."""
    if len(content) > MAX_NOTE_CHARS:
        raise ChatError(
            f"This note is {len(content):,} characters long; the limit is {MAX_NOTE_CHARS:,}. Shorten it.",
            413,
            "too_large",
            {"fields": [{"field": "content"}], "limit": MAX_NOTE_CHARS},
        )
    content = content.strip()
    if not content:
        raise ChatError("Type the note before saving it.", 422, "empty_note", {"fields": [{"field": "content"}]})
    return content


# -- the assistant's side --------------------------------------------------------------------------
def tool_mode(config: Mapping | None = None) -> str:
    """``NOTES_TOOL``: auto (offer the tool; drop it for models that refuse it), on, or off."""
    mode = str((config if config is not None else current_app.config).get("NOTES_TOOL") or "auto").lower()
    return mode if mode in ("auto", "on", "off") else "auto"


def offers_tool(mode: str, upstream: str, provider_name: str, model: str) -> bool:
    """Whether a request to ``model`` on ``upstream`` carries the tool (never for the local model)."""
    if mode == "off" or provider_name == "local":
        return False
    if mode == "auto":
        with _toolless_lock:
            return (upstream, model) not in _toolless
    return True


def remember_toolless(upstream: str, model: str) -> None:
    """This model refused ``tools``: ask it without them from now on (this process)."""
    with _toolless_lock:
        _toolless.add((upstream, model))


def forget_toolless() -> None:
    """Forget which models refused tools (tests, and a changed upstream)."""
    with _toolless_lock:
        _toolless.clear()


def store_tool_call(conversation_id: int, message_id: int, call: dict, offset: int) -> tuple[Note | None, str]:
    """Store what one ``save_note`` call asks for; the note (None if refused) and the tool's result text.

    ``call`` is ``{"id", "name", "arguments"}`` as streamed (arguments: JSON text).
    """
    if call.get("name") != TOOL_NAME:
        return None, f"Unknown tool {call.get('name')!r}; the only tool is {TOOL_NAME}."
    try:
        arguments = json.loads(call.get("arguments") or "{}")
        content = arguments.get("content") if isinstance(arguments, dict) else None
    except ValueError:
        content = None
    if not isinstance(content, str) or not content.strip():
        return None, 'Not saved: call save_note with {"content": "the note\'s text"}.'
    note = Note(
        conversation_id=conversation_id,
        message_id=message_id,
        content=content.strip()[:MAX_NOTE_CHARS],
        source="assistant",
        tool_call_id=str(call.get("id") or "")[:200] or None,
        answer_offset=offset,
    )
    db.session.add(note)
    search.index_note(note)
    db.session.commit()
    return note, tool_result(note)


def note_json(note: Note) -> dict:
    """The note as the API, the streams and the WebSocket send it (JSON-ready)."""
    from .schemas import NoteOut

    return NoteOut.from_note(note)


def tool_result(note: Note) -> str:
    """What the tool answers for a saved note."""
    return f"Saved to the user's notes (note {note.id})."


def tool_messages(answer: Message, notes: list[Note]) -> list[PromptMessage]:
    """An answer as the model wrote it: text, the tool calls where they happened with their results, text."""
    calls = sorted((n for n in notes if n.tool_call_id), key=lambda n: (n.answer_offset or 0, n.id))
    text = answer.content
    messages: list[PromptMessage] = []
    by_offset: dict[int, list[Note]] = defaultdict(list)
    for note in calls:
        by_offset[min(max(note.answer_offset or 0, 0), len(text))].append(note)
    start = 0
    for offset in sorted(by_offset):
        group = by_offset[offset]
        piece = text[start:offset]
        arguments = [json.dumps({"content": n.content}) for n in group]
        tool_calls = [
            {"id": n.tool_call_id, "type": "function", "function": {"name": TOOL_NAME, "arguments": a}}
            for n, a in zip(group, arguments, strict=True)
        ]
        tokens = count_tokens(piece) + sum(count_tokens(a) for a in arguments)
        messages.append(PromptMessage("assistant", piece or None, tokens, {"tool_calls": tool_calls}))
        for n in group:
            result = tool_result(n)
            messages.append(PromptMessage("tool", result, count_tokens(result), {"tool_call_id": n.tool_call_id}))
        start = offset
    rest = text[start:]
    if rest or not messages:
        messages.append(PromptMessage("assistant", rest, count_tokens(rest)))
    return messages


def without_tools(prompt: list[dict]) -> list[dict]:
    """The prompt for a model asked without the tool: tool calls and results left out, the text kept."""
    out: list[dict] = []
    for message in prompt:
        if message["role"] == "tool":
            continue
        if message.get("tool_calls") is not None:
            message = {"role": message["role"], "content": message.get("content") or ""}
        if out and out[-1]["role"] == "assistant" and message["role"] == "assistant":
            out[-1] = {"role": "assistant", "content": (out[-1]["content"] or "") + (message["content"] or "")}
            continue
        if message["role"] == "assistant" and not message["content"]:
            continue
        out.append(message)
    return out
