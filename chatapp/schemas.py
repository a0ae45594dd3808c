"""Request and response shapes of the JSON API: validated with pydantic, published as OpenAPI."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .models import Conversation, Folder, ImportJob, Message, Note, Preset, ShareLink, Siblings, Tree, siblings_of
from .prices import message_cost


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


class ConversationStart(ConversationCreate):
    """A new conversation; ``preset_id`` starts it with one of your presets (fields sent here win)."""

    preset_id: int = Field(None, ge=1, le=LARGEST_ID, json_schema_extra=_optional)  # type: ignore[assignment]


class ConversationUpdate(ConversationFields):
    """Any of the fields; those left out stay as they are."""


class RetryOptions(Strict):
    """Optional: another model for this one new version (the conversation keeps its own)."""

    model: str = Field(None, min_length=1, max_length=200, json_schema_extra=_optional)  # type: ignore[assignment]


class Draft(Strict):
    content: str = ""


class NewChatDraft(Draft):
    """The first message of a new conversation; ``preset_id``: the preset it would start with."""

    preset_id: int = Field(None, ge=1, le=LARGEST_ID, json_schema_extra=_optional)  # type: ignore[assignment]


class Meter(BaseModel):
    draft_tokens: int
    message_limit: int
    too_long: bool
    prompt_tokens: int
    budget: int
    percent: int
    history_messages: int
    left_out: int


class PresetFields(Strict):
    name: str = Field(min_length=1, max_length=100)
    model: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, max_length=20000)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    opening_prompt: str | None = Field(None, max_length=20000)


class PresetUpdate(PresetFields):
    """Any of the fields; those left out stay as they are."""

    name: str = Field(None, min_length=1, max_length=100, json_schema_extra=_optional)  # type: ignore[assignment]


class PresetOut(BaseModel):
    id: int
    name: str
    model: str | None
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    opening_prompt: str | None
    created_at: UtcDatetime

    @classmethod
    def from_preset(cls, p: Preset) -> dict:
        """The preset as the API sends it (JSON-ready)."""
        return cls(**{f: getattr(p, f) for f in cls.model_fields}).model_dump(mode="json")


class PresetList(BaseModel):
    items: list[PresetOut]


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
    message_id: int | None  # null: the match is the conversation's title, or a note
    note_id: int | None  # the note that matches (role "note")
    role: Literal["user", "assistant", "note", "title"]
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
    word_count: int | None = Field(description="The answer's length in words, once it has ended.")
    sentiment: float | None = Field(description="The answer's tone from -1 (negative) to 1 (positive) (VADER).")
    finish_reason: str | None
    error: str | None
    sibling_index: int
    sibling_count: int
    feedback: Feedback | None
    images: list[ImageOut]
    cost: float | None = Field(
        description="US dollars, when the model's prices are known (MODEL_PRICES or the price table)"
    )
    author_id: str | None  # who sent a user message (None for answers, and once the sender's account is deleted)
    author_name: str | None  # their display name, or "a deleted user"; None for answers

    @classmethod
    def from_message(cls, m: Message, tree: Tree | None = None, position: Siblings | None = None) -> dict:
        """The message as the API and the WebSocket send it (JSON-ready); ``tree`` (or the message's
        ``position`` among its siblings, if known) saves a query per message."""
        if position is None:
            position = tree.siblings(m) if tree else siblings_of(m)
        feedback = (
            Feedback(rating=m.feedback_rating, comment=m.feedback_comment)  # type: ignore[arg-type]  # stored valid
            if m.feedback_rating or m.feedback_comment
            else None
        )
        return cls(
            **{
                f: getattr(m, f) for f in cls.model_fields if hasattr(Message, f) and f not in ("images", "author_name")
            },
            author_name=m.author_name if m.role == "user" else None,
            sibling_index=position.index,
            sibling_count=position.count,
            feedback=feedback,
            cost=message_cost(m),
            images=[
                ImageOut(id=i.id, mime=i.mime, width=i.width, height=i.height, url=f"/api/v1/images/{i.id}")
                for i in m.images
            ],
        ).model_dump(mode="json")


class StreamStatus(BaseModel):
    """A ``status`` event of an answer's stream: no text yet, and why (sent before the first delta)."""

    message_id: int
    state: Literal["retrying", "fallback"]  # retrying the model server; or asking the next fallback model
    model: str  # the model being retried, or the fallback now asked
    attempt: int | None = None  # retrying: the number of the try to come (2 for the first retry)
    in_ms: int | None = None  # retrying: milliseconds until it


class ShareCreate(Strict):
    kind: Literal["snapshot", "live"] = "live"  # snapshot: as it is now; live: follows new messages
    visibility: Literal["anyone", "accounts"] = "anyone"  # accounts: signed-in users only (not guests)
    expires_at: UtcDatetime | None = None  # None: does not expire; a time without an offset is UTC
    allow_indexing: bool = False  # False: the shared page asks search engines not to list it


class ShareOut(BaseModel):
    token: str
    url: str  # the page to send people; GET /api/v1/shared/{token} is the same as JSON
    conversation_id: int
    kind: Literal["snapshot", "live"]
    visibility: Literal["anyone", "accounts"]
    allow_indexing: bool
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    expired: bool

    @classmethod
    def from_link(cls, link: ShareLink, url: str, expired: bool) -> dict:
        """The link as the API shows it to its owner (JSON-ready)."""
        fields = {f: getattr(link, f) for f in cls.model_fields if f not in ("url", "expired")}
        return cls(**fields, url=url, expired=expired).model_dump(mode="json")


class ShareList(BaseModel):
    items: list[ShareOut]


