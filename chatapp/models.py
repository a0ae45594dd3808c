"""Database models: users (guests and accounts), conversations and the message tree."""

from __future__ import annotations

import functools
import hashlib
import secrets
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Select,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    false,
    func,
    literal,
    nulls_last,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, aliased, joinedload, mapped_column, relationship, selectinload
from sqlalchemy.sql.elements import ColumnElement

from .extensions import Model, db

STREAMING, COMPLETE, STOPPED, ERROR, INTERRUPTED = (
    "streaming",
    "complete",
    "stopped",
    "error",
    "interrupted",
)
STATUSES = (STREAMING, COMPLETE, STOPPED, ERROR, INTERRUPTED)
TITLE_LENGTH = 60
SEEN_EVERY = timedelta(minutes=5)  # last_seen_at is written at most this often per user
NEW_TITLE = "New chat"
# Roles in a conversation shared as a room: the owner manages, a member sends, a viewer reads.
OWNER, MEMBER, VIEWER = "owner", "member", "viewer"
ROLE_RANK = {VIEWER: 0, MEMBER: 1, OWNER: 2}
DELETED_AUTHOR = "a deleted user"
DELETED_USER = DELETED_AUTHOR  # the name share links show for it too


def utcnow() -> datetime:
    """Naive UTC now; stored naive so SQLite and PostgreSQL compare alike."""
    return datetime.now(UTC).replace(tzinfo=None)


