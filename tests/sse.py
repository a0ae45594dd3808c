"""Reading Server-Sent Events in tests, from a Flask test response or an httpx stream."""

from __future__ import annotations

import html
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


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


def collect(chunks: Iterable[bytes | str], stop_after: int | None = None) -> tuple[str, list[Event]]:
    """Read until the ``done`` event (or ``stop_after`` deltas); returns the delta text and events."""
    chunks = iter(chunks)
    events: list[Event] = []
    text = ""
    deltas = 0
    for item in parse(chunks):
        if isinstance(item, str):
            continue
        events.append(item)
        if item.event == "delta":
            text += item.text
            deltas += 1
            if stop_after is not None and deltas >= stop_after:
                break
        if item.event == "done":
            for _ in chunks:  # read to the end, so the server side of the stream finishes too
                pass
            break
    return text, events
