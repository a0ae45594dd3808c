"""Conversation actions: send, retry, stop, rename, delete. No Flask request handling here."""

from __future__ import annotations

import base64
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.orm import joinedload

from . import images as images_module
from . import notes, quotas, rooms, search
from .errors import ChatError
from .extensions import commit_keeping_loaded, db
from .generation import current_generator
from .models import (
    ERROR,
    INTERRUPTED,
    MEMBER,
    NEW_TITLE,
    OWNER,
    ROLE_RANK,
    STOPPED,
    STREAMING,
    VIEWER,
    Conversation,
    Folder,
    Image,
    Message,
    Note,
    Preset,
    RoomMember,
    Tree,
    User,
    path_up,
    utcnow,
)
from .tokens import PER_MESSAGE_OVERHEAD, PromptMessage, count_tokens, trim_history

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


def role_in(conversation: Conversation, user_id: str | None) -> str | None:
    """The user's role in the conversation: owner, member, viewer, or None (no access)."""
    if user_id is None:
        return None
    if conversation.user_id == user_id:
        return OWNER
    query = select(RoomMember.role).where(RoomMember.conversation_id == conversation.id, RoomMember.user_id == user_id)
    return db.session.scalar(query)


def require_role(role: str | None, need: str) -> None:
    """A 404 ChatError without access, a 403 one saying why when the role is too low for ``need``."""
    if role is None:
        raise ChatError(NOT_FOUND, 404, "not_found")
    if ROLE_RANK[role] < ROLE_RANK[need]:
        raise ChatError(FORBIDDEN[need], 403, "forbidden", {"role": role, "needed": need})


FORBIDDEN = {
    MEMBER: "As a viewer you can read this conversation but not change it; ask its owner to make you a member.",
    OWNER: "Only the conversation's owner can do that.",
}


def conversation_access(user_id: str | None, conversation_id: int, need: str = VIEWER) -> Conversation:
    """The conversation if ``user_id`` has at least the role ``need`` in it (404 without access, 403 too low)."""
    conversation = db.session.get(Conversation, conversation_id)
    require_role(role_in(conversation, user_id) if conversation else None, need)
    assert conversation is not None
    return conversation


def message_access(user_id: str | None, message_id: int, need: str = VIEWER) -> Message:
    """The message if ``user_id`` has at least the role ``need`` in its conversation."""
    message = db.session.get(Message, message_id, options=[joinedload(Message.conversation)])  # one query
    require_role(role_in(message.conversation, user_id) if message else None, need)
    assert message is not None
    return message


def image_access(user_id: str | None, image_id: int) -> Image:
    """An attached image for whoever may read its conversation; a 404 ChatError otherwise."""
    image = db.session.get(Image, image_id)
    require_role(role_in(image.message.conversation, user_id) if image else None, VIEWER)
    assert image is not None
    return image


def owned_conversation(user_id: str | None, conversation_id: int) -> Conversation:
    """The conversation if ``user_id`` owns it; a ChatError otherwise (the same for every door)."""
    return conversation_access(user_id, conversation_id, OWNER)


def owned_message(user_id: str | None, message_id: int) -> Message:
    """The message if its conversation belongs to ``user_id``; a ChatError otherwise."""
    return message_access(user_id, message_id, OWNER)


def owned_image(user_id: str | None, image_id: int) -> Image:
    """An attached image for whoever may read its conversation (kept name: the page and the API call it)."""
    return image_access(user_id, image_id)


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
    user: User,
    content: str,
    images: Sequence[bytes] = (),
    fields: dict | None = None,
    folder_id: int | None = None,
    temporary: bool = False,
) -> tuple[Conversation, Sent]:
    """A new conversation opened by the user's first message (checked before anything is saved).

    ``fields`` are its settings, as ``starting_settings`` gives them (model, system prompt, settings);
    without them, a chat in a folder starts with the folder's. A temporary one is never listed.
    """
    content = _clean(content, bool(images))
    folder = owned_folder(user.id, folder_id) if folder_id is not None else None
    prepared = _prepare_images(images)
    images_module.check_quota(user.id, [len(p.data) for p in prepared])
    discard_temporary(user)  # starting another chat ends a temporary one
    conversation = Conversation(user_id=user.id, temporary=temporary)
    if fields is None:
        fields = starting_settings(user, None, folder)
    _apply(conversation, {key: value for key, value in fields.items() if key != "title"})
    if folder is not None:
        conversation.folder_id = folder.id
    conversation.set_title_from(content or "Image")
    db.session.add(conversation)
    db.session.flush()
    return conversation, _send(conversation, content, prepared, by=user.id)


