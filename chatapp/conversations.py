"""Conversation actions: send, retry, stop, rename, delete. No Flask request handling here."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from . import images as images_module
from . import quotas, search
from .errors import ChatError
from .extensions import db
from .generation import current_generator
from .models import (
    ERROR,
    INTERRUPTED,
    NEW_TITLE,
    STOPPED,
    STREAMING,
    Conversation,
    Folder,
    Image,
    Message,
    Tree,
    User,
    utcnow,
)
from .tokens import PromptMessage, count_tokens, trim_history

STOP_WAIT = 1.0  # seconds the stop action waits to report the stored result
# Sent after the partial answer when continuing it; portable across OpenAI-compatible servers,
# unlike "assistant prefill", which some servers ignore.
CONTINUE_PROMPT = "Continue your previous answer exactly where it stopped. Do not repeat anything."


@dataclass
class Sent:
    """What a send created: the user message, and the answer unless the message was refused."""

    user_message: Message
    answer: Message | None
    replaced_id: int | None = None  # a refused message that this one takes the place of


NOT_FOUND = "Not found: it may have been deleted, or it belongs to someone else."


def owned_conversation(user_id: str | None, conversation_id: int) -> Conversation:
    """The conversation if it belongs to ``user_id``; a 404 ChatError otherwise (the same for every door)."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or user_id is None or conversation.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return conversation


def owned_message(user_id: str | None, message_id: int) -> Message:
    """The message if its conversation belongs to ``user_id``; a 404 ChatError otherwise."""
    message = db.session.get(Message, message_id)
    if message is None or user_id is None or message.conversation.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return message


def owned_image(user_id: str | None, image_id: int) -> Image:
    """An attached image if its conversation belongs to ``user_id``; a 404 ChatError otherwise."""
    image = db.session.get(Image, image_id)
    if image is None or user_id is None or image.message.conversation.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return image


def owned_folder(user_id: str | None, folder_id: int) -> Folder:
    """The folder if it belongs to ``user_id``; a 404 ChatError otherwise."""
    folder = db.session.get(Folder, folder_id)
    if folder is None or user_id is None or folder.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return folder


def create_conversation(user: User, fields: dict | None = None) -> Conversation:
    """An empty conversation with the given title, model, system prompt, settings, folder (whose model
    and system prompt it starts with) and pinned/archived/temporary state."""
    fields = dict(fields or {})
    conversation = Conversation(user_id=user.id, temporary=bool(fields.pop("temporary", False)))
    discard_temporary(user)  # starting another chat ends a temporary one
    if fields.get("folder_id") is not None:
        folder = owned_folder(user.id, fields["folder_id"])
        fields.setdefault("model", folder.model)
        fields.setdefault("system_prompt", folder.system_prompt)
    _apply(conversation, fields)
    db.session.add(conversation)
    search.index_title(conversation)
    db.session.commit()
    return conversation


def update_conversation(conversation: Conversation, fields: dict) -> Conversation:
    """Change the fields sent (title, model, system_prompt, settings.temperature/max_tokens)."""
    _apply(conversation, fields)
    if "title" in fields:
        search.index_title(conversation)
    db.session.commit()
    return conversation


def _apply(conversation: Conversation, fields: dict) -> None:
    """Check the operator's bounds, then set only the fields that were sent."""
    if "title" in fields:
        title = " ".join((fields["title"] or "").split())
        if not title:
            raise ChatError("A title cannot be empty.", 422, "invalid", {"fields": [{"field": "title"}]})
        if len(title) > 200:
            raise ChatError(f"A title can be at most 200 characters; this one has {len(title)}.", 422)
        conversation.title = title
    if "model" in fields:
        conversation.model = check_model(fields["model"])
    if "system_prompt" in fields:
        conversation.system_prompt = fields["system_prompt"]
    if "folder_id" in fields:
        folder_id = fields["folder_id"]
        conversation.folder_id = owned_folder(conversation.user_id, folder_id).id if folder_id is not None else None
    if "pinned" in fields:
        conversation.pinned_at = (conversation.pinned_at or utcnow()) if fields["pinned"] else None
    if "archived" in fields:
        conversation.archived_at = (conversation.archived_at or utcnow()) if fields["archived"] else None
    settings = fields.get("settings") or {}
    if "temperature" in settings:
        conversation.temperature = settings["temperature"]
    if "max_tokens" in settings:
        conversation.max_tokens = _capped_max_tokens(settings["max_tokens"])


