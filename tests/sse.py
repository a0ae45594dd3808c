"""Reading Server-Sent Events in tests, from a Flask test response or an httpx stream."""

from __future__ import annotations

import html
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

OUT_OF_BAND = re.compile(r'<div hx-swap-oob="beforeend:#blocks-\d+">')


@dataclass
class Event:
    event: str | None
    data: str
    id: str | None

    @property
    def text(self) -> str:
        """The visible text of a delta event (its HTML, unescaped)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.data))


class Stream:
    """An SSE response read in a thread of its own, as a browser would on its own connection.

    Flask's test client runs a streamed response in the calling thread's context; reading two
    streams, or sending requests while one is open, from one thread would tangle their contexts.
    """

    def __init__(self, open_response: Callable[[], Any]) -> None:
        self._chunks: queue.Queue = queue.Queue()
        self.response = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, args=(open_response,), daemon=True).start()
        self._ready.wait(10)

    def _read(self, open_response: Callable[[], Any]) -> None:
        try:
            self.response = open_response()
            self._ready.set()
            for chunk in self.response.response:
                self._chunks.put(chunk)
            self.response.close()
        finally:
            self._ready.set()
            self._chunks.put(None)

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> Any:
        return self.response.headers

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._chunks.get(timeout=30)) is not None:
            yield chunk


def parse(chunks: Iterable[bytes | str]) -> Iterator[Event | str]:
    """Events as they arrive; comments (pings) come through as strings."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            if block.startswith(":"):
                yield block
                continue
            fields: dict[str, list[str]] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields.setdefault(name, []).append(value)
            yield Event(fields.get("event", [None])[0], "\n".join(fields.get("data", [])), fields.get("id", [None])[0])


def visible_text(markup: str) -> str:
    """The words HTML shows, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


PENDING_CLEARED = re.compile(r'^<span id="pending-\d+" hx-swap-oob="innerHTML"></span>')


def split_out_of_band(data: str) -> tuple[str, str]:
    """A page-stream "tail" event's data: (the finished blocks it appends out of band, the new tail).

    The empty out-of-band span that clears the text shown since the last render is left out."""
    found = OUT_OF_BAND.match(data)
    if not found:
        return "", PENDING_CLEARED.sub("", data, count=1)
    depth, pos = 1, found.end()
    for tag in re.finditer(r"<(/?)div\b", data[pos:]):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return data[pos : pos + tag.start()], PENDING_CLEARED.sub("", data[pos + tag.end() + 1 :], count=1)
    raise AssertionError(f"unclosed out-of-band wrapper: {data!r}")


class _Content(HTMLParser):
    """Finds the inner HTML of the first element with class "content"."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=False)
        self.source, self.depth, self.start, self.inner = source, 0, None, None
        self.lines = [0]
        for line in source.splitlines(keepends=True):
            self.lines.append(self.lines[-1] + len(line))
        self.feed(source)

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.inner is not None:
            return
        if self.start is None and "content" in (dict(attrs).get("class") or "").split():
            self.start, self.depth = self._offset() + len(self.get_starttag_text()), 1
        elif self.start is not None and tag == "div":
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.start is not None and self.inner is None and tag == "div":
            self.depth -= 1
            if self.depth == 0:
                self.inner = self.source[self.start : self._offset()]


def message_content(markup: str) -> str:
    """The inner HTML of a rendered message's content element."""
    return _Content(markup).inner or ""


@dataclass
class Page:
    """An answer as the page shows it, from the page stream's events applied as HTMX applies them:
    "tail" appends the finished blocks it carries, replaces the tail and empties the text shown since
    the last render; "text" appends to that text; "done" replaces everything."""

    blocks: str = ""
    tail: str = ""
    pending: str = ""  # the (escaped) text of "text" events since the last "tail"
    offset: int = 0  # the id of the last update: how much of the text it shows
    updates: int = 0
    final: str | None = None  # the message HTML of the "done" event

    def apply(self, event: Event) -> None:
        if event.event == "tail":
            added, self.tail = split_out_of_band(event.data)
            self.blocks += added
            self.pending = ""
            self.offset = int(event.id)
            self.updates += 1
        elif event.event == "text":
            self.pending += event.data
            self.updates += 1
        elif event.event == "done":
            self.final = event.data

    @property
    def streamed(self) -> str:
        """The HTML the updates built (before any final event)."""
        return self.blocks + self.tail.strip() + self.pending

    @property
    def html(self) -> str:
        """What the page shows: the final message's content once it came, else what streamed."""
        return message_content(self.final) if self.final is not None else self.streamed

    @property
    def text(self) -> str:
        return visible_text(self.html)


def collect(
    chunks: Iterable[bytes | str], stop_after: int | None = None, page: Page | None = None
) -> tuple[Page, list[Event]]:
    """Read until the ``done`` event (or ``stop_after`` updates), applying each to ``page`` (or a
    new one); returns the page and the events. API streams: the events' data is raw JSON."""
    chunks = iter(chunks)
    page = page or Page()
    events: list[Event] = []
    updates = 0
    for item in parse(chunks):
        if isinstance(item, str):
            continue
        events.append(item)
        page.apply(item)
        if item.event in ("tail", "delta"):  # renders, or the API's deltas
            updates += 1
            if stop_after is not None and updates >= stop_after:
                break
        if item.event == "done":
            for _ in chunks:  # read to the end, so the server side of the stream finishes too
                pass
            break
    return page, events
