"""Test helpers: waiting on a condition, an API client, a server for a configured app, a WebSocket client.

Fixtures stay in ``conftest.py``; these are plain helpers the tests import.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from werkzeug.serving import make_server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, RejectConnection, Request, TextMessage

from chatapp.extensions import db
from chatapp.models import Message
from tests.sse import Stream

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``condition`` until it returns something truthy (and return that); fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def stored(app: Any, message_id: int) -> Message:
    """The message as the database has it now."""
    with app.app_context():
        message = db.session.get(Message, message_id)
        db.session.expunge_all()
        return message


def ndjson(chunks: Iterable[bytes]) -> Iterator[dict]:
    """JSON lines as they arrive."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


class ApiClient:
    """A program using ``/api/v1`` with a bearer token, through Flask's test client."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self.client = app.test_client()
        if token is None:
            response = self.client.post("/api/v1/auth/guest")
            assert response.status_code == 201, response.get_data(as_text=True)
            token = response.get_json()["token"]
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: object = None, **headers: str):  # noqa: ANN201
        """One JSON request; ``path`` is below ``/api/v1``."""
        return self.client.open(
            f"/api/v1{path}",
            method=method,
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            headers={**self.headers, **headers},
        )

    def stream(self, method: str, path: str, body: object = None, **headers: str) -> Stream:
        """A streamed response (SSE or NDJSON), read in a thread of its own."""
        return Stream(
            lambda: self.client.open(
                f"/api/v1{path}",
                method=method,
                data=json.dumps(body) if body is not None else None,
                content_type="application/json",
                headers={**self.headers, **headers},
                buffered=False,
            )
        )


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1 (threaded); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


class WebSocket:
    """A WebSocket client on wsproto that also shows the protocol's pings (and may leave them unanswered)."""

    def __init__(self, base_url: str, token: str, answer_pings: bool = True) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.received: list[dict] = []
        self.pings = 0
        self.closed: CloseConnection | None = None
        self._events: deque[Event] = deque()
        self._partial = ""
        headers = [(b"authorization", f"Bearer {token}".encode())]
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target="/api/v1/ws", extra_headers=headers)))
        accepted = self._next_event(10.0)
        if isinstance(accepted, RejectConnection):
            raise AssertionError(f"the WebSocket was refused ({accepted.status_code})")
        assert isinstance(accepted, AcceptConnection), accepted

    def send(self, **message: object) -> None:
        """Send one JSON message."""
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(message))))

    def until(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """Receive JSON messages until one matches ``predicate``; returns it (all are kept in ``received``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"not received within {timeout} s; the last were {self.received[-5:]}")

    def receive(self, timeout: float) -> dict | None:
        """The next JSON message, or None if a ping, the close or nothing came first."""
        event = self._next_event(timeout)
        if isinstance(event, Ping):
            self.pings += 1
            if self.answer_pings:
                self.sock.sendall(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.closed = event
            with contextlib.suppress(Exception):
                self.sock.sendall(self.ws.send(event.response()))
            self.sock.close()
            raise ConnectionError(f"closed by the server: {event.code} {event.reason}")
        elif isinstance(event, TextMessage):
            self._partial += event.data  # wsproto hands over a message in pieces as its bytes arrive
            if event.message_finished:
                message = json.loads(self._partial)
                self._partial = ""
                self.received.append(message)
                return message
        return None

    def _next_event(self, timeout: float) -> Event | None:
        deadline = time.monotonic() + timeout
        while not self._events:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                self.sock.close()
                raise ConnectionError("the server closed the connection")
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    def close(self) -> None:
        """Close politely, then the socket."""
        with contextlib.suppress(Exception):
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self.sock.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's; never a downloaded browser
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # A fake microphone (a beep) that needs no permission prompt, for the voice input tests.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium driven by Playwright (skipped, or failed in CI, when it is not installed)."""
    from tests.conftest import skip_or_fail

    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