def check_model(model: str | None) -> str | None:
    """The model if the operator offers it (or offers any); a 422 naming the choices otherwise."""
    allowed = allowed_models()
    if model is not None and allowed and model not in allowed:
        raise ChatError(
            f"The model {model!r} is not offered here. Choose one of: {', '.join(allowed)}.",
            422,
            "model_not_allowed",
            {"fields": [{"field": "model"}], "allowed": allowed},
        )
    return model


def allowed_models() -> list[str]:
    """``ALLOWED_MODELS`` as a list (empty: any model name the upstream accepts)."""
    raw = current_app.config["ALLOWED_MODELS"] or ""
    names = raw if isinstance(raw, list | tuple) else raw.split(",")
    return [name.strip() for name in names if name.strip()]


def _capped_max_tokens(max_tokens: int | None) -> int | None:
    cap = current_app.config["MAX_RESPONSE_TOKENS"]
    if max_tokens is not None and max_tokens > cap:
        raise ChatError(
            f"max_tokens can be at most {cap:,} here (MAX_RESPONSE_TOKENS); {max_tokens:,} was asked for.",
            422,
            "invalid",
            {"fields": [{"field": "settings.max_tokens"}], "limit": cap},
        )
    return max_tokens


def list_conversations(user_id: str, limit: int, cursor: str | None = None) -> tuple[list[Conversation], str | None]:
    """A page of the user's conversations (archived ones too, temporary ones not), most recently active
    first, and the cursor of the next page."""
    query = select(Conversation).where(Conversation.user_id == user_id, Conversation.temporary.is_(False))
    if cursor:
        updated_at, last_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.updated_at < updated_at,
                and_(Conversation.updated_at == updated_at, Conversation.id < last_id),
            )
        )
    order = (Conversation.updated_at.desc(), Conversation.id.desc())
    rows = list(db.session.scalars(query.order_by(*order).limit(limit + 1)))
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode_cursor(conversation: Conversation) -> str:
    raw = f"{conversation.updated_at.isoformat()}|{conversation.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        updated_at, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        when, row = datetime.fromisoformat(updated_at), int(last_id)
        if when.tzinfo is not None or not 0 < row < 2**63:  # the API gives out naive UTC and real ids
            raise ValueError(cursor)
        return when, row
    except ValueError:
        raise ChatError("cursor is not one this API gave out; start without it.", 422) from None


def start_conversation(
    user: User, content: str, images: Sequence[bytes] = (), folder_id: int | None = None, temporary: bool = False
) -> tuple[Conversation, Sent]:
    """A new conversation opened by the user's first message (checked before anything is saved); in a
    folder it starts with the folder's model and system prompt; a temporary one is never listed."""
    content = _clean(content, bool(images))
    folder = owned_folder(user.id, folder_id) if folder_id is not None else None
    prepared = _prepare_images(images)
    images_module.check_quota(user.id, [len(p.data) for p in prepared])
    discard_temporary(user)  # starting another chat ends a temporary one
    conversation = Conversation(user_id=user.id, temporary=temporary)
    if folder is not None:
        conversation.folder_id, conversation.model = folder.id, check_model(folder.model)
        conversation.system_prompt = folder.system_prompt
    conversation.set_title_from(content or "Image")
    db.session.add(conversation)
    db.session.flush()
    return conversation, _send(conversation, content, prepared)


