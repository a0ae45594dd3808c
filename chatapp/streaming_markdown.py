"""Markdown while it streams: one render per answer for every page that watches it.

An answer still being written is split into top-level blocks (``rendering.split_blocks``). A block
that is finished (the next one has begun) is rendered once; the unfinished tail after it is
rendered again as it grows, at most every ``RENDER_INTERVAL`` seconds. The renders live in a
``Document`` per answer, shared by every follower in the process, so two pages watching one answer
cost what one does. Each render is addressed by the text offset it reaches (the SSE event id): a
page that has offset N has the blocks finished by then and the tail as of N, so a resuming page
gets the blocks finished since and the current tail.

Between renders the page gets the new text as it arrives (``Text``, every 50 ms like the API's
deltas), shown as plain text after the tail until the next render replaces it: words keep flowing
at the API's pace while Markdown is rendered four times a second. Text carries no offset of its
own, so a page that reconnects resumes from its last render, and gets text only after a render.

A page whose one event stream carries everything (a room's page, a live share link's page) follows
its answers with ``pump_answer``: a thread per answer puts ``AnswerUpdate``, ``AnswerText`` and
``AnswerDone`` into the stream's queue, tagged with the answer's id.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .events import COALESCE, Delta, Done, NoteSaved, Ping, Status, Tick, follow
from .extensions import db
from .rendering import markdown_html, split_blocks

RENDER_INTERVAL = 0.25  # seconds between renders of one answer's tail: about four a second
RENDERS: Counter[str] = Counter()  # renders done in this process: "block" (each once) and "tail"


@dataclass(frozen=True)
class Text:
    """Text that arrived since the page's last update, to show as it is until the next render."""

    text: str


@dataclass(frozen=True)
class Rendered:
    """What a page lacks: the blocks finished since its offset, the current tail, the new offset."""

    blocks: str
    tail: str
    end: int


class Document:
    """The text of one answer as followers have read it, and its renders."""

    def __init__(self) -> None:
        self.text = ""
        self.users = 0
        self._cut = 0  # where the unfinished tail starts
        self._decided: list[int] = []  # per finished block: the text length from which it is finished
        self._blocks: list[str] = []  # per finished block: its HTML
        self._rendered = (0, 0, "")  # text length, finished blocks and tail HTML of the last render
        self._rendered_at = float("-inf")
        self._lock = threading.Lock()

    def feed(self, end: int, text: str) -> None:
        """Text that ends at offset ``end`` (a follower's delta); what the document has is skipped."""
        with self._lock:
            start = end - len(text)
            if start <= len(self.text) < end:
                self.text += text[len(self.text) - start :]

    def text_after(self, offset: int) -> str:
        """The text past ``offset``."""
        with self._lock:
            return self.text[offset:]

    def space_before(self, offset: int) -> bool:
        """True if the text just before ``offset`` is white space."""
        with self._lock:
            return 0 < offset <= len(self.text) and self.text[offset - 1].isspace()

    def update_after(self, shown: int, now: float) -> Rendered | None:
        """What a page at offset ``shown`` lacks, rendering first if the last render is old enough."""
        with self._lock:
            length, count, tail = self._rendered
            if length < len(self.text) and now - self._rendered_at >= RENDER_INTERVAL * 0.9:
                length, count, tail = self._render()
                self._rendered_at = now
            if length <= shown:
                return None
            first = bisect_right(self._decided, shown, hi=count)
            return Rendered("".join(self._blocks[first:count]), tail, length)

    def _render(self) -> tuple[int, int, str]:
        found, self._cut = split_blocks(self.text, self._cut)
        for start, end, decided in found:
            self._decided.append(decided)
            self._blocks.append(markdown_html(self.text[start:end]))
        RENDERS["block"] += len(found)
        RENDERS["tail"] += 1
        self._rendered = (len(self.text), len(self._blocks), markdown_html(self.text[self._cut :]))
        return self._rendered