def send(
    conversation: Conversation,
    content: str,
    images: Sequence[bytes] = (),
    parent_id: int | None = None,
    by: str | None = None,
) -> Sent:
    """Save the user's message (and images) and start the answer; a too-long one is saved, not sent.

    The message follows the visible path, or ``parent_id`` (a message of this conversation) if given.
    ``by`` is who sends it (a room member; default the owner): the author, and whose limits apply.
    """
    content = _clean(content, bool(images))
    _refuse_if_streaming(conversation)
    prepared = _prepare_images(images)
    images_module.check_quota(conversation.user_id, [len(p.data) for p in prepared])  # stored in the owner's room
    parent = None
    if parent_id is not None:
        parent = db.session.get(Message, parent_id)
        if parent is None or parent.conversation_id != conversation.id:
            raise ChatError(f"parent_id {parent_id} is not a message of this conversation.", 422, "invalid_parent")
    return _send(conversation, content, prepared, parent, by)


def _send(
    conversation: Conversation,
    content: str,
    prepared: list[images_module.Prepared],
    parent: Message | None = None,
    by: str | None = None,
) -> Sent:
    by = by or conversation.user_id
    _lock_room(conversation)
    tokens = count_tokens(content)
    parent, replaced_id = (parent, None) if parent is not None else _parent_for_new_message(conversation)
    user_message = Message(
        conversation_id=conversation.id,
        parent_id=parent.id if parent else None,
        role="user",
        content=content,
        token_count=tokens,
        author_id=by,
    )
    if not prepared:
        user_message.images = []  # known now: the prompt and the response do not read them back
    too_long = _too_long(tokens)
    if not too_long:
        quotas.check_can_start(by)  # before the message and its image files are saved
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
    return Sent(user_message, _answer(conversation, user_message, by, appended=True), replaced_id)


def edit(message: Message, content: str, by: str | None = None) -> Message:
    """A new version of a user message, beside the original, and a new answer to it.

    The original and everything that followed it stay stored as the other branch. In a room only
    the message's author (``by``) may edit it.
    """
    if message.role != "user":
        raise ChatError("Only your own messages can be edited; answers can be retried.", 422, "not_a_user_message")
    conversation = message.conversation
    by = by or conversation.user_id
    if message.author_id != by:
        raise ChatError(f"Only your own messages can be edited; this one is {message.author_name}'s.", 403, "forbidden")
    content = _clean(content)
    _refuse_if_streaming(conversation)
    tokens = count_tokens(content)
    too_long = _too_long(tokens)
    if too_long:
        limit = current_app.config["MAX_USER_MESSAGE_TOKENS"]
        raise ChatError(
            f"{too_long} Shorten it and save again.", 422, "message_too_long", {"tokens": tokens, "limit": limit}
        )
    quotas.check_can_start(by)
    version = Message(
        conversation_id=conversation.id,
        parent_id=message.parent_id,
        role="user",
        content=content,
        token_count=tokens,
        author_id=by,
    )
    db.session.add(version)
    db.session.flush()
    search.index_message(version)
    db.session.add_all(images_module.copy(image, version.id) for image in message.images)  # images stay
    return _answer(conversation, version, by)


def retry(answer: Message, model: str | None = None, by: str | None = None) -> Message:
    """Generate a new answer beside ``answer``, from the same history; ``model`` writes this one only
    (the conversation keeps its own model for the answers after it); ``by``: whose limits apply.
    """
    if answer.role != "assistant" or answer.parent_id is None:
        raise ChatError("Only answers can be retried.", 422, "not_an_answer")
    model = check_model(model.strip() or None) if model else None
    conversation = answer.conversation
    by = by or conversation.user_id
    _refuse_if_streaming(conversation)
    quotas.check_can_start(by)
    question = db.session.get(Message, answer.parent_id)
    if question is None:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return _answer(conversation, question, by, model=model)


