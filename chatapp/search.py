"""Full-text search over an identity's messages, notes and titles: SQLite FTS5 or PostgreSQL ``tsvector``.

Both databases index the same words: ``normalise`` folds accents, lower-cases and cuts the text into
words in Python before it is stored (``SearchEntry.body``), so the two indexes see identical input and
a query means the same on both. The syntax: words (each matches as a prefix: ``pyth`` finds "python"),
"phrases in quotes" (those words in that order); every term must match. No stemming on either side.

A message is indexed when it is created, edited into a new version, or stops streaming (not on every
flush of a streaming answer); a note when it is saved or edited (deleting it deletes its entry: the
foreign key cascades); a title when it is set. Temporary chats are never indexed.
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup, escape
from sqlalchemy import (
    ColumnElement,
    Executable,
    Insert,
    Table,
    and_,
    bindparam,
    column,
    delete,
    false,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Row

from .errors import ChatError
from .extensions import db
from .models import STREAMING, Conversation, Message, Note, SearchEntry, User

ENTRIES = cast(Table, SearchEntry.__table__)  # the index's writes go to the table itself (``_run``)

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
SNIPPET_CHARS = 220
ROLES = ("user", "assistant", "note")
ORDERS = ("newest", "relevance")
RELEVANCE_WINDOW = 500  # "best match first" ranks the newest this many matches
WALK = 1000  # PostgreSQL: the newest entries matched one by one before the index is asked (_postgres_matches)
_SEPARATORS = re.compile(r"[\W_]+")
_WORDS = re.compile(r"[^\W_]+")
_TERMS = re.compile(r'"([^"]*)("?)|(\S+)')


def normalise(text_: str | None) -> str:
    """Accents folded, lower-cased (casefold), words separated by single spaces: what is indexed."""
    decomposed = unicodedata.normalize("NFKD", text_ or "")
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_SEPARATORS.sub(" ", folded).split())


# -- indexing ----------------------------------------------------------------------------------------------
def index_message(message: Message | int) -> None:
    """Put a message's current text in the index (or take it out: streaming, empty, temporary chat).

    Given the message itself (e.g. just sent), nothing is read back; given its id, one query. Runs in
    the caller's transaction; the caller commits.
    """
    if isinstance(message, Message):
        conversation = db.session.get(Conversation, message.conversation_id)  # in the session already
        row = (message.conversation_id, message.role, message.created_at, message.content, message.status)
        temporary, message_id = bool(conversation and conversation.temporary), message.id
    else:
        found = db.session.execute(
            select(Message.conversation_id, Message.role, Message.created_at, Message.content, Message.status)
            .add_columns(Conversation.temporary)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.id == message)
        ).one_or_none()
        if found is None:
            return
        row, temporary, message_id = tuple(found[:5]), found[5], message
    conversation_id, role, created_at, content, status = row
    body = "" if temporary or status == STREAMING else normalise(content)
    _put("message_id", message_id, body, conversation_id=conversation_id, role=role, created_at=created_at)


def index_note(note: Note) -> None:
    """Put a note's current text in the index (not a temporary chat's). The caller commits."""
    db.session.flush()  # a new note gets its id
    conversation = db.session.get(Conversation, note.conversation_id)
    body = "" if conversation is None or conversation.temporary else normalise(note.content)
    _put("note_id", note.id, body, conversation_id=note.conversation_id, role="note", created_at=note.created_at)


def _put(key: str, row_id: int, body: str, **values: object) -> None:
    """Index the message or note ``row_id`` (``key``: which) in one statement, a new entry or a new text
    for the one indexed before; an empty ``body`` (nothing to find it by) takes its entry out."""
    if not body:
        _run(delete(ENTRIES).where(ENTRIES.c[key] == row_id))
        return
    parameters = {f"put_{name}": value for name, value in {key: row_id, "body": body, **values}.items()}
    _run(_upsert(db.engine.dialect.name, key), parameters)


def _run(statement: Executable, parameters: dict | None = None) -> CursorResult:
    """Run an index write on the session's connection, in its transaction: the ORM's handling of a
    statement costs more than running it (an upsert: 127 µs against 37 µs), and these load no objects.
    Nothing is flushed first: the messages, notes and conversations they name already were."""
    return db.session.connection().execute(statement, parameters)


@functools.cache
def _upsert(dialect: str, key: str) -> Insert:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET body``, its values bound as ``put_<column>``: built once
    per database kind and key (every send indexes its message; building it cost more than running it)."""
    columns = (key, "body", "conversation_id", "role", "created_at")
    upsert = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(ENTRIES)
    upsert = upsert.values({name: bindparam(f"put_{name}") for name in columns})
    return upsert.on_conflict_do_update(index_elements=[ENTRIES.c[key]], set_={"body": upsert.excluded.body})


