"""Request and response shapes of the JSON API: validated with pydantic, published as OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .models import Conversation, Folder, Message, Tree, siblings_of


def _utc(value: datetime) -> datetime:
    """Times are stored as naive UTC; an answer says so (``…Z``)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _optional(schema: dict) -> None:
    """A field that may be left out but not sent as null: no ``"default": null`` in its schema."""
    schema.pop("default", None)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
LARGEST_ID = 2**63 - 1  # a BIGINT; a larger number names no row


class Strict(BaseModel):
    """Unknown fields are errors, so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Settings(Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32768)


class ConversationFields(Strict):
    # Left out: unchanged; null is no title (the column is NOT NULL).
    title: str = Field(None, min_length=1, max_length=200, json_schema_extra=_optional)  # type: ignore[assignment]
    model: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, max_length=20000)
    settings: Settings | None = None
    folder_id: int | None = Field(None, ge=1, le=2**63 - 1)  # null: in no folder
    pinned: bool = Field(None, json_schema_extra=_optional)  # type: ignore[assignment]
    archived: bool = Field(None, json_schema_extra=_optional)  # type: ignore[assignment]


class ConversationCreate(ConversationFields):
    """A new conversation; in a folder it starts with the folder's model and system prompt."""

    # Not listed, not searchable, deleted when the identity starts or opens another chat.
    temporary: bool = Field(None, json_schema_extra=_optional)  # type: ignore[assignment]


class ConversationUpdate(ConversationFields):
    """Any of the fields; those left out stay as they are."""


class FolderCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    system_prompt: str | None = Field(None, max_length=20000)
    model: str | None = Field(None, min_length=1, max_length=200)


class FolderUpdate(Strict):
    """Any of the fields; those left out stay as they are."""

    name: str = Field(None, min_length=1, max_length=100, json_schema_extra=_optional)  # type: ignore[assignment]
    system_prompt: str | None = Field(None, max_length=20000)
    model: str | None = Field(None, min_length=1, max_length=200)


class FolderOut(BaseModel):
    id: int
    name: str
    system_prompt: str | None
    model: str | None
    created_at: UtcDatetime

    @classmethod
    def from_folder(cls, f: Folder) -> dict:
        """The folder as the API sends it (JSON-ready)."""
        return cls(**{name: getattr(f, name) for name in cls.model_fields}).model_dump(mode="json")


class FolderList(BaseModel):
    items: list[FolderOut]


class SearchResultOut(BaseModel):
    conversation_id: int
    conversation_title: str
    message_id: int | None  # null: the match is the conversation's title
    role: Literal["user", "assistant", "title"]
    created_at: UtcDatetime
    snippet_html: str  # escaped text with the matching words in <mark>
    archived: bool


class SearchPage(BaseModel):
    items: list[SearchResultOut]
    next_cursor: str | None


class MessageCreate(Strict):
    content: str  # may be empty only when images come with it (multipart)
    parent_id: int | None = Field(None, ge=1, le=LARGEST_ID)


class MessageEdit(Strict):
    content: str = Field(min_length=1)


class Feedback(Strict):
    rating: Literal["up", "down"] | None
    comment: str | None = Field(None, max_length=2000)


class GuestToken(BaseModel):
    token: str
    user_id: str


class ConversationOut(BaseModel):
    id: int
    title: str
    model: str | None
    system_prompt: str | None
    settings: Settings
    created_at: UtcDatetime
    updated_at: UtcDatetime
    folder_id: int | None
    pinned: bool
    archived: bool
    temporary: bool

    @classmethod
    def from_conversation(cls, c: Conversation) -> dict:
        """The conversation as the API and the WebSocket send it (JSON-ready)."""
        settings = Settings(temperature=c.temperature, max_tokens=c.max_tokens)
        names = ("id", "title", "model", "system_prompt", "created_at", "updated_at", "folder_id")
        fields = {f: getattr(c, f) for f in names}
        return cls(
            **fields,
            settings=settings,
            pinned=c.pinned_at is not None,
            archived=c.archived_at is not None,
            temporary=bool(c.temporary),
        ).model_dump(mode="json")


class ImageOut(BaseModel):
    id: int
    mime: str
    width: int
    height: int
    url: str  # GET it with the same bearer token


class MessageOut(BaseModel):
    id: int
    conversation_id: int
    parent_id: int | None
    role: Literal["user", "assistant"]
    content: str
    status: Literal["streaming", "complete", "stopped", "error", "interrupted"]
    model: str | None
    provider: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    ttft_ms: int | None
    duration_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    error: str | None
    sibling_index: int
    sibling_count: int
    feedback: Feedback | None
    images: list[ImageOut]

    @classmethod
    def from_message(cls, m: Message, tree: Tree | None = None) -> dict:
        """The message as the API and the WebSocket send it (JSON-ready); ``tree`` saves a query per message."""
        position = tree.siblings(m) if tree else siblings_of(m)
        feedback = (
            Feedback(rating=m.feedback_rating, comment=m.feedback_comment)  # type: ignore[arg-type]  # stored valid
            if m.feedback_rating or m.feedback_comment
            else None
        )
        return cls(
            **{f: getattr(m, f) for f in cls.model_fields if hasattr(Message, f) and f != "images"},
            sibling_index=position.index,
            sibling_count=position.count,
            feedback=feedback,
            images=[
                ImageOut(id=i.id, mime=i.mime, width=i.width, height=i.height, url=f"/api/v1/images/{i.id}")
                for i in m.images
            ],
        ).model_dump(mode="json")


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class Sent(BaseModel):
    user_message: MessageOut
    assistant_message: MessageOut | None
    stream_url: str | None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict = {}


class Error(BaseModel):
    error: ErrorBody


class Transcription(BaseModel):
    text: str


class ModelInfo(BaseModel):
    id: str
    provider: str


class ModelList(BaseModel):
    items: list[ModelInfo]


class Stats(BaseModel):
    conversations: int
    messages: int
    messages_today: int
    average_ttft_ms: float | None
    average_duration_ms: float | None
    tokens_used: int
    most_used_model: str | None