def continue_answer(answer: Message, by: str | None = None) -> Message:
    """Let the model go on from a stopped or interrupted answer (or one an error cut off), appending to it."""
    cut_off = answer.status == ERROR and bool(answer.content)  # the model server failed after the first token
    if answer.role != "assistant" or not (answer.status in (STOPPED, INTERRUPTED) or cut_off):
        raise ChatError(
            "Only a stopped or interrupted answer can be continued (or one an error cut off after some text).",
            409,
            "not_continuable",
        )
    conversation = answer.conversation
    by = by or conversation.user_id
    _refuse_if_streaming(conversation)
    quotas.check_can_start(by)
    tree = Tree(conversation.id)
    history = tree.path(answer.parent_id) + [answer]
    answer.status, answer.error, answer.finish_reason = STREAMING, None, None
    answer.model, answer.provider = _model_for(conversation), current_generator().provider.name
    conversation.active_leaf_id = tree.newest_leaf(answer).id
    conversation.updated_at = answer.updated_at = utcnow()
    db.session.commit()
    prompt = build_prompt(history, conversation, PromptMessage("user", CONTINUE_PROMPT, count_tokens(CONTINUE_PROMPT)))
    current_generator().start(answer, prompt, prefix=answer.content, options=_options(conversation), user_id=by)
    rooms.answer_started(conversation, answer.id, False, by)
    return answer


def show(message: Message) -> Message:
    """Switch the conversation to this version: it and the latest path beneath it become visible."""
    tree = Tree(message.conversation_id)
    leaf = tree.newest_leaf(message)
    message.conversation.active_leaf_id = leaf.id
    db.session.commit()
    rooms.path_changed(message.conversation)
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


FEEDBACK_COMMENT_CHARS = 2000


def give_feedback(message: Message, rating: str | None, comment: str | None) -> None:
    """Thumbs up or down (or neither) on an answer, with an optional comment."""
    if message.role != "assistant":
        raise ChatError("Feedback is for answers only.", 422, "not_an_answer")
    if rating not in (None, "up", "down"):
        raise ChatError("rating must be up, down or empty.", 422, "invalid", {"fields": [{"field": "rating"}]})
    comment = (comment or "").strip() or None
    if comment and len(comment) > FEEDBACK_COMMENT_CHARS:
        raise ChatError(
            f"A comment can be at most {FEEDBACK_COMMENT_CHARS:,} characters; this one has {len(comment):,}.",
            422,
            "invalid",
            {"fields": [{"field": "comment"}], "limit": FEEDBACK_COMMENT_CHARS},
        )
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