class User(Model):
    """A guest (no username) or an account; its id is carried in the signed session cookie."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    theme: Mapped[str | None] = mapped_column(String(8))  # "light", "dark"; None: follow the system
    username: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)  # None: a guest
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None: single sign-on only
    display_name: Mapped[str | None] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    disabled_at: Mapped[datetime | None]
    # Sessions carry the generation they were signed in with; bumping it signs every session out.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(index=True)  # updated at most every few minutes

    @property
    def is_guest(self) -> bool:
        """True for a guest identity (no account)."""
        return self.username is None

    @property
    def name(self) -> str:
        """What the pages call this user: the display name, the username, or e.g. "Guest 4821"."""
        if self.display_name:
            return self.display_name
        if self.username:
            return self.username
        return f"Guest {zlib.crc32((self.id or '').encode()) % 10000:04d}"

    def seen(self) -> None:
        """Note that the user is active (for the guest retention sweep), writing at most every few minutes."""
        now = utcnow()
        if self.id and (self.last_seen_at is None or now - self.last_seen_at >= SEEN_EVERY):
            self.last_seen_at = now
            db.session.commit()


class ApiToken(Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="API token")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @staticmethod
    def hash(token: str) -> str:
        """The stored form of a token."""
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user_id: str, name: str = "API token") -> tuple[ApiToken, str]:
        """A new token for the user: the row (unsaved) and the token itself, shown once."""
        token = "chat_" + secrets.token_urlsafe(32)
        return cls(user_id=user_id, token_hash=cls.hash(token), name=name), token

    @classmethod
    def user_for(cls, token: str) -> str | None:
        """The id of the user a token belongs to, or None (also for a disabled user); notes the user as seen."""
        user = cls.owner(token)
        return user.id if user is not None else None

    @classmethod
    def owner(cls, token: str) -> User | None:
        """The user a token belongs to, or None (also for a disabled user); notes the user as seen."""
        from .accounts import may_use  # the access policy (disabled users, guests off); it imports the models

        user = db.session.scalar(_token_owner(), {"token_hash": cls.hash(token)})
        if user is None or not may_use(user):
            return None
        user.seen()
        return user


@functools.cache
def _token_owner() -> Select:
    """The user of a token hash (bound as ``token_hash``): built once, as every API request asks it."""
    owned_by = ApiToken.user_id == User.id
    return select(User).join(ApiToken, owned_by).where(ApiToken.token_hash == bindparam("token_hash"))


class Invite(Model):
    """A single-use sign-up link made by an admin; only the token's SHA-256 is stored."""

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class ResetLink(Model):
    """A single-use password-reset link for one account, made by an admin; only the hash is stored."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Preset(Model):
    """A user's named set of conversation settings (and an opening prompt), picked when starting a chat."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))  # None: the operator's (CHAT_MODEL)
    system_prompt: Mapped[str | None] = mapped_column(Text)  # None: the operator's (SYSTEM_PROMPT)
    temperature: Mapped[float | None]
    max_tokens: Mapped[int | None]
    opening_prompt: Mapped[str | None] = mapped_column(Text)  # put in the composer of a new chat
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Model):
    """A conversation owned by one user; its messages form a tree."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default=NEW_TITLE)
    # Per-conversation choices (set through the API); None: the app's configuration.
    model: Mapped[str | None] = mapped_column(String(200))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None]
    max_tokens: Mapped[int | None]
    # The leaf of the path the user sees; the path is found by walking parent_id up from it.
    # No foreign key: conversation and message would reference each other, and the leaf is only
    # ever removed together with its conversation.
    active_leaf_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    pinned_at: Mapped[datetime | None]  # pinned chats come first in the sidebar, latest pinned on top
    archived_at: Mapped[datetime | None]  # archived chats leave the sidebar for the Archive page
    # A temporary chat is never listed or searchable, and is deleted when the user moves on.
    temporary: Mapped[bool] = mapped_column(default=False, server_default=false())
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folder.id", ondelete="SET NULL"), index=True)
    # The room's invite link (None: no link); whoever opens it joins with ``invite_role``.
    invite_token: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    invite_role: Mapped[str] = mapped_column(String(8), default=MEMBER, server_default=MEMBER)

    owner: Mapped[User] = relationship(foreign_keys=[user_id])
    members: Mapped[list[RoomMember]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", passive_deletes=True, order_by="RoomMember.id"
    )
    folder: Mapped[Folder | None] = relationship()

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        passive_deletes=True,
        foreign_keys="Message.conversation_id",
    )
    notes: Mapped[list[Note]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", passive_deletes=True, order_by="Note.id"
    )

    @classmethod
    def for_user(cls, user_id: str) -> list[Conversation]:
        """The user's sidebar: pinned first (latest pinned on top), then most recently active; archived
        and temporary chats are left out."""
        query = (
            select(cls)
            .where(cls.user_id == user_id, cls.archived_at.is_(None), cls.temporary == false())
            .order_by(nulls_last(cls.pinned_at.desc()), cls.updated_at.desc(), cls.id.desc())
        )
        return list(db.session.scalars(query))

    @classmethod
    def for_sidebar(cls, user_id: str) -> list[Conversation]:
        """The sidebar: the user's conversations (as ``for_user``: pinned first, no archived or temporary
        ones) and the rooms they joined, most recently active first."""
        joined = select(RoomMember.conversation_id).where(RoomMember.user_id == user_id)
        mine = and_(cls.user_id == user_id, cls.archived_at.is_(None), cls.temporary == false())
        query = (
            select(cls)
            .where(or_(mine, cls.id.in_(joined)))
            .order_by(nulls_last(cls.pinned_at.desc()), cls.updated_at.desc(), cls.id.desc())
        )
        return list(db.session.scalars(query))

    def path(self) -> list[Message]:
        """The visible messages, root first, loaded in one query."""
        return Tree(self.id).path(self.active_leaf_id)

    def visible(self) -> list[tuple[Message, Siblings]]:
        """The visible messages with their "‹ 2 / 3 ›" positions, from one query."""
        tree = Tree(self.id)
        return [(message, tree.siblings(message)) for message in tree.path(self.active_leaf_id)]

    def path_ids(self, leaf_id: int | None = None) -> list[tuple[int, int | None]]:
        """(id, parent id) of each message of the visible path (or the path to ``leaf_id``), root first:
        walked up from the leaf in SQL, no rows loaded."""
        leaf_id = leaf_id or self.active_leaf_id
        if leaf_id is None:
            return []
        rows = db.session.execute(_path_ids(), self.on_path(leaf_id))
        return [(message_id, parent_id) for message_id, parent_id in rows]

    def path_to(self, leaf_id: int) -> list[Message]:
        """The messages from the root down to ``leaf_id``, with their images, root first: one query,
        however many other messages and branches the conversation has."""
        return list(db.session.scalars(_path_messages(), self.on_path(leaf_id)).unique())

    def on_path(self, leaf_id: int) -> dict:
        """The parameters of ``path_up()`` for the path of this conversation up from ``leaf_id``."""
        return {"path_leaf": leaf_id, "path_conversation": self.id}

    def visible_window(
        self,
        size: int,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
        leaf: int | None = None,
    ) -> tuple[list[tuple[Message, Siblings]], int, int]:
        """Part of the visible path, with how many messages of it come before and after that part.

        ``size`` messages: the latest, or those just ``before`` or ``after`` a message of the path,
        or ``around`` one (it and about half before it). A message not on the path: the latest.
        Loads only the messages shown and their siblings, not the whole conversation. ``leaf``: the path
        down to that message instead of the visible one.
        """
        ids = self.path_ids(leaf)
        position = {message_id: index for index, (message_id, _parent) in enumerate(ids)}
        if before in position:
            end = position[before]
        elif after in position:
            end = min(len(ids), position[after] + 1 + size)
        elif around in position:
            end = min(len(ids), max(position[around] + 1 + size - size // 2, size))
        else:
            end = len(ids)
        start = position[after] + 1 if after in position and before not in position else max(0, end - size)
        return Tree.load(self.id, ids[start:end]), start, len(ids) - end

    def streaming_message(self) -> Message | None:
        """The answer currently streaming in this conversation, if any."""
        return db.session.scalars(_streaming_in(), {"conversation_id": self.id}).first()

    def set_title_from(self, text: str) -> None:
        """Derive a short title from the first message: first line, cut at a word boundary."""
        line = " ".join(text.strip().split("\n", 1)[0].split())
        if len(line) > TITLE_LENGTH:
            line = line[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(",.;:") + "…"
        self.title = line or NEW_TITLE


@functools.cache
def path_up():  # noqa: ANN201 - a recursive CTE of (id, parent_id, depth)
    """The path from a message up to the root, walked in SQL; depth 0 is the message. Bind it with
    ``Conversation.on_path(leaf_id)``.

    Built once: making this statement costs about 1 ms of Python (its columns, the alias, the
    union), more than running it, and a send needs it on every prompt.
    """
    start = select(Message.id, Message.parent_id, literal(0).label("depth")).where(
        Message.id == bindparam("path_leaf"), Message.conversation_id == bindparam("path_conversation")
    )
    path = start.cte("path", recursive=True)
    parent = aliased(Message)
    return path.union_all(select(parent.id, parent.parent_id, path.c.depth + 1).where(parent.id == path.c.parent_id))


@functools.cache
def _streaming_in() -> Select:
    """The answer streaming in a conversation (bound as ``conversation_id``): built once, as every send asks."""
    streaming = (Message.conversation_id == bindparam("conversation_id")) & (Message.status == STREAMING)
    return select(Message).where(streaming).limit(1)


@functools.cache
def _path_ids() -> Select:
    path = path_up()
    return select(path.c.id, path.c.parent_id).order_by(path.c.depth.desc())


@functools.cache
def _path_messages() -> Select:
    path = path_up()
    # Joined, not "selectin": one statement (a prompt's messages rarely have images), half the time.
    return (
        select(Message)
        .join(path, Message.id == path.c.id)
        .order_by(path.c.depth.desc())
        .options(joinedload(Message.images))
    )


class Folder(Model):
    """A user's folder of conversations; new chats in it start with its system prompt and model."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @classmethod
    def for_user(cls, user_id: str) -> list[Folder]:
        """The user's folders by name."""
        return list(db.session.scalars(select(cls).where(cls.user_id == user_id).order_by(cls.name, cls.id)))


