"""Read-only share links: create, list, revoke, resolve (who may see what, and which messages), fork.

One core for every door: the pages (``views/share.py``) and the JSON API call these, so the checks
and the errors are the same everywhere. A link is a random token stored on the server; each is
revoked on its own. A snapshot shows the conversation as it was when the link was made; a live link
follows the owner's conversation as it grows (``follow_live``: what its page's one event stream carries).
"""

from __future__ import annotations

import hashlib
import queue
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from . import images as images_module
from .errors import ChatError
from .events import Ping
from .extensions import db
from .models import (
    INTERRUPTED,
    STOPPED,
    STREAMING,
    Conversation,
    Image,
    Message,
    ShareLink,
    Siblings,
    Tree,
    User,
    utcnow,
)
from .streaming_markdown import AnswerEvent, pump_answer

SNAPSHOT, LIVE = "snapshot", "live"
KINDS = (SNAPSHOT, LIVE)
ANYONE, ACCOUNTS = "anyone", "accounts"
VISIBILITIES = (ANYONE, ACCOUNTS)
MAX_LINKS = 20  # links in use per conversation: enough for anyone, and a bound on the table
TOKEN_LENGTH = 64  # the column; a longer "token" names no link
# The fields of an answer that may still change after a snapshot (streaming, or continued later).
FROZEN_FIELDS = (
    "content",
    "status",
    "error",
    "finish_reason",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
)
WATCH_EVERY = 1.0  # seconds between a live viewer's looks for new messages
WATCH_FOR = 600.0  # seconds a live page's stream stays open; the browser reconnects (and the link is checked again)
STILL_WRITING = "It was still being written when this link was made; this is the text up to then."
COPIED_WRITING = "It was still being written when this was copied; the text up to then is kept."

NO_LINK = "There is no such share link: check that it was copied whole."
REVOKED = "This share link was turned off by the person who shared it. Ask them for a new one."
EXPIRED = "This share link has expired. Ask the person who shared it for a new one."
SIGN_IN = "Only signed-in users can see this shared conversation: sign in, then open the link again."
ACCOUNT_NEEDED = (
    "Only signed-in users can see this shared conversation, and you are a guest: sign in or sign up, "
    "then open the link again."
)
GENERIC_TITLE = "A shared conversation"
GENERIC_DESCRIPTION = "A conversation shared with signed-in users of chatapp. Sign in to read it."


class Frozen:
    """A message as a snapshot shows it: the stored row, with the fields it had when the link was made."""

    def __init__(self, message: Message, fields: dict[str, Any]) -> None:
        self._message = message
        self._fields = fields

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401  # whatever the message's attribute is
        """The field as it was, else the message's own (id, role, images, author_name…)."""
        fields = self.__dict__["_fields"]
        return fields[name] if name in fields else getattr(self.__dict__["_message"], name)

    @property
    def is_streaming(self) -> bool:
        """Never: a snapshot does not move."""
        return False


Shown = Message | Frozen


@dataclass
class View:
    """What a link shows: its conversation's visible path (or the version asked for) with "‹ 2 / 3 ›" positions."""

    link: ShareLink
    conversation: Conversation
    visible: list[tuple[Shown, Siblings]]
    leaf_id: int | None  # the version asked for (``?leaf=``), None: the default path

    @property
    def streaming(self) -> Shown | None:
        """The answer being written on the path shown, if any (live links only)."""
        return next((m for m, _ in self.visible if m.is_streaming), None)


