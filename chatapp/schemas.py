"""Request and response shapes of the JSON API: validated with pydantic, published as OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .models import Conversation, ImportJob, Message, Tree, siblings_of


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


class ConversationCreate(Strict):
    # Left out: unchanged; null is no title (the column is NOT NULL).
    title: str = Field(None, min_length=1, max_length=200, json_schema_extra=_optional)  # type: ignore[assignment]
    model: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, max_length=20000)
    settings: Settings | None = None


class ConversationUpdate(ConversationCreate):
    """Any of the fields; those left out stay as they are."""


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

    @classmethod
    def from_conversation(cls, c: Conversation) -> dict:
        """The conversation as the API and the WebSocket send it (JSON-ready)."""
        settings = Settings(temperature=c.temperature, max_tokens=c.max_tokens)
        fields = {f: getattr(c, f) for f in ("id", "title", "model", "system_prompt", "created_at", "updated_at")}
        return cls(**fields, settings=settings).model_dump(mode="json")


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


class ImportEntry(BaseModel):
    title: str
    outcome: Literal["imported", "skipped"]
    notes: list[str]
    conversation_id: int | None


class ImportJobOut(BaseModel):
    id: int
    filename: str
    size: int
    kind: Literal["chatapp", "chatgpt"]
    status: Literal["queued", "running", "done", "failed", "interrupted"]
    percent: int
    imported: int
    skipped: int
    error: str | None
    report: list[ImportEntry]
    created_at: UtcDatetime
    finished_at: UtcDatetime | None

    @classmethod
    def from_job(cls, job: ImportJob) -> dict:
        """An import job as the API sends it: progress, and the report of each conversation read so far."""
        from . import importing  # it imports the export format, which needs nothing from here

        return cls(
            id=job.id,
            filename=job.filename,
            size=job.size,
            kind=job.kind,  # type: ignore[arg-type]
            status=importing.state(job),  # type: ignore[arg-type]
            percent=importing.percent(job),
            imported=job.imported,
            skipped=job.skipped,
            error=job.error,
            report=[ImportEntry(**entry) for entry in importing.report(job)],
            created_at=job.created_at,
            finished_at=job.finished_at,
        ).model_dump(mode="json")