class SearchEntry(Model):
    """A message, a note (``role="note"``) or a conversation's title (``role="title"``) in the full-text index.

    ``body`` is the text accent-folded, lower-cased and cut into words (``chatapp.search.normalise``);
    SQLite indexes it with FTS5 (``search_fts``), PostgreSQL with a generated ``tsvector`` column.
    """

    __tablename__ = "search_entry"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), unique=True)
    note_id: Mapped[int | None] = mapped_column(ForeignKey("note.id", ondelete="CASCADE"), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # "user", "assistant", "note" or "title"
    created_at: Mapped[datetime] = mapped_column(index=True)
    body: Mapped[str] = mapped_column(Text)


class Message(Model):
    """One message. ``parent_id`` makes the conversation a tree; siblings are alternative versions."""

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # "user" or "assistant"
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=COMPLETE)
    error: Mapped[str | None] = mapped_column(Text)
    token_count: Mapped[int | None]  # counted once, when the text is final
    model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(50))
    ttft_ms: Mapped[int | None]
    duration_ms: Mapped[int | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    word_count: Mapped[int | None]  # an answer's length in words, once it has ended
    sentiment: Mapped[float | None]  # its tone from -1 (negative) to 1 (positive): VADER's compound score
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    feedback_rating: Mapped[str | None] = mapped_column(String(8))  # "up" or "down"
    feedback_comment: Mapped[str | None] = mapped_column(Text)
    # Who sent a user message (None: their account was deleted; the message stays).
    author_id: Mapped[str | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # For a streaming answer this is its heartbeat: refreshed by every flush.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages", foreign_keys=[conversation_id])
    images: Mapped[list[Image]] = relationship(
        back_populates="message", cascade="all, delete-orphan", passive_deletes=True, order_by="Image.id"
    )
    author: Mapped[User | None] = relationship(foreign_keys=[author_id])

    __table_args__ = (
        Index("ix_message_conversation_id", "conversation_id"),
        Index("ix_message_status", "status"),
    )

    @property
    def is_streaming(self) -> bool:
        """True while the answer is still being generated."""
        return self.status == STREAMING

    @property
    def author_name(self) -> str:
        """Who sent this user message: their display name, or "a deleted user" once their account is gone."""
        if self.role != "user":
            return "Assistant"
        return self.author.name if self.author is not None else DELETED_AUTHOR


class RoomMember(Model):
    """Someone the owner let into a conversation (the owner is not a row: ``Conversation.user_id``)."""

    __tablename__ = "room_member"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8), default=MEMBER)  # member or viewer
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]

    conversation: Mapped[Conversation] = relationship(back_populates="members")
    user: Mapped[User] = relationship()

    __table_args__ = (UniqueConstraint("conversation_id", "user_id", name="uq_room_member"),)