# -- the owner's side ------------------------------------------------------------------------------------
def create(
    conversation: Conversation,
    kind: str = LIVE,
    visibility: str = ANYONE,
    expires_at: datetime | None = None,
    allow_indexing: bool = False,
) -> ShareLink:
    """A new link to the conversation (the caller has checked it is the user's own)."""
    if kind not in KINDS:
        raise _invalid("kind", f"kind must be {' or '.join(KINDS)}; {kind!r} was sent.")
    if visibility not in VISIBILITIES:
        raise _invalid("visibility", f"visibility must be {' or '.join(VISIBILITIES)}; {visibility!r} was sent.")
    if expires_at is not None:
        try:
            expires_at = expires_at.astimezone(UTC).replace(tzinfo=None) if expires_at.tzinfo else expires_at
        except OverflowError:  # e.g. the last day of year 9999 with a negative offset
            raise _invalid("expires_at", "expires_at is out of range: give a time before the year 9999.") from None
        if expires_at <= utcnow():
            raise _invalid(
                "expires_at", "expires_at must be in the future (or left out for a link that does not expire)."
            )
    if len(links(conversation)) >= MAX_LINKS:
        raise ChatError(
            f"This conversation already has {MAX_LINKS} share links. Turn off one you no longer need first.",
            409,
            "too_many_links",
            {"limit": MAX_LINKS},
        )
    link = ShareLink(
        token=secrets.token_urlsafe(24),
        conversation_id=conversation.id,
        kind=kind,
        visibility=visibility,
        expires_at=expires_at,
        allow_indexing=bool(allow_indexing),
    )
    if kind == SNAPSHOT:
        link.last_message_id = db.session.scalar(
            select(func.max(Message.id)).where(Message.conversation_id == conversation.id)
        )
        link.leaf_id = conversation.active_leaf_id
        changing = select(Message).where(
            Message.conversation_id == conversation.id, Message.status.in_((STREAMING, STOPPED, INTERRUPTED))
        )
        link.frozen = {str(m.id): _frozen_fields(m) for m in db.session.scalars(changing)}
    db.session.add(link)
    db.session.commit()
    return link


def _frozen_fields(message: Message) -> dict[str, Any]:
    fields = {name: getattr(message, name) for name in FROZEN_FIELDS}
    if message.status == STREAMING:
        fields.update(status=INTERRUPTED, error=STILL_WRITING)
    return fields


def _invalid(field: str, message: str) -> ChatError:
    return ChatError(message, 422, "invalid", {"fields": [{"field": field}]})


def links(conversation: Conversation) -> list[ShareLink]:
    """The conversation's links that are not revoked (expired ones too), newest first."""
    query = select(ShareLink).where(ShareLink.conversation_id == conversation.id, ShareLink.revoked_at.is_(None))
    return list(db.session.scalars(query.order_by(ShareLink.id.desc())))


def owned_link(user_id: str | None, token: str) -> ShareLink:
    """The link if its conversation belongs to ``user_id``; a 404 otherwise (also once revoked)."""
    link = _find(token)
    if link is None or user_id is None or link.conversation.user_id != user_id or link.revoked_at is not None:
        raise ChatError(NO_LINK, 404, "not_found")
    return link


def revoke(link: ShareLink) -> None:
    """Turn the link off: from now on it shows nothing, and says so."""
    link.revoked_at = utcnow()
    db.session.commit()


def is_expired(link: ShareLink) -> bool:
    """True once the link's expiry has passed."""
    return link.expires_at is not None and link.expires_at <= utcnow()


# -- the viewer's side -----------------------------------------------------------------------------------
def _find(token: str) -> ShareLink | None:
    if not token or len(token) > TOKEN_LENGTH:
        return None
    return db.session.scalar(select(ShareLink).where(ShareLink.token == token))


def resolve(token: str, viewer: User | None) -> ShareLink:
    """The link, if ``viewer`` (None: nobody signed in) may see it; else the ChatError every door sends.

    Unknown, revoked or expired: 404 saying which. "Signed-in users only": 401 for nobody, 403 for a guest.
    """
    link = _find(token)
    if link is None:
        raise ChatError(NO_LINK, 404, "not_found")
    if link.revoked_at is not None:
        raise ChatError(REVOKED, 404, "share_revoked")
    if is_expired(link):
        raise ChatError(EXPIRED, 404, "share_expired")
    if link.visibility == ACCOUNTS:
        if viewer is None:
            raise ChatError(SIGN_IN, 401, "sign_in_required")
        if viewer.is_guest:
            raise ChatError(ACCOUNT_NEEDED, 403, "account_required")
    return link