class SharedMessageOut(BaseModel):
    """A message as a share link shows it: no feedback, the author of user messages, versions by id."""

    id: int
    parent_id: int | None
    role: Literal["user", "assistant"]
    author: str | None  # who wrote a user message; None for answers
    content: str
    status: Literal["streaming", "complete", "stopped", "error", "interrupted"]
    error: str | None
    model: str | None
    provider: str | None
    created_at: UtcDatetime
    ttft_ms: int | None
    duration_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    sibling_index: int
    sibling_count: int
    previous_version_id: int | None  # ?leaf= this to see the previous version
    next_version_id: int | None
    images: list[ImageOut]  # GET with the same link (and token, for a signed-in-only link)
    stream_url: str | None  # an answer being written (live links): its SSE or NDJSON stream

    @classmethod
    def from_message(cls, m: Message | Any, position: Siblings, token: str) -> dict:  # noqa: ANN401
        """A message (or a snapshot's frozen one) as the link shows it (JSON-ready)."""
        base = f"/api/v1/shared/{token}"
        return cls(
            **{f: getattr(m, f) for f in cls.model_fields if hasattr(Message, f) and f not in ("images", "author")},
            author=m.author_name if m.role == "user" else None,
            sibling_index=position.index,
            sibling_count=position.count,
            previous_version_id=position.previous_id,
            next_version_id=position.next_id,
            images=[
                ImageOut(id=i.id, mime=i.mime, width=i.width, height=i.height, url=f"{base}/images/{i.id}")
                for i in m.images
            ],
            stream_url=f"{base}/messages/{m.id}/stream" if m.is_streaming else None,
        ).model_dump(mode="json")


class SharedConversation(BaseModel):
    title: str
    shared_by: str
    kind: Literal["snapshot", "live"]
    visibility: Literal["anyone", "accounts"]
    created_at: UtcDatetime  # when the link was made (a snapshot shows the conversation as it was then)
    messages: list[SharedMessageOut]  # the visible path, root first


class MemberOut(BaseModel):
    user_id: str
    name: str
    role: Literal["owner", "member", "viewer"]
    member_id: int | None  # DELETE /conversations/{id}/members/{member_id} removes them; None: the owner
    last_seen_at: UtcDatetime | None
    present: bool = False  # has the conversation open now (a page or a socket)

    @classmethod
    def from_member(cls, m: object) -> dict:
        """A room member as the API sends it (JSON-ready)."""
        fields = {f: getattr(m, f) for f in ("user_id", "name", "role", "member_id", "last_seen_at")}
        return cls(**fields).model_dump(mode="json")


class Invite(BaseModel):
    token: str
    url: str
    role: Literal["member", "viewer"]


class MemberList(BaseModel):
    items: list[MemberOut]
    invite: Invite | None  # the owner sees the current invite link


class InviteCreate(Strict):
    role: Literal["member", "viewer"] = "member"


class Join(Strict):
    token: str = Field(min_length=1, max_length=100)


class NoteCreate(Strict):
    """A note of the user's; with ``message_id`` alone, that message's text ("Save to notes")."""

    content: str | None = None  # checked by the core: the same 422 / 413 as on the page
    message_id: int | None = Field(None, ge=1, le=LARGEST_ID)


class NoteUpdate(Strict):
    content: str


class NoteOut(BaseModel):
    id: int
    conversation_id: int
    message_id: int | None  # the answer whose tool call saved it, or the message the user saved
    content: str
    source: Literal["assistant", "user"]
    tool_call_id: str | None
    offset: int | None  # where in the answer's text the tool call happened
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def from_note(cls, n: Note) -> dict:
        """The note as every door sends it (JSON-ready)."""
        fields = (
            "id",
            "conversation_id",
            "message_id",
            "content",
            "source",
            "tool_call_id",
            "created_at",
            "updated_at",
        )
        return cls(**{f: getattr(n, f) for f in fields}, offset=n.answer_offset).model_dump(mode="json")


class NoteList(BaseModel):
    items: list[NoteOut]


class StreamNote(BaseModel):
    """A ``note`` event of an answer's stream: the assistant saved a note (its own channel, never in the text)."""

    message_id: int
    conversation_id: int
    note: NoteOut


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


class StatsDay(BaseModel):
    day: date
    answers: int
    prompt_tokens: int
    completion_tokens: int
    up: int
    down: int
    sentiment: float | None


class StatsModel(BaseModel):
    model: str
    answers: int
    prompt_tokens: int
    completion_tokens: int
    ttft_ms_median: float | None
    duration_ms_median: float | None
    sentiment: float | None
    up: int
    down: int


class StatsBucket(BaseModel):
    bucket: str
    answers: int


class StatsFeedback(BaseModel):
    up: int
    down: int
    ratio: float | None = Field(description="Thumbs up over all rated answers.")


class StatsTones(BaseModel):
    positive: int
    neutral: int
    negative: int


class Stats(BaseModel):
    conversations: int
    messages: int
    messages_today: int
    average_ttft_ms: float | None
    average_duration_ms: float | None
    tokens_used: int
    most_used_model: str | None

    time_zone: str = Field(description="The identity's time zone: the days below are its days.")
    days: list[StatsDay] = Field(description="The last 30 days, oldest first.")
    models: list[StatsModel]
    ttft_ms: list[StatsBucket] = Field(description="Time to first token, answers per bucket.")
    duration_ms: list[StatsBucket] = Field(description="Answer duration, answers per bucket.")
    feedback: StatsFeedback
    tones: StatsTones = Field(description="Answers by sentiment: positive (≥ 0.05), neutral, negative (≤ -0.05).")


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