def _lock_room(conversation: Conversation) -> None:
    """Take the conversation's row lock (PostgreSQL), so two senders in a room start one answer, not two."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(Conversation.id).where(Conversation.id == conversation.id).with_for_update())
        _refuse_if_streaming(conversation)


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
    """One answer at a time per conversation: a 409 saying whose message is being answered."""
    streaming = conversation.streaming_message()
    if streaming is None:
        return
    question = db.session.get(Message, streaming.parent_id) if streaming.parent_id else None
    who = question.author_name if question is not None else "someone"
    raise ChatError(
        f"An answer to {who} is still being written in this conversation. Stop it or wait for it to finish.",
        409,
        None,
        {"answering": who, "message_id": streaming.id},
    )


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


def _answer(
    conversation: Conversation,
    question: Message,
    by: str | None = None,
    appended: bool = False,
    model: str | None = None,
) -> Message:
    generator = current_generator()
    chosen = model if generator.provider.name != "local" else None  # one local model: nothing to choose
    options = _options(conversation) | ({"model": chosen} if chosen else {})
    answer = Message(
        conversation_id=conversation.id,
        parent_id=question.id,
        role="assistant",
        status=STREAMING,
        model=chosen or _model_for(conversation),
        provider=generator.provider.name,
        images=[],  # an answer has none: known now, not read back when it is shown
    )
    db.session.add(answer)
    db.session.flush()
    conversation.active_leaf_id = answer.id
    conversation.updated_at = utcnow()
    path = [question] if question.parent_id is None else conversation.path_to(question.id)  # a first one: no walk
    prompt = build_prompt(path, conversation)
    # One transaction for everything a send, edit or retry writes; the response shows these objects.
    commit_keeping_loaded()
    generator.start(answer, prompt, options=options, user_id=by)
    rooms.answer_started(conversation, answer.id, appended, by)
    return answer


def _sendable(path: list[Message]) -> list[Message]:
    """The messages of a path that go to the model: not empty, not refused."""
    return [m for m in path if (m.content or m.images) and not (m.role == "user" and m.status == ERROR)]


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
    sendable = _sendable(path)
    saved = _tool_notes([m.id for m in sendable if m.role == "assistant"])
    history: list[PromptMessage] = []
    for message in sendable:  # an answer that saved notes: its tool calls and their results, where they happened
        history += (
            notes.tool_messages(message, saved[message.id]) if message.id in saved else [_prompt_message(message)]
        )
    history += [extra] if extra else []
    trimmed = trim_history(system, history, config["MAX_HISTORY_TOKENS"])
    first = 1 if system else 0
    while len(trimmed) > first + 1 and trimmed[first].role == "tool":  # a result whose call was trimmed away
        del trimmed[first]
    return trimmed


def _tool_notes(answer_ids: list[int]) -> dict[int, list[Note]]:
    """The notes the assistant saved through tool calls, by the answer that saved them."""
    if not answer_ids:
        return {}
    found: dict[int, list[Note]] = {}
    query = select(Note).where(Note.message_id.in_(answer_ids), Note.tool_call_id.is_not(None))
    for note in db.session.scalars(query):
        found.setdefault(note.message_id or 0, []).append(note)
    return found


def parse_number(raw: str, field: str, kind: type, low: float, high: float | None) -> float | int | None:
    """A number typed in a form field: empty is None (the default); else a ``kind`` within [low, high]."""
    raw = raw.strip()
    if not raw:
        return None
    label = field.replace("_", " ").capitalize()
    try:
        value = kind(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
    except ValueError:
        whole = " whole" if kind is int else ""
        raise ChatError(
            f"{label} must be a{whole} number; “{raw[:20]}” is not.", 422, "invalid", {"field": field}
        ) from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise ChatError(f"{label} must be {bounds}.", 422, "invalid", {"field": field})
    return value


# -- what a new chat starts with -------------------------------------------------------------------------
def starting_settings(user: User, preset: Preset | None = None, folder: Folder | None = None) -> dict:
    """The settings a new conversation starts with: the chosen preset, else its folder's, else the operator's.

    Returned as ``create_conversation`` fields (model, system_prompt, settings); None is the operator's
    value (CHAT_MODEL, SYSTEM_PROMPT, the server's temperature, MAX_RESPONSE_TOKENS).
    """
    if preset is not None:
        if preset.user_id != user.id:
            raise ChatError(NOT_FOUND, 404, "not_found")
        return {
            "model": preset.model,
            "system_prompt": preset.system_prompt,
            "settings": {"temperature": preset.temperature, "max_tokens": preset.max_tokens},
        }
    if folder is not None and (folder.model or folder.system_prompt):
        return {
            "model": check_model(folder.model),
            "system_prompt": folder.system_prompt,
            "settings": {"temperature": None, "max_tokens": None},
        }
    # The operator's: nothing set on the conversation.
    return {"model": None, "system_prompt": None, "settings": {"temperature": None, "max_tokens": None}}


# -- the models on offer ---------------------------------------------------------------------------------
MODELS_TTL = 60.0  # seconds the upstream's model list is kept before it is asked again


def available_models() -> list[str]:
    """The models a conversation may choose: the upstream's list (kept briefly), limited by ``ALLOWED_MODELS``.

    When the list cannot be had, the provider falls back to the configured model; with
    ``ALLOWED_MODELS`` set, those names are offered whatever the upstream lists.
    """
    cache = current_app.extensions.setdefault("chatapp.models", {})
    if cache.get("until", 0.0) < time.monotonic():
        cache["names"] = list(dict.fromkeys(current_generator().provider.models()))
        cache["until"] = time.monotonic() + MODELS_TTL
    listed: list[str] = cache["names"]
    allowed = allowed_models()
    if not allowed:
        return listed
    return [name for name in allowed if name in listed] or allowed


# -- the token meter -------------------------------------------------------------------------------------
@dataclass
class Meter:
    """How a draft stands against the limits: its tokens, the context the next prompt fills, what is left out."""

    draft_tokens: int
    message_limit: int  # MAX_USER_MESSAGE_TOKENS: a longer message is refused
    prompt_tokens: int  # system prompt + the history that fits + the draft, as the next request would hold
    budget: int  # MAX_HISTORY_TOKENS
    history_messages: int  # earlier messages of the visible path that could be sent
    left_out: int  # of those, the oldest ones that will not be sent (over the budget)

    @property
    def too_long(self) -> bool:
        """The draft would be refused as too long."""
        return self.draft_tokens > self.message_limit

    @property
    def percent(self) -> int:
        """How full the context budget is, 0–100."""
        return min(100, round(100 * self.prompt_tokens / self.budget)) if self.budget else 100

    def as_dict(self) -> dict:
        """JSON-ready, for the API."""
        return {
            "draft_tokens": self.draft_tokens,
            "message_limit": self.message_limit,
            "too_long": self.too_long,
            "prompt_tokens": self.prompt_tokens,
            "budget": self.budget,
            "percent": self.percent,
            "history_messages": self.history_messages,
            "left_out": self.left_out,
        }


def meter(conversation: Conversation | None, draft: str, starting: dict | None = None) -> Meter:
    """The meter for ``draft`` as the next message of ``conversation`` (None: a new chat), counted as a send would.

    Reads the token counts along the visible path in one query (small columns, no text), not the messages.
    ``starting``: a new chat's ``starting_settings`` (its system prompt counts).
    """
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if len(draft) > limit:
        raise ChatError(
            f"This draft is {len(draft):,} characters long; the limit is {limit:,}.", 413, "too_large", {"limit": limit}
        )
    draft = draft.strip()
    tokens = count_tokens(draft)
    config = current_app.config
    sizes = _path_sizes(conversation) if conversation is not None else []
    own = conversation.system_prompt if conversation else (starting or {}).get("system_prompt")
    system_text = own or config["SYSTEM_PROMPT"]
    budget = config["MAX_HISTORY_TOKENS"]
    # As trim_history: the system prompt and the draft always; then the newest history that fits.
    used = tokens + PER_MESSAGE_OVERHEAD + (count_tokens(system_text) + PER_MESSAGE_OVERHEAD if system_text else 0)
    kept = 0
    for size in reversed(sizes):
        if used + size + PER_MESSAGE_OVERHEAD > budget:
            break
        used += size + PER_MESSAGE_OVERHEAD
        kept += 1
    return Meter(
        draft_tokens=tokens,
        message_limit=config["MAX_USER_MESSAGE_TOKENS"],
        prompt_tokens=used,
        budget=budget,
        history_messages=len(sizes),
        left_out=len(sizes) - kept,
    )


def _path_sizes(conversation: Conversation) -> list[int]:
    """The tokens of each sendable message of the visible path, root first, as a prompt counts them.

    One query: the path walked up from the active leaf in SQL, with each message's stored token count.
    """
    if conversation.active_leaf_id is None:
        return []
    rows = db.session.execute(_path_sizes_query(), conversation.on_path(conversation.active_leaf_id))
    return [
        (counted if counted is not None else count_tokens(text or "")) + images_module.IMAGE_TOKENS * images
        for role, status, counted, length, text, images in rows
        if (length or images) and not (role == "user" and status == ERROR)  # as _sendable leaves them out
    ]


@functools.cache
def _path_sizes_query() -> Select:
    """Built once, like ``path_up`` (bound per conversation): the meter asks at every pause in typing."""
    path = path_up()
    pictures = select(func.count(Image.id)).where(Image.message_id == Message.id).correlate(Message).scalar_subquery()
    return (
        select(
            Message.role,
            Message.status,
            Message.token_count,
            func.length(Message.content),
            case((Message.token_count.is_(None), Message.content), else_=None),  # text only when not yet counted
            pictures,
        )
        .join(path, path.c.id == Message.id)
        .order_by(path.c.depth.desc())
    )


def recent_feedback(limit: int = 50) -> list[tuple[Message, Conversation, User]]:
    """Rated or commented answers of every user, the newest answers first (for admins)."""
    query = (
        select(Message, Conversation, User)
        .join(Conversation, Message.conversation_id == Conversation.id)
        .join(User, Conversation.user_id == User.id)
        .where(or_(Message.feedback_rating.is_not(None), Message.feedback_comment.is_not(None)))
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return [(message, conversation, user) for message, conversation, user in db.session.execute(query)]