def send(conversation: Conversation, content: str, images: Sequence[bytes] = (), parent_id: int | None = None) -> Sent:
    """Save the user's message (and images) and start the answer; a too-long one is saved, not sent.

    The message follows the visible path, or ``parent_id`` (a message of this conversation) if given.
    """
    content = _clean(content, bool(images))
    _refuse_if_streaming(conversation)
    prepared = _prepare_images(images)
    images_module.check_quota(conversation.user_id, [len(p.data) for p in prepared])
    parent = None
    if parent_id is not None:
        parent = db.session.get(Message, parent_id)
        if parent is None or parent.conversation_id != conversation.id:
            raise ChatError(f"parent_id {parent_id} is not a message of this conversation.", 422, "invalid_parent")
    return _send(conversation, content, prepared, parent)


def _send(
    conversation: Conversation, content: str, prepared: list[images_module.Prepared], parent: Message | None = None
) -> Sent:
    tokens = count_tokens(content)
    parent, replaced_id = (parent, None) if parent is not None else _parent_for_new_message(conversation)
    user_message = Message(
        conversation_id=conversation.id,
        parent_id=parent.id if parent else None,
        role="user",
        content=content,
        token_count=tokens,
    )
    too_long = _too_long(tokens)
    if not too_long:
        quotas.check_can_start(conversation.user_id)  # before the message and its image files are saved
    if too_long:
        user_message.status = ERROR
        user_message.error = f"{too_long} It was saved but not sent: shorten it and send again."
    if parent is None and conversation.title == NEW_TITLE:  # a title given on creation stays
        conversation.set_title_from(content or "Image")
    db.session.add(user_message)
    db.session.flush()
    if parent is None:
        search.index_title(conversation)  # first: "newest first" is the order things were written in
    search.index_message(user_message)
    db.session.add_all(images_module.store(p, user_message.id) for p in prepared)
    if user_message.status == ERROR:
        conversation.active_leaf_id = user_message.id
        conversation.updated_at = utcnow()
        db.session.commit()
        return Sent(user_message, None, replaced_id)
    return Sent(user_message, _answer(conversation, user_message), replaced_id)


def edit(message: Message, content: str) -> Message:
    """A new version of a user message, beside the original, and a new answer to it.

    The original and everything that followed it stay stored as the other branch.
    """
    if message.role != "user":
        raise ChatError("Only your own messages can be edited; answers can be retried.", 422, "not_a_user_message")
    content = _clean(content)
    conversation = message.conversation
    _refuse_if_streaming(conversation)
    tokens = count_tokens(content)
    too_long = _too_long(tokens)
    if too_long:
        limit = current_app.config["MAX_USER_MESSAGE_TOKENS"]
        raise ChatError(
            f"{too_long} Shorten it and save again.", 422, "message_too_long", {"tokens": tokens, "limit": limit}
        )
    quotas.check_can_start(conversation.user_id)
    version = Message(
        conversation_id=conversation.id, parent_id=message.parent_id, role="user", content=content, token_count=tokens
    )
    db.session.add(version)
    db.session.flush()
    search.index_message(version)
    db.session.add_all(images_module.copy(image, version.id) for image in message.images)  # images stay
    return _answer(conversation, version)


def retry(answer: Message) -> Message:
    """Generate a new answer beside ``answer``, from the same history."""
    if answer.role != "assistant" or answer.parent_id is None:
        raise ChatError("Only answers can be retried.", 422, "not_an_answer")
    conversation = answer.conversation
    _refuse_if_streaming(conversation)
    quotas.check_can_start(conversation.user_id)
    question = db.session.get(Message, answer.parent_id)
    if question is None:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return _answer(conversation, question)


def continue_answer(answer: Message) -> Message:
    """Let the model go on from a stopped or interrupted answer, appending to the same message."""
    if answer.role != "assistant" or answer.status not in (STOPPED, INTERRUPTED):
        raise ChatError("Only a stopped or interrupted answer can be continued.", 409, "not_continuable")
    conversation = answer.conversation
    _refuse_if_streaming(conversation)
    quotas.check_can_start(conversation.user_id)
    tree = Tree(conversation.id)
    history = tree.path(answer.parent_id) + [answer]
    answer.status, answer.error, answer.finish_reason = STREAMING, None, None
    answer.model, answer.provider = _model_for(conversation), current_generator().provider.name
    conversation.active_leaf_id = tree.newest_leaf(answer).id
    conversation.updated_at = answer.updated_at = utcnow()
    db.session.commit()
    prompt = build_prompt(history, conversation, PromptMessage("user", CONTINUE_PROMPT, count_tokens(CONTINUE_PROMPT)))
    current_generator().start(answer, prompt, prefix=answer.content, options=_options(conversation))
    return answer