class ShareLink(Model):
    """A read-only link to a conversation: a random token, each revoked on its own (``chatapp.sharing``)."""

    __tablename__ = "share_link"
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)  # kept: the owner copies the link again later
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "snapshot" (as it was when made) or "live"
    visibility: Mapped[str] = mapped_column(String(16))  # "anyone" (with the link) or "accounts" (signed in)
    allow_indexing: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # A snapshot: the newest message id then (later ones are not shown), the path shown, and the
    # state of the answers that could still change then (streaming, stopped, interrupted): {id: fields}.
    last_message_id: Mapped[int | None]
    leaf_id: Mapped[int | None]
    frozen: Mapped[dict | None] = mapped_column(JSON)

    conversation: Mapped[Conversation] = relationship()


class Note(Model):
    """A note beside a conversation: saved by the assistant through its ``save_note`` tool, or by the user."""

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    # The message it came from: the answer whose tool call saved it, or the message the user saved.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"), index=True)
    content: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # "assistant" (the tool) or "user"
    tool_call_id: Mapped[str | None] = mapped_column(String(200))  # the assistant's tool call that saved it
    answer_offset: Mapped[int | None]  # where in the answer's text the tool call happened
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="notes")


class Image(Model):
    """An image attached to a user message; the file lives in ``instance/uploads/`` under a random name."""

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(64), unique=True)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int]
    height: Mapped[int]
    size: Mapped[int]
    alt: Mapped[str | None] = mapped_column(String(300))  # the user's description, or the upload's file name
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="images")