_documents: dict[int, Document] = {}
_documents_lock = threading.Lock()


@contextmanager
def shared_document(message_id: int) -> Iterator[Document]:
    """The answer's document, shared while anyone in this process follows it."""
    with _documents_lock:
        document = _documents.setdefault(message_id, Document())
        document.users += 1
    try:
        yield document
    finally:
        with _documents_lock:
            document.users -= 1
            if document.users == 0 and _documents.get(message_id) is document:
                del _documents[message_id]


def follow_rendered(
    message_id: int, after: int = 0, resumed: bool = False
) -> Iterator[Rendered | Text | Status | NoteSaved | Ping | Tick | Done]:
    """A page's view of an answer past offset ``after``: renders and the text between them, statuses,
    saved notes, pings, ticks (a quarter of a second with nothing new), Done.

    ``resumed``: the page reconnected and may show text past its last render, so it gets text only
    after this connection's first render (which replaces that text).
    """
    with shared_document(message_id) as document:
        shown = after  # the last render the page has
        has: int | None = None if resumed else after  # where the page's text ends, render or text
        # From the start: rendering needs the whole text, even when the page has part of it.
        for update in follow(message_id, 0, coalesce=COALESCE, tick=RENDER_INTERVAL):
            if isinstance(update, Delta):
                document.feed(update.end, update.text)
            elif isinstance(update, NoteSaved) and (update.note.get("offset") or 0) < after:
                continue  # saved before the page's text ends: the page has it in its panel
            elif not isinstance(update, Tick):
                yield update
                continue
            rendered = document.update_after(shown, time.monotonic())
            if rendered is not None:
                shown = has = rendered.end
                yield rendered
            elif has is not None and (text := document.text_after(has)):
                # A render's HTML ends without the space its text ended with: the first words after it
                # get that space back, or they would run into its last word ("word59word60").
                lead = " " if has == shown and document.space_before(has) else ""
                has += len(text)
                yield Text(lead + text)
            elif isinstance(update, Tick):
                yield update  # nothing new: the reader may check on things (access, a closed page)


# -- one stream per page ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerUpdate:
    """An answer being written grew (rendered Markdown). ``whole``: ``rendered.blocks`` are all its
    finished blocks (the first render of a follow from the start): they replace what the page shows."""

    message_id: int
    rendered: Rendered
    whole: bool = False


@dataclass(frozen=True)
class AnswerText:
    """Words that arrived since the answer's last render, shown as plain text until the next one."""

    message_id: int
    text: str


@dataclass(frozen=True)
class AnswerDone:
    """An answer ended: show its final state."""

    message_id: int


AnswerEvent = AnswerUpdate | AnswerText | AnswerDone


def pump_answer(
    app: object,
    message_id: int,
    after: int,
    put: Callable[[AnswerEvent], None],
    closed: threading.Event,
    resumed: bool = False,
    ended: Callable[[], None] | None = None,
) -> None:
    """Follow one answer past offset ``after`` in a thread of its own, handing each update to ``put``,
    until it ends or ``closed`` is set (then ``ended`` is called). ``resumed`` as for ``follow_rendered``:
    from 0 with ``resumed``, the first render replaces whatever the page shows of the answer."""

    def run() -> None:
        whole = after == 0
        with app.app_context():  # type: ignore[attr-defined]
            try:
                for update in follow_rendered(message_id, after, resumed=resumed):
                    if closed.is_set():
                        return
                    if isinstance(update, Rendered):
                        put(AnswerUpdate(message_id, update, whole))
                        whole = False
                    elif isinstance(update, Text):
                        put(AnswerText(message_id, update.text))
                    elif isinstance(update, Done):
                        put(AnswerDone(message_id))
                        return
            finally:
                if ended is not None:
                    ended()
                db.session.remove()

    threading.Thread(target=run, daemon=True, name=f"answer-{message_id}").start()