def _tree(link: ShareLink) -> Tree:
    """The conversation's messages the link may show: for a snapshot, those that existed when it was made."""
    tree = Tree(link.conversation_id)
    if link.kind == SNAPSHOT:
        last = link.last_message_id or 0
        tree.by_id = {i: m for i, m in tree.by_id.items() if i <= last}
        kept = {parent: [m for m in children if m.id <= last] for parent, children in tree.children.items()}
        tree.children = defaultdict(list, kept)
    return tree


def view(link: ShareLink, leaf_id: int | None = None) -> View:
    """The path the link shows: the owner's (live) or the one at creation (snapshot), or the version
    ``leaf_id`` (a message the link shows) and the latest path beneath it. The owner's view is untouched."""
    tree = _tree(link)
    conversation = link.conversation
    leaf = conversation.active_leaf_id if link.kind == LIVE else link.leaf_id
    if leaf_id is not None:
        chosen = tree.by_id.get(leaf_id)
        if chosen is None:
            raise ChatError(
                "That version is not part of this shared conversation. Open the link without ?leaf= to see it.",
                404,
                "not_found",
                {"fields": [{"field": "leaf"}]},
            )
        leaf = tree.newest_leaf(chosen).id
    frozen = link.frozen or {}
    visible: list[tuple[Shown, Siblings]] = []
    for message in tree.path(leaf):
        fields = frozen.get(str(message.id))
        visible.append((Frozen(message, fields) if fields else message, tree.siblings(message)))
    return View(link, conversation, visible, leaf_id)


def description(link: ShareLink, shown: View | None = None) -> tuple[str, str]:
    """The Open Graph title and description: nothing of the conversation for a "signed-in users only" link."""
    if link.visibility == ACCOUNTS:
        return GENERIC_TITLE, GENERIC_DESCRIPTION
    first = next((m.content for m, _ in (shown.visible if shown else []) if m.role == "user" and m.content), "")
    text = " ".join(first.split())
    if len(text) > 200:
        text = text[:200].rsplit(" ", 1)[0] + "…"
    return link.conversation.title, text or "A conversation shared from chatapp."


def answer(link: ShareLink, message_id: int) -> Message:
    """An answer of a live link's conversation, to follow as it is written; a 404 otherwise."""
    message = db.session.get(Message, message_id)
    if link.kind != LIVE or message is None or message.conversation_id != link.conversation_id:
        raise ChatError("Not found: this share link shows no such answer.", 404, "not_found")
    return message


def image(link: ShareLink, image_id: int) -> Image:
    """An image of a message the link shows (any version); a 404 otherwise."""
    found = db.session.get(Image, image_id)
    message = found.message if found is not None else None
    if found is None or message is None or message.conversation_id != link.conversation_id:
        raise ChatError("Not found: this share link shows no such image.", 404, "not_found")
    if link.kind == SNAPSHOT and message.id > (link.last_message_id or 0):
        raise ChatError("Not found: this share link shows no such image.", 404, "not_found")
    return found


def state_key(state: tuple[int | None, datetime] | None) -> str:
    """A short name for a live link's state (``changes``), for the page to say which one it shows."""
    return hashlib.blake2s(repr(state).encode(), digest_size=8).hexdigest()


def changes(link_id: int) -> tuple[int | None, datetime] | None:
    """What a live viewer's page compares to notice new messages: the owner's path and the last activity;
    None once the link stops working (revoked, expired, or its conversation deleted). One query."""
    row = db.session.execute(
        select(ShareLink.revoked_at, ShareLink.expires_at, Conversation.active_leaf_id, Conversation.updated_at)
        .join(Conversation, Conversation.id == ShareLink.conversation_id)
        .where(ShareLink.id == link_id)
    ).one_or_none()
    if row is None or row[0] is not None or (row[1] is not None and row[1] <= utcnow()):
        return None
    return row[2], row[3]


@dataclass(frozen=True)
class Changed:
    """The owner's path or its messages changed (``changes`` went from one state to ``state``): the page
    shows the link's messages again."""

    state: tuple[int | None, datetime]


