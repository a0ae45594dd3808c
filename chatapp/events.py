"""Following an answer as it streams: replay, live deltas, the end; and the SSE wire format."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from . import metrics
from .errors import ChatError
from .extensions import db
from .generation import current_generator
from .models import STREAMING, Message, mark_stale_interrupted, utcnow

PING_EVERY = 15.0  # seconds between keep-alive comments
COALESCE = 0.05  # seconds to let deltas pile up after sending one: fewer, larger events under load
LAG_SAMPLE_EVERY = 1.0  # seconds between a follower's broker-lag observations
CHECK_EVERY = 2.0  # seconds of silence after which the database is asked whether the answer ended


@dataclass(frozen=True)
class Delta:
    """New text; ``end`` is the character offset after it (the SSE event id)."""

    text: str
    end: int


@dataclass(frozen=True)
class Status:
    """No text yet, and why: e.g. ``{"state": "retrying", "attempt": 2, "in_ms": 800, "model": …}``."""

    state: dict


@dataclass(frozen=True)
class NoteSaved:
    """The assistant saved a note (``schemas.NoteOut`` as JSON): sent on its own channel, never in the text."""

    note: dict


class Ping:
    """Time for a keep-alive comment."""


@dataclass(frozen=True)
class Done:
    """The answer has ended: ``message`` is its final state, loaded once for whichever door formats it."""

    message: Message | None


class Tick:
    """Nothing new for ``tick`` seconds (only when the follower asked for ticks)."""


Update = Delta | Status | NoteSaved | Ping | Done | Tick


def follow(message_id: int, after: int = 0, coalesce: float = COALESCE, tick: float | None = None) -> Iterator[Update]:
    """Everything after character ``after`` of an answer, then live deltas, then Done.

    Reads the broker; if the broker has nothing (the generator runs elsewhere without a shared
    broker, or died), the database decides: a finished answer ends the stream, a stale one is
    marked interrupted first. After each delta it waits ``coalesce`` seconds, so what arrives
    meanwhile comes as one; with ``tick``, a quiet spell of that long yields a Tick.
    """
    metrics.STREAMS_OPEN.inc()
    try:
        yield from _follow(message_id, after, coalesce, tick)
    finally:
        metrics.STREAMS_OPEN.dec()


def _follow(message_id: int, after: int, coalesce: float, tick: float | None) -> Iterator[Update]:
    yield Ping()
    if _status(message_id) != STREAMING:
        yield from _finished(message_id)
        return
    broker = current_generator().broker
    lag = metrics.BROKER_LAG.labels(broker=type(broker).__name__.removesuffix("Broker").lower())
    since = time.time()  # events published before are replayed, not received live: no lag to measure
    last_lag = 0.0
    cursor = None
    sent = after
    last_ping = last_news = time.monotonic()
    while True:
        events, cursor = broker.read(message_id, cursor, timeout=tick or 1.0)
        pieces: list[str] = []
        ordered: list[Delta | NoteSaved] = []  # text before a note comes before it, text after after it
        done = False
        status = None  # the latest status, unless text or the end came after it (a replay has it all)
        # At most once a second per follower, for the oldest event of a batch received live (published
        # since this follower began): a sample of the lag, without an observation on every batch.
        if events and time.time() - last_lag >= LAG_SAMPLE_EVERY:
            live = [event.at for event in events if event.at >= since]
            if live:
                last_lag = time.time()
                lag.observe(last_lag - min(live))
        for event in events:
            if event.kind == "done":
                done = True
                continue
            if event.kind == "status":
                status = json.loads(event.text)
                continue
            if event.kind == "note":
                if event.offset >= after:  # a viewer resuming past it has had it
                    if pieces:
                        ordered.append(Delta("".join(pieces), sent))
                        pieces = []
                    ordered.append(NoteSaved(json.loads(event.text)))
                continue
            status = None
            if event.offset > sent:  # the broker lost events (Redis restarted before they were read)
                pieces.append(_missing(message_id, sent, event.offset))
                sent = event.offset
            end = event.offset + len(event.text)
            if end > sent:
                pieces.append(event.text[max(0, sent - event.offset) :])
                sent = end
        now = time.monotonic()
        if pieces:
            ordered.append(Delta("".join(pieces), sent))
        if ordered:
            yield from ordered
            last_news = now
        wrote = any(isinstance(u, Delta) for u in ordered)
        if status is not None and not done:
            yield Status(status)
            last_news = now
        elif not wrote and tick is not None and not done:
            yield Tick()
        if done:  # one query for the final state (a "done" of an earlier run, since continued, is stale)
            message = db.session.get(Message, message_id)
            if message is None or message.status != STREAMING:
                yield from _finished(message_id, message)
                return
            db.session.close()
        if now - last_ping >= PING_EVERY:
            yield Ping()
            last_ping = now
        if not events and now - last_news >= CHECK_EVERY:
            last_news = now
            if _status(message_id) != STREAMING:
                yield from _finished(message_id)
                return
        if wrote:
            time.sleep(coalesce)


def _missing(message_id: int, start: int, end: int) -> str:
    """Characters ``start:end`` of an answer, from its generator if it runs here, else once flushed."""
    generation = current_generator().running.get(message_id)
    if generation is not None:
        with generation.lock:
            text = generation.text()
        if len(text) >= end:
            return text[start:end]
    deadline = time.monotonic() + 2 * current_app.config["FLUSH_INTERVAL"] + 1.0
    while True:
        try:
            content = db.session.scalar(select(Message.content).where(Message.id == message_id)) or ""
        finally:
            db.session.close()
        if len(content) >= end or time.monotonic() > deadline:
            return content[start:end]
        time.sleep(0.05)


def _finished(message_id: int, message: Message | None = None) -> Iterator[Done]:
    """The final state (``message`` if already read), valid, relationships and all, until the door
    asks for the next update."""
    try:
        yield Done(message or db.session.get(Message, message_id))
    finally:
        db.session.close()


def _status(message_id: int) -> str | None:
    """The stored status, marking the answer interrupted if its generator stopped heart-beating.

    An answer this process is writing is streaming, and not stale: no need to ask the database (its end
    is stored before it leaves ``running``, and the follower reads the stored end when "done" comes).
    """
    if message_id in current_generator().running:
        return STREAMING
    try:
        row = db.session.execute(
            select(Message.status, Message.updated_at).where(Message.id == message_id)
        ).one_or_none()
        if row is None:
            return None
        status: str | None
        status, updated_at = row
        stale = utcnow() - timedelta(seconds=current_app.config["STALE_AFTER"])
        if status == STREAMING and updated_at < stale:
            mark_stale_interrupted(stale, message_id)
            status = db.session.scalar(select(Message.status).where(Message.id == message_id))
        return status
    finally:
        db.session.close()  # hand the connection back: a stream may stay open for minutes


LINE_BREAK = re.compile(r"\r\n|\r|\n")  # every line ending the SSE format knows


def sse(data: str, event: str | None = None, event_id: str | int | None = None) -> str:
    """One Server-Sent Event; multi-line data becomes several ``data:`` lines.

    Data is split on every line ending a browser recognises (a bare ``\\r`` too), so text from
    the model can never start a line of its own and forge an ``event:`` or end the event early.
    """
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in LINE_BREAK.split(data))
    return "\n".join(lines) + "\n\n"


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def resume_offset(last_event_id: str | None, after: str | None) -> int:
    """Where a (re)connecting viewer's text ends: Last-Event-ID wins over ``?after=``.

    Anything but a whole number (ASCII digits: ``int()`` would take "١" and fail on "²") is a 422.
    """
    for name, value in (("Last-Event-ID", last_event_id), ("after", after)):
        if not value:
            continue
        if not OFFSET.fullmatch(value):
            message = f"{name} must be a whole number of characters, as the stream's event ids are."
            raise ChatError(message, 422, details={"fields": [{"field": name}]})
        return int(value)
    return 0


OFFSET = re.compile(r"[0-9]{1,15}")