def show(message: Message) -> Message:
    """Switch the conversation to this version: it and the latest path beneath it become visible."""
    tree = Tree(message.conversation_id)
    leaf = tree.newest_leaf(message)
    message.conversation.active_leaf_id = leaf.id
    db.session.commit()
    return leaf


def branch_of(conversation: Conversation, message_id: int) -> int | None:
    """The leaf of the branch that holds this message (its latest path down), to show it read-only;
    None when the message is on the visible path. The stored visible path is not changed."""
    message = db.session.get(Message, message_id)
    if message is None or message.conversation_id != conversation.id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    if message_id in {message_id for message_id, _parent in conversation.path_ids()}:
        return None
    return Tree(conversation.id).newest_leaf(message).id


def stop(answer: Message) -> Message:
    """Stop a streaming answer (in whichever process runs it) and return its stored state."""
    if answer.status != STREAMING:
        return answer
    current_generator().stop(answer.id)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        db.session.refresh(answer)
        if answer.status != STREAMING:
            return answer
        db.session.rollback()  # release the snapshot so the next look sees the generator's write
        time.sleep(0.02)
    # Nobody finished it: its generator is gone. Keep what was flushed, as stopped.
    stale = utcnow() - timedelta(seconds=current_app.config["STALE_AFTER"])
    db.session.execute(
        update(Message)
        .where(Message.id == answer.id, Message.status == STREAMING, Message.updated_at < stale)
        .values(status=STOPPED, finish_reason=STOPPED)
    )
    db.session.commit()
    db.session.refresh(answer)
    return answer


def give_feedback(message: Message, rating: str | None, comment: str | None) -> None:
    """Thumbs up or down (or neither) on an answer, with an optional comment."""
    if message.role != "assistant":
        raise ChatError("Feedback is for answers only.", 422, "not_an_answer")
    message.feedback_rating, message.feedback_comment = rating, comment
    db.session.commit()


def rename(conversation: Conversation, title: str) -> None:
    """Give the conversation a title of the user's choosing."""
    update_conversation(conversation, {"title": title})


def delete(conversation: Conversation) -> None:
    """Delete the conversation with every message in it, stopping an answer in progress."""
    streaming = conversation.streaming_message()
    if streaming is not None:
        current_generator().stop(streaming.id)
    filenames = list(
        db.session.scalars(select(Image.filename).join(Message).where(Message.conversation_id == conversation.id))
    )
    db.session.delete(conversation)
    db.session.commit()
    images_module.remove_files(filenames)


def discard_temporary(user: User, keep: int | None = None) -> int:
    """Delete the user's temporary chats (with their images), but ``keep``: the user moved on."""
    if user.id is None:
        return 0
    query = select(Conversation).where(Conversation.user_id == user.id, Conversation.temporary.is_(True))
    if keep is not None:
        query = query.where(Conversation.id != keep)
    found = list(db.session.scalars(query))
    for conversation in found:
        delete(conversation)
    return len(found)


def purge_temporary(hours: float | None = None) -> int:
    """Delete temporary chats idle for ``TEMPORARY_CHAT_HOURS`` (with their images); how many."""
    hours = current_app.config["TEMPORARY_CHAT_HOURS"] if hours is None else hours
    if not hours or hours <= 0:
        return 0
    cutoff = utcnow() - timedelta(hours=hours)
    query = select(Conversation).where(Conversation.temporary.is_(True), Conversation.updated_at < cutoff)
    found = list(db.session.scalars(query.limit(500)))
    for conversation in found:
        delete(conversation)
    return len(found)


def _refuse_if_streaming(conversation: Conversation) -> None:
    if conversation.streaming_message() is not None:
        raise ChatError("An answer is still being written in this conversation. Stop it or wait for it to finish.", 409)