@dataclass(frozen=True)
class Gone:
    """The link stopped working while its page was open (revoked, expired, or its conversation deleted)."""


LiveUpdate = Changed | Gone | AnswerEvent | Ping


def follow_live(link_id: int, shown: str | None = None) -> Iterator[LiveUpdate]:
    """Everything a live link's page must show, for its one event stream: the messages again when the
    owner's path changes (a look every ``WATCH_EVERY``), and the answer being written on that path as it
    grows. ``shown``: the ``state_key`` of what the page shows, so what changed before the stream began
    (or while it reconnected) is shown at once. The answer is followed from its start each time the
    messages are shown again (the first render replaces what the page shows of it), so it never depends
    on which render the page got. Ends when the link stops working, or after ``WATCH_FOR`` (the browser
    reconnects, and the link is checked again)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the app itself, for threads
    updates: queue.Queue[tuple[threading.Event, AnswerEvent]] = queue.Queue()
    following = threading.Event()  # set once the answer followed now is no longer wanted

    def follow_streaming() -> None:
        nonlocal following
        following.set()  # what an earlier answer's thread still puts is dropped
        following = tag = threading.Event()
        answer = _streaming_answer(link_id)
        if answer is not None:
            pump_answer(app, answer, 0, lambda update: updates.put((tag, update)), tag, resumed=True)

    seen = changes(link_id)
    if seen is None:  # stopped working since the page was shown
        yield Gone()
        return
    if shown is not None and shown != state_key(seen):
        yield Changed(seen)
    follow_streaming()
    db.session.close()
    started = time.monotonic()
    look_at = started + WATCH_EVERY
    try:
        yield Ping()
        while time.monotonic() - started < WATCH_FOR:
            wait = look_at - time.monotonic()
            if wait > 0:  # the answer's updates until the next look (the looks go on while it streams)
                try:
                    tag, update = updates.get(timeout=wait)
                except queue.Empty:
                    continue
                if not tag.is_set():
                    yield update
                continue
            look_at = time.monotonic() + WATCH_EVERY
            now = changes(link_id)
            if now is None:
                yield Gone()
                return
            if now != seen:
                seen = now
                yield Changed(now)
                follow_streaming()
            else:
                yield Ping()
            db.session.close()
    finally:
        following.set()


def _streaming_answer(link_id: int) -> int | None:
    """The answer being written on a live link's path, if any."""
    link = db.session.get(ShareLink, link_id)
    if link is None or link.kind != LIVE:
        return None
    found = view(link).streaming
    return found.id if found is not None else None


# -- continue in my chats --------------------------------------------------------------------------------
def fork(link: ShareLink, viewer: User, leaf_id: int | None = None) -> Conversation:
    """Copy the path the viewer sees into a new conversation of theirs; the original is untouched.

    Only what the viewer sees is copied: the messages (an answer still being written as interrupted,
    to continue), their images, the title; not the owner's system prompt or settings.
    """
    shown = view(link, leaf_id)
    sizes = [i.size for m, _ in shown.visible for i in m.images]
    images_module.check_quota(viewer.id, sizes)
    copy = Conversation(user_id=viewer.id, title=shown.conversation.title)
    db.session.add(copy)
    db.session.flush()
    parent: Message | None = None
    for message, _siblings in shown.visible:
        status, error = message.status, message.error
        if status == STREAMING:
            status, error = INTERRUPTED, COPIED_WRITING
        copied = Message(
            conversation_id=copy.id,
            parent_id=parent.id if parent else None,
            role=message.role,
            author_id=viewer.id if message.role == "user" else None,  # the copy is theirs to edit
            content=message.content,
            status=status,
            error=error,
            token_count=message.token_count,
            model=message.model,
            provider=message.provider,
            ttft_ms=message.ttft_ms,
            duration_ms=message.duration_ms,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            finish_reason=message.finish_reason,
        )
        db.session.add(copied)
        db.session.flush()
        db.session.add_all(images_module.copy(image, copied.id) for image in message.images)
        parent = copied
    copy.active_leaf_id = parent.id if parent else None
    db.session.commit()
    return copy