class ImageData(Model):
    """An image's bytes, when images are stored in the database (``IMAGE_STORAGE=database``)."""

    __tablename__ = "image_data"
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes]

    image: Mapped[Image] = relationship()


@dataclass(frozen=True)
class Siblings:
    """Where a message stands among its versions: "‹ 2 / 3 ›"."""

    index: int  # 1-based
    count: int
    previous_id: int | None
    next_id: int | None


class Tree:
    """All messages of a conversation, loaded in one query, with parent and child lookups."""

    def __init__(self, conversation_id: int) -> None:
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id)
            .options(selectinload(Message.images), selectinload(Message.author))  # one query each, not one per message
        )
        self.by_id: dict[int, Message] = {}
        self.children: dict[int | None, list[Message]] = defaultdict(list)
        for message in db.session.scalars(query):
            self.by_id[message.id] = message
            self.children[message.parent_id].append(message)

    @staticmethod
    def load(conversation_id: int, ids: list[tuple[int, int | None]]) -> list[tuple[Message, Siblings]]:
        """These messages ((id, parent id) pairs), in this order, with their "‹ 2 / 3 ›" positions: one
        query loads them and their siblings (the other versions), none of the rest of the conversation."""
        if not ids:
            return []
        parents = {parent_id for _id, parent_id in ids}
        same_parent: ColumnElement[bool] = Message.parent_id.in_([p for p in parents if p is not None])
        if None in parents:
            same_parent = or_(same_parent, Message.parent_id.is_(None))
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id, same_parent)
            .order_by(Message.id)
            .options(selectinload(Message.images), selectinload(Message.author))
        )
        by_id: dict[int, Message] = {}
        versions: dict[int | None, list[int]] = defaultdict(list)
        for message in db.session.scalars(query):
            by_id[message.id] = message
            versions[message.parent_id].append(message.id)
        return [(by_id[i], _siblings_of(by_id[i], versions[parent_id])) for i, parent_id in ids]

    def path(self, leaf_id: int | None) -> list[Message]:
        """The messages from the root down to ``leaf_id``."""
        path = []
        node = self.by_id.get(leaf_id) if leaf_id else None
        while node is not None:
            path.append(node)
            node = self.by_id.get(node.parent_id) if node.parent_id else None
        return path[::-1]

    def siblings(self, message: Message) -> Siblings:
        """The message's position among the versions sharing its parent."""
        return _siblings_of(message, [m.id for m in self.children[message.parent_id]])

    def newest_leaf(self, message: Message) -> Message:
        """The most recent message at or below ``message``: the end of its latest path.

        Children are always newer than their parent, so the newest descendant is a leaf.
        """
        newest, stack = message, [message]
        while stack:
            node = stack.pop()
            newest = node if node.id > newest.id else newest
            stack.extend(self.children[node.id])
        return newest


def siblings_of(message: Message) -> Siblings:
    """``Tree.siblings`` for one message, without loading the whole conversation."""
    return siblings_of_each([message])[0]


def siblings_of_each(messages: list[Message]) -> list[Siblings]:
    """``siblings_of`` for messages of one conversation (a question and its answer, say), in one query."""
    parents = {message.parent_id for message in messages}
    query = select(Message.id, Message.parent_id).where(
        Message.conversation_id == messages[0].conversation_id,
        or_(*(Message.parent_id.is_(None) if parent is None else Message.parent_id == parent for parent in parents)),
    )
    versions: dict[int | None, list[int]] = defaultdict(list)
    for row in sorted(db.session.execute(query).all()):  # by id: the order versions were written in
        versions[row.parent_id].append(row.id)
    return [_siblings_of(message, versions[message.parent_id]) for message in messages]