def _too_long(tokens: int) -> str | None:
    limit = current_app.config["MAX_USER_MESSAGE_TOKENS"]
    if tokens <= limit:
        return None
    return f"This message is {tokens:,} tokens long; the limit is {limit:,}."


def _clean(content: str, has_images: bool = False) -> str:
    """The message's text, checked the same for every door: not empty, not over MAX_MESSAGE_CHARS."""
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if len(content) > limit:
        raise ChatError(
            f"This message is {len(content):,} characters long; the limit is {limit:,}. Shorten it and send again.",
            413,
            "too_large",
            {"fields": [{"field": "content"}], "limit": limit},
        )
    content = content.strip()
    if not content and not has_images:
        raise ChatError("Type a message before sending.", 422, "empty_message", {"fields": [{"field": "content"}]})
    return content


def _prepare_images(images: Sequence[bytes]) -> list:
    """Check every image before anything is saved, so a bad one changes nothing."""
    limit = current_app.config["MAX_IMAGES"]
    if len(images) > limit:
        raise ChatError(f"{len(images)} images were attached; a message can carry at most {limit}.", 422)
    return [images_module.prepare(data, number) for number, data in enumerate(images, 1)]


def _parent_for_new_message(conversation: Conversation) -> tuple[Message | None, int | None]:
    """The active leaf to answer, and the id of a refused (too long) leaf the new message replaces."""
    leaf = db.session.get(Message, conversation.active_leaf_id) if conversation.active_leaf_id else None
    if leaf is not None and leaf.role == "user" and leaf.status == ERROR:
        parent = db.session.get(Message, leaf.parent_id) if leaf.parent_id else None
        return parent, leaf.id
    return leaf, None


def _answer(conversation: Conversation, question: Message) -> Message:
    generator = current_generator()
    answer = Message(
        conversation_id=conversation.id,
        parent_id=question.id,
        role="assistant",
        status=STREAMING,
        model=_model_for(conversation),
        provider=generator.provider.name,
    )
    db.session.add(answer)
    db.session.flush()
    conversation.active_leaf_id = answer.id
    conversation.updated_at = utcnow()
    prompt = build_prompt(Tree(conversation.id).path(question.id), conversation)
    db.session.commit()  # one transaction for everything a send, edit or retry writes
    generator.start(answer, prompt, options=_options(conversation))
    return answer


def _prompt_message(message: Message) -> PromptMessage:
    """A stored message for the model; images become ``image_url`` parts after the text."""
    tokens = message.token_count if message.token_count is not None else count_tokens(message.content)
    if not message.images:
        return PromptMessage(message.role, message.content, tokens)
    parts: list[dict] = [{"type": "text", "text": message.content}] if message.content else []
    parts += [{"type": "image_url", "image_url": {"url": images_module.data_url(i)}} for i in message.images]
    return PromptMessage(message.role, parts, tokens + images_module.IMAGE_TOKENS * len(message.images))


def _model_for(conversation: Conversation) -> str:
    provider = current_generator().provider
    return conversation.model if conversation.model and provider.name != "local" else provider.model


def _options(conversation: Conversation) -> dict:
    """The conversation's own generation settings."""
    return {"model": conversation.model, "temperature": conversation.temperature, "max_tokens": conversation.max_tokens}


def build_prompt(
    path: list[Message], conversation: Conversation | None = None, extra: PromptMessage | None = None
) -> list[PromptMessage]:
    """System prompt plus the path (and ``extra``), trimmed oldest-first to ``MAX_HISTORY_TOKENS``."""
    config = current_app.config
    system_text = conversation.system_prompt if conversation and conversation.system_prompt else config["SYSTEM_PROMPT"]
    system = PromptMessage("system", system_text, count_tokens(system_text)) if system_text else None
    sendable = [m for m in path if (m.content or m.images) and not (m.role == "user" and m.status == ERROR)]
    history = [_prompt_message(m) for m in sendable]
    history += [extra] if extra else []
    return trim_history(system, history, config["MAX_HISTORY_TOKENS"])
