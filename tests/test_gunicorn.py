"""The production setup: the Procfile's web command (gunicorn, gevent workers) over real HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import Reply
from tests.sse import collect

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(port: int) -> list[str]:
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = os.path.expandvars(line.removeprefix("web:").strip().replace("$PORT", str(port)))
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), command)
    words = shlex.split(command)
    env_prefix = [w for w in words if re.fullmatch(r"[A-Z_]+=.*", w)]
    return ["env", *env_prefix, sys.executable, "-m", *words[len(env_prefix) :]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tmp_path) -> Iterator:  # noqa: ANN001
    processes, clients = [], []

    def start(*args: str, **env: str) -> httpx.Client:
        """Start the Procfile's command (with gunicorn ``args`` added) on a free port."""
        port = free_port()
        full_env = {
            **os.environ,
            "SECRET_KEY": "gunicorn-test",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite3'}",
            "PYTHONPATH": str(ROOT),
            "WEB_CONCURRENCY": "1",
            "SECURE_COOKIES": "0",  # production mode, but plain HTTP on 127.0.0.1: the cookie must come back
            **env,
        }
        process = subprocess.Popen([*procfile_command(port), *args], cwd=ROOT, env=full_env, stderr=subprocess.DEVNULL)
        processes.append(process)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        clients.append(client)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)

    start.processes = processes  # type: ignore[attr-defined]
    yield start
    for client in clients:
        client.close()
    for process in processes:
        process.terminate()
        process.wait(20)


def open_chat(client: httpx.Client, content: str) -> tuple[str, str, int]:
    """Start a conversation: (CSRF token, conversation URL, answer id)."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
    response = client.post("/conversations", data={"csrf_token": token, "content": content})
    assert response.status_code == 303
    url, answer = response.headers["Location"].split("#message-")
    return token, url, int(answer)


def read_answer(client: httpx.Client, answer_id: int, limit: int | None = None) -> str:
    """The answer's words as its page shows them, read from its event stream (``limit`` updates)."""
    with client.stream("GET", f"/messages/{answer_id}/events") as stream:
        assert stream.headers["X-Accel-Buffering"] == "no"
        page, _ = collect(stream.iter_bytes(), stop_after=limit)
    return page.text


def test_procfile_serves_streams_and_stops(serve, upstream) -> None:  # noqa: ANN001
    client = serve(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="k", CHAT_MODEL="fake-model")
    upstream.script(Reply(delay=0.05))
    _, _, answer_id = open_chat(client, "hello gunicorn")
    assert read_answer(client, answer_id) == "Echo: hello gunicorn"

    upstream.script(Reply(tokens=[f" w{i}" for i in range(200)], delay=0.02))
    token, url, answer_id = open_chat(client, "long one")
    seen = read_answer(client, answer_id, limit=3)
    assert client.post(f"/messages/{answer_id}/stop", data={"csrf_token": token}).status_code == 303
    page = client.get(url).text
    assert f'id="message-{answer_id}" class="message assistant" data-status="stopped"' in page
    assert seen.strip() in page


def serve_for_a_burst(serve, upstream) -> httpx.Client:  # noqa: ANN001
    """The Procfile's worker for thirty new guests sending at once: no per-IP or per-identity limits."""
    client = serve(
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_API_KEY="k",
        CHAT_MODEL="fake-model",
        ANSWER_LIMITS="off",
        GUEST_LIMIT_PER_IP="off",
    )
    upstream.set_default(Reply(tokens=[" ok"]))
    return client