def index_title(conversation: Conversation) -> None:
    """Put the conversation's title in the index (not for a temporary chat). The caller commits."""
    db.session.flush()  # a new conversation gets its id
    body = "" if conversation.temporary else normalise(conversation.title)
    _put_title(conversation.id, conversation.created_at, body)


def index_conversation(conversation_id: int) -> None:
    """(Re)index a whole conversation: title, every message and note (e.g. after an import). The caller commits."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        return
    index_title(conversation)
    for message_id in list(db.session.scalars(select(Message.id).where(Message.conversation_id == conversation_id))):
        index_message(message_id)
    for note in list(db.session.scalars(select(Note).where(Note.conversation_id == conversation_id))):
        index_note(note)


def _put_title(conversation_id: int, created_at: datetime, body: str) -> None:
    """Insert, update or (empty body) delete one entry (a title's); the database's triggers or generated
    column keep the full-text index in step."""
    same = and_(ENTRIES.c.conversation_id == conversation_id, ENTRIES.c.role == "title")
    if not body:
        _run(delete(ENTRIES).where(same))
        return
    if not _run(update(ENTRIES).where(same).values(body=body)).rowcount:
        _run(insert(ENTRIES).values(conversation_id=conversation_id, role="title", created_at=created_at, body=body))


# -- queries -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """Words that must appear in this order; the last one as a prefix when ``prefix``."""

    words: tuple[str, ...]
    prefix: bool


def parse_query(query: str) -> list[Term]:
    """The terms of a query: bare words match as prefixes, "quoted phrases" as exact words in order (a
    phrase still being typed, its quote not yet closed, ends in a prefix)."""
    if len(query) > MAX_QUERY_CHARS:
        raise ChatError(
            f"A search can be at most {MAX_QUERY_CHARS} characters; this one has {len(query):,}.",
            422,
            "invalid",
            {"fields": [{"field": "q"}]},
        )
    terms: list[Term] = []
    for match in _TERMS.finditer(query):
        phrase, closed, bare = match.groups()
        words = tuple(normalise(phrase if phrase is not None else bare).split())
        if words and (term := Term(words, prefix=phrase is None or not closed)) not in terms:
            terms.append(term)
    if len(terms) > MAX_TERMS:
        raise ChatError(f"A search can have at most {MAX_TERMS} words or phrases.", 422, "invalid")
    return terms


def fts5_query(terms: list[Term]) -> str:
    """The terms as an FTS5 MATCH expression (words are letters and digits only: nothing to escape)."""
    return " ".join(f'"{" ".join(t.words)}"' + (" *" if t.prefix else "") for t in terms)


def tsquery(terms: list[Term]) -> str:
    """The terms as a PostgreSQL ``to_tsquery('simple', …)`` expression."""
    parts = []
    for t in terms:
        words = [f"'{w}'" for w in t.words]
        if t.prefix:
            words[-1] += ":*"
        parts.append("(" + " <-> ".join(words) + ")")
    return " & ".join(parts)


@dataclass(frozen=True)
class Filters:
    """What a search is narrowed to."""

    conversation_id: int | None = None
    role: str | None = None  # "user", "assistant" or "note"
    since: date | None = None  # the user's local dates, inclusive
    until: date | None = None
    order: str = "newest"  # or "relevance"


def parse_filters(args: Mapping[str, str]) -> Filters:
    """Filters from query-string style fields (``conversation``, ``role``, ``from``, ``to``, ``order``);
    a wrong one is a 422 that says what to change."""
    conversation = (args.get("conversation") or "").strip()
    if conversation and not (conversation.isascii() and conversation.isdigit() and len(conversation) <= 18):
        raise _field("conversation", "conversation must be a conversation's id.")
    role = (args.get("role") or "").strip() or None
    if role not in (None, *ROLES):
        raise _field("role", "role must be user, assistant or note (or left empty for all).")
    order = (args.get("order") or "").strip() or "newest"
    if order not in ORDERS:
        raise _field("order", "order must be newest or relevance.")
    since, until = _date(args, "from"), _date(args, "to")
    if since and until and since > until:
        raise _field("from", "The start date is after the end date: swap them.")
    return Filters(int(conversation) if conversation else None, role, since, until, order)


def _date(args: Mapping[str, str], name: str) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    if day is None or not 1900 <= day.year <= 9000:  # (also keeps the time zone arithmetic in range)
        raise _field(name, f"{name} must be a date written as YYYY-MM-DD, e.g. 2026-01-31.")
    return day


def _field(name: str, message: str) -> ChatError:
    return ChatError(message, 422, "invalid", {"fields": [{"field": name}]})


@dataclass(frozen=True)
class Result:
    """One match: a message, a note (``note_id``), or a conversation's title (``role`` "title")."""

    conversation_id: int
    title: str
    message_id: int | None
    note_id: int | None
    role: str  # "user", "assistant", "note" or "title"
    created_at: datetime
    snippet: Markup
    archived: bool


@dataclass
class Page:
    """A page of results and the cursor of the next one."""

    results: list[Result] = field(default_factory=list)
    next_cursor: str | None = None


def search(user: User, query: str, filters: Filters | None = None, limit: int = 20, cursor: str | None = None) -> Page:
    """The identity's messages, notes and titles matching ``query``, newest (last written) first or by relevance.

    Every branch counts; archived chats are included (marked), temporary chats never.
    """
    filters = filters or Filters()
    terms = parse_query(query)
    if not terms or user.id is None:
        return Page()
    postgres = db.engine.dialect.name == "postgresql"
    scope: list[ColumnElement[bool]] = [Conversation.user_id == user.id, Conversation.temporary == false()]
    scope += _filter_clauses(user, filters)
    offset = _decode_offset(cursor) if filters.order == "relevance" else 0
    if cursor and filters.order != "relevance":
        scope.append(SearchEntry.id < _decode_keyset(cursor))
    columns = (
        SearchEntry.id,
        SearchEntry.conversation_id,
        Conversation.title,
        SearchEntry.message_id,
        SearchEntry.note_id,
        SearchEntry.role,
        SearchEntry.created_at,
        func.coalesce(Message.content, Note.content).label("content"),
        Conversation.archived_at,
    )
    # Newest first is the order of indexing (entry ids grow as messages are written); "best match
    # first" ranks the newest matches (at most RELEVANCE_WINDOW; on PostgreSQL those among the newest WALK
    # entries when they hold a page), so a word in half of all messages costs no more than a rare one.
    needed = RELEVANCE_WINDOW if filters.order == "relevance" else limit + 1
    rank: ColumnElement[float]
    entry_id: ColumnElement[int]
    if postgres:
        words: ColumnElement[str] = literal_column("search_entry.words")
        matched = func.to_tsquery("simple", tsquery(terms))
        ids = _postgres_matches(scope, matched, limit + 1, needed)
        statement, entry_id = select(*columns).select_from(SearchEntry), SearchEntry.__table__.c.id
        where: list[ColumnElement[bool]] = [SearchEntry.id.in_(ids)]
        rank = -func.ts_rank(words, matched)  # lower is better, as with bm25
    else:
        # FTS5 walks its matches backwards by rowid itself and stops after a page.
        fts = table("search_fts", column("rowid"))
        statement = select(*columns).select_from(fts).join(SearchEntry, SearchEntry.id == fts.c.rowid)
        entry_id = fts.c.rowid
        match = text("search_fts MATCH :match").bindparams(match=fts5_query(terms))
        where = [*scope, match]  # type: ignore[list-item]  # a boolean SQL fragment
        rank = func.bm25(literal_column("search_fts"))
    statement = (
        statement.join(Conversation, Conversation.id == SearchEntry.conversation_id)
        .outerjoin(Message, Message.id == SearchEntry.message_id)
        .outerjoin(Note, Note.id == SearchEntry.note_id)
    )
    if filters.order == "relevance":
        window = statement.add_columns(rank.label("rank")).where(*where).order_by(entry_id.desc())
        candidates = window.limit(RELEVANCE_WINDOW).subquery()
        ranked = select(*(candidates.c[c.key] for c in columns if c.key)).order_by(
            candidates.c.rank, candidates.c.id.desc()
        )
        rows = db.session.execute(ranked.offset(offset).limit(limit + 1)).all()
    else:
        rows = db.session.execute(statement.where(*where).order_by(entry_id.desc()).limit(limit + 1)).all()
    page = Page([_result(row, terms) for row in rows[:limit]])
    if len(rows) > limit:
        last = rows[limit - 1]
        page.next_cursor = _encode(f"r|{offset + limit}") if filters.order == "relevance" else _encode(f"n|{last.id}")
    return page


def _postgres_matches(scope: list[ColumnElement[bool]], matched: ColumnElement, page: int, window: int) -> list[int]:
    """Ids of the newest matching entries in scope (up to ``window``), on PostgreSQL, in bounded steps.

    PostgreSQL cannot estimate how many rows a prefix (``pyth:*``) matches, so left to itself it may walk
    the whole table backwards looking for a rare word. First, the newest WALK entries in scope are
    matched one by one: that finds a page of any common word. If it does not, the word is rare: the GIN
    index lists every match (few, by then) and the newest in scope are kept.
    """
    words: ColumnElement[str] = literal_column("search_entry.words")
    recent = (
        select(SearchEntry.id, words.label("words"))
        .join(Conversation, Conversation.id == SearchEntry.conversation_id)
        .where(*scope)
        .order_by(SearchEntry.id.desc())
        .limit(WALK)
        .cte("recent")
        .prefix_with("MATERIALIZED")
    )
    walked = select(recent.c.id).where(recent.c.words.op("@@")(matched)).order_by(recent.c.id.desc())
    ids = list(db.session.scalars(walked.limit(window)))
    if len(ids) >= page:
        return ids
    every = list(db.session.scalars(select(SearchEntry.id).where(words.op("@@")(matched))))  # the GIN index
    query = (
        select(SearchEntry.id)
        .join(Conversation, Conversation.id == SearchEntry.conversation_id)
        .where(SearchEntry.id.in_(every), *scope)
        .order_by(SearchEntry.id.desc())
        .limit(window)
    )
    return list(db.session.scalars(query)) if every else []


def _filter_clauses(user: User, filters: Filters) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.conversation_id is not None:
        clauses.append(SearchEntry.conversation_id == filters.conversation_id)
    if filters.role:
        clauses.append(SearchEntry.role == filters.role)
    if filters.since:
        clauses.append(SearchEntry.created_at >= _utc_midnight(user, filters.since))
    if filters.until:
        clauses.append(SearchEntry.created_at < _utc_midnight(user, filters.until + timedelta(days=1)))
    return clauses


def _utc_midnight(user: User, day: date) -> datetime:
    """The start of ``day`` in the user's time zone, as naive UTC (how times are stored)."""
    try:
        zone = ZoneInfo(user.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.combine(day, time(), zone).astimezone(UTC).replace(tzinfo=None)


def _result(row: Row, terms: list[Term]) -> Result:
    source = row.title if row.role == "title" else row.content or ""
    return Result(
        row.conversation_id,
        row.title,
        row.message_id,
        row.note_id,
        row.role,
        row.created_at,
        snippet(source, terms),
        row.archived_at is not None,
    )


# -- snippets ----------------------------------------------------------------------------------------------
def snippet(source: str, terms: list[Term], length: int = SNIPPET_CHARS) -> Markup:
    """An escaped excerpt of ``source`` around its first match, the matching words in ``<mark>``."""
    source = unicodedata.normalize("NFC", source)
    exact = {w for t in terms for w in (t.words if not t.prefix else t.words[:-1])}
    prefixes = tuple(t.words[-1] for t in terms if t.prefix)
    spans = []
    for match in _WORDS.finditer(source):
        word = normalise(match.group())
        if word in exact or (prefixes and word.startswith(prefixes)):
            spans.append(match.span())
    first = spans[0][0] if spans else 0
    start = 0 if first < length // 3 else _word_start(source, first - length // 3)
    end = min(len(source), start + length)
    if end < len(source):
        end = max(source.rfind(" ", start, end), first + 1) if " " in source[start:end] else end
    parts = ["…" if start > 0 else ""]
    cursor = start
    for begin, finish in spans:
        if begin < start or begin >= end:
            continue
        finish = min(finish, end)
        parts.append(str(escape(source[cursor:begin])) + f"<mark>{escape(source[begin:finish])}</mark>")
        cursor = finish
    parts.append(str(escape(source[cursor:end])) + ("…" if end < len(source) else ""))
    return Markup(" ".join("".join(parts).split()))


def _word_start(source: str, index: int) -> int:
    space = source.find(" ", max(0, index))
    return space + 1 if 0 <= space < index + 20 else max(0, index)


# -- cursors -----------------------------------------------------------------------------------------------
def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _bad_cursor() -> ChatError:
    return ChatError("cursor is not one this search gave out; start without it.", 422, "invalid")


def _decode(cursor: str, kind: str) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
    except ValueError:
        raise _bad_cursor() from None
    if parts[0] != kind:
        raise _bad_cursor()
    return parts[1:]


def _decode_keyset(cursor: str) -> int:
    try:
        (last_id,) = _decode(cursor, "n")
        row = int(last_id)
    except ValueError:
        raise _bad_cursor() from None
    if not 0 < row < 2**63:
        raise _bad_cursor()
    return row


def _decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        (offset,) = _decode(cursor, "r")
        value = int(offset)
    except ValueError:
        raise _bad_cursor() from None
    if not 0 <= value <= 10_000:
        raise _bad_cursor()
    return value