def _siblings_of(message: Message, ids: list[int]) -> Siblings:
    index = ids.index(message.id)
    return Siblings(
        index + 1,
        len(ids),
        ids[index - 1] if index > 0 else None,
        ids[index + 1] if index + 1 < len(ids) else None,
    )


def user_stats(user_id: str) -> dict:
    """Totals for one identity: conversations, messages, today's, timings, tokens, favourite model."""
    mine = select(Message).join(Conversation).where(Conversation.user_id == user_id).subquery()
    answers = select(mine).where(mine.c.role == "assistant").subquery()
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    row = db.session.execute(
        select(
            select(func.count()).select_from(Conversation).where(Conversation.user_id == user_id).scalar_subquery(),
            select(func.count()).select_from(mine).scalar_subquery(),
            select(func.count()).select_from(mine).where(mine.c.created_at >= midnight).scalar_subquery(),
            select(func.avg(answers.c.ttft_ms)).scalar_subquery(),
            select(func.avg(answers.c.duration_ms)).scalar_subquery(),
            select(
                func.coalesce(func.sum(answers.c.prompt_tokens), 0)
                + func.coalesce(func.sum(answers.c.completion_tokens), 0)
            ).scalar_subquery(),
        )
    ).one()
    favourite = db.session.execute(
        select(answers.c.model).group_by(answers.c.model).order_by(func.count().desc()).limit(1)
    ).scalar()
    return {
        "conversations": row[0],
        "messages": row[1],
        "messages_today": row[2],
        "average_ttft_ms": float(row[3]) if row[3] is not None else None,
        "average_duration_ms": float(row[4]) if row[4] is not None else None,
        "tokens_used": int(row[5]),
        "most_used_model": favourite,
    }


def mark_stale_interrupted(cutoff: datetime, message_id: int | None = None) -> int:
    """Mark answers whose generator stopped heart-beating before ``cutoff`` as interrupted: all of them
    (the generator's periodic sweep) or just ``message_id`` (a viewer finding its answer stale: one row,
    so many viewers at once never lock the same rows in different orders, which PostgreSQL would end
    as a deadlock)."""
    query = update(Message).where(Message.status == STREAMING, Message.updated_at < cutoff)
    if message_id is not None:
        query = query.where(Message.id == message_id)
    result: CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE's result has a rowcount
        query.values(
            status=INTERRUPTED,
            error="The server stopped while this answer was being written. The text so far is kept.",
        )
    )
    db.session.commit()
    return result.rowcount


class Usage(Model):
    """The usage ledger: answers and tokens per identity and local day; deleting conversations keeps it."""

    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)  # the identity's local date when the answer ended
    answers: Mapped[int] = mapped_column(default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(default=0, server_default="0")


class ImportJob(Model):
    """A file being imported (or imported) in the background: its progress and its report survive restarts."""

    __tablename__ = "import_job"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))  # "chatapp" or "chatgpt"
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued, running, done, failed
    imported: Mapped[int] = mapped_column(default=0, server_default="0")  # conversations
    skipped: Mapped[int] = mapped_column(default=0, server_default="0")  # conversations
    bytes_read: Mapped[int] = mapped_column(default=0, server_default="0")
    report: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {"conversation", "outcome", "notes"}
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)  # also the running job's heartbeat
    finished_at: Mapped[datetime | None]


class ConversationSource(Model):
    """Where an imported conversation came from: importing the same one again is recognised and skipped."""

    __tablename__ = "conversation_source"
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # "chatapp" or "chatgpt"
    source_id: Mapped[str | None] = mapped_column(String(255))  # the conversation's id in the file
    # SHA-256 of the conversation as it was in the file; the owner is the conversation's (it follows a guest
    # who signs up), so duplicates are looked up through the conversation.
    source_hash: Mapped[str] = mapped_column(String(64), index=True)