def test_a_burst_of_sends_does_not_hold_back_the_answers_it_started(serve, upstream) -> None:  # noqa: ANN001
    """Thirty sends reach the worker in the same instant. The first answers go to the model while the
    later sends are still being taken, not all after the last one (each send takes its turn of the
    event loop: chatapp.blocking.TakeTurns), so the first people see words first."""
    client = serve_for_a_burst(serve, upstream)
    requests = []
    for _ in range(30):
        token = client.post("/api/v1/auth/guest").json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        conversation = client.post("/api/v1/conversations", json={}, headers=headers).json()["id"]
        body = b'{"content": "hello"}'
        requests.append(
            f"POST /api/v1/conversations/{conversation}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
    sockets = [socket.create_connection(("127.0.0.1", client.base_url.port)) for _ in requests]
    time.sleep(0.5)  # every connection accepted and waiting: the requests now arrive together
    started = time.monotonic()
    for sock, request in zip(sockets, requests, strict=True):
        sock.sendall(request)
    answered = read_all(sockets)
    assert all(status.startswith(b"HTTP/1.1 202") for status, _ in answered)
    last_answered = max(at for _, at in answered) - started
    upstream.wait_for_requests(30)
    first_asked = min(upstream.arrivals) - started
    assert first_asked < last_answered / 2, (first_asked, last_answered)


def test_a_burst_of_websocket_sends_does_not_hold_back_the_answers_it_started(serve, upstream) -> None:  # noqa: ANN001
    """The same over the WebSocket: thirty sockets send at once; the first answer goes to the model
    before half of them are told their message was created."""
    import json

    from simple_websocket import Client

    client = serve_for_a_burst(serve, upstream)
    base = str(client.base_url).rstrip("/").replace("http://", "ws://")
    tokens = [client.post("/api/v1/auth/guest").json()["token"] for _ in range(30)]
    sockets = [Client.connect(f"{base}/api/v1/ws?token={token}") for token in tokens]
    created: list[float] = []

    def wait_for_the_answer(ws: Client) -> None:  # its second message_created is the answer's
        seen = 0
        while seen < 2:
            if json.loads(ws.receive(timeout=30))["type"] == "message_created":
                seen += 1
        created.append(time.monotonic())

    readers = [threading.Thread(target=wait_for_the_answer, args=(ws,)) for ws in sockets]
    try:
        for reader in readers:
            reader.start()
        time.sleep(0.5)  # every socket open and idle: the messages now arrive together
        started = time.monotonic()
        for number, ws in enumerate(sockets):
            ws.send(
                json.dumps(
                    {"type": "send_message", "request_id": str(number), "conversation_id": None, "content": "hi"}
                )
            )
        for reader in readers:
            reader.join(30)
        assert len(created) == 30
        upstream.wait_for_requests(30)
        first_asked, last_created = min(upstream.arrivals) - started, max(created) - started
        assert first_asked < last_created / 2, (first_asked, last_created)
    finally:
        for ws in sockets:
            ws.close()


def read_all(sockets: list[socket.socket]) -> list[tuple[bytes, float]]:
    """Each socket's whole response (read until the server closes it): its status line, and when it ended."""
    import selectors

    selector = selectors.DefaultSelector()
    received = {sock: b"" for sock in sockets}
    ended: dict[socket.socket, float] = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while len(ended) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            data = key.fileobj.recv(65536)
            if data:
                received[key.fileobj] += data
            else:
                ended[key.fileobj] = time.monotonic()
                selector.unregister(key.fileobj)
                key.fileobj.close()
    assert len(ended) == len(sockets), "the server did not answer every send"
    return [(received[sock].split(b"\r\n", 1)[0], ended[sock]) for sock in sockets]


@pytest.mark.slow
def test_local_model_does_not_block_other_requests(serve) -> None:  # noqa: ANN001
    """Under gevent the bundled model runs in a real OS thread: the server answers meanwhile."""
    client = serve(MAX_RESPONSE_TOKENS="300", OPENAI_BASE_URL="", OPENAI_API_KEY="")
    assert client.get("/healthz").json()["provider"] == "local"
    _, _, answer_id = open_chat(client, "Write a long story about a lighthouse keeper.")
    answered_while_generating = 0
    for _ in range(20):
        started = time.monotonic()
        health = client.get("/healthz").json()
        if health["generations_running"] == 1 and time.monotonic() - started < 1.0:
            answered_while_generating += 1
        time.sleep(0.05)
    assert answered_while_generating >= 5
    assert read_answer(client, answer_id)  # and the answer itself streams to the end


def test_websocket_under_the_procfile_worker(serve, upstream) -> None:  # noqa: ANN001
    import json

    from simple_websocket import Client

    client = serve(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="k", CHAT_MODEL="fake-model")
    token = client.post("/api/v1/auth/guest").json()["token"]
    upstream.script(Reply(tokens=[f" g{i}" for i in range(10)], delay=0.02))
    ws = Client.connect(str(client.base_url).rstrip("/").replace("http://", "ws://") + f"/api/v1/ws?token={token}")
    try:
        ws.send(json.dumps({"type": "send_message", "request_id": "1", "conversation_id": None, "content": "hi"}))
        chunks = ""
        while True:
            message = json.loads(ws.receive(timeout=10))
            if message["type"] == "chunk":
                chunks += message["content"]
            if message["type"] == "done":
                break
        assert chunks == message["message"]["content"] == "".join(f" g{i}" for i in range(10))
    finally:
        ws.close()


def test_graceful_restart_finishes_answers_and_interrupts_the_rest(serve, upstream, tmp_path) -> None:  # noqa: ANN001
    """SIGTERM: answers go on until the graceful timeout (less a margin); the rest end interrupted, text kept."""
    llm = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k", "CHAT_MODEL": "fake-model"}
    client = serve("--graceful-timeout", "6", **llm)
    # Echoed words (whichever answer's request reaches the upstream first), 50 a second.
    upstream.script(Reply(delay=0.02), Reply(delay=0.02))
    token, short_url, short_id = open_chat(client, " ".join(f"s{i}" for i in range(30)))  # done within the grace
    _, long_url, long_id = open_chat(client, " ".join(f"l{i}" for i in range(400)))  # not: about 8 s
    assert read_answer(client, short_id, limit=1) and read_answer(client, long_id, limit=1)  # both streaming

    seen: dict[str, object] = {}

    def follow_long() -> None:  # a viewer whose stream is open through the restart
        with client.stream("GET", f"/messages/{long_id}/events") as stream:
            seen["page"], seen["events"] = collect(stream.iter_bytes())

    viewer = threading.Thread(target=follow_long)
    viewer.start()
    time.sleep(0.3)
    started = time.monotonic()
    server = serve.processes[-1]
    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert time.monotonic() - started < 6 + 1  # within the graceful timeout: nothing was killed
    viewer.join(5)
    events = seen["events"]
    assert events[-1].event == "done" and 'data-status="interrupted"' in events[-1].data  # told, not cut off

    # Started again on the same database, the same visitor finds both answers.
    again = serve(**llm)
    again.cookies = client.cookies
    page = again.get(short_url).text
    assert f'id="message-{short_id}" class="message assistant" data-status="complete"' in page
    assert "s29" in page
    page = again.get(long_url).text
    assert f'id="message-{long_id}" class="message assistant" data-status="interrupted"' in page
    assert f"/messages/{long_id}/continue" in page
    with contextlib.closing(sqlite3.connect(tmp_path / "g.sqlite3")) as db:
        kept = db.execute("SELECT content FROM message WHERE id = ?", (long_id,)).fetchone()[0]
    shown = seen["page"].text  # everything the viewer saw before the restart is kept, and is on the page
    assert " ".join(kept.split()).startswith(shown) and shown.startswith("Echo: l0 l1") and "l399" not in kept
    assert kept.split()[-1] in page
    assert again.post(f"/messages/{long_id}/continue", data={"csrf_token": token}).status_code == 303
