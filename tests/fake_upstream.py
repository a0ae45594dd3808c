"""A fake OpenAI-compatible server over real HTTP, speaking the real streaming wire format.

Tests script its replies (tokens, delays, error statuses with or without ``Retry-After``,
connections dropped before the headers or mid-stream) so the real ``openai`` client in the app runs
against it; replies can be scripted per model (``script_for``), and a test may start a second
instance to stand for another server. Runs on asyncio in a thread (tests) or as its own process
for the benchmarks: ``python tests/fake_upstream.py --port 8911 --tokens 250 --rate 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP


@dataclass
class Reply:
    """One scripted answer."""

    tokens: list[str] | None = None  # None: echo the last user message
    delay: float = 0.0  # seconds before each token
    first_delay: float = 0.0  # extra seconds before the first token
    status: int = 200
    error_message: str = "error"
    drop_after: int | None = None  # close the connection abruptly after this many tokens
    finish_reason: str = "stop"
    usage: bool = True
    hang: bool = False  # send the headers, then nothing
    retry_after: str | None = None  # an error's Retry-After header: seconds, or an HTTP date
    drop_before_headers: bool = False  # read the request, then close the connection without a word
    headers_delay: float = 0.0  # seconds before the status line and headers are sent
    pause_after: int | None = None  # after this many tokens, wait until ``resume`` is set
    resume: threading.Event = field(default_factory=threading.Event)
    # After the tokens, tool calls streamed as the real API does (``delta.tool_calls``: the id and name
    # first, the arguments in pieces of ``argument_piece`` characters) and ``finish_reason: "tool_calls"``.
    # Each: {"name": ..., "arguments": JSON text, "id": optional}.
    tool_calls: list[dict] | None = None
    argument_piece: int = 7


def save_note(content: str, call_id: str | None = None) -> dict:
    """A scripted ``save_note`` tool call."""
    return {"name": "save_note", "arguments": json.dumps({"content": content}), "id": call_id}


ERROR_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class FakeUpstream:
    """The server; ``script`` queues replies, ``requests`` records what the app sent."""

    host: str = "127.0.0.1"
    port: int = 0
    record: bool = True
    requests: list[dict] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each chat request
    ends: list[float] = field(default_factory=list)  # time.monotonic() when each streamed reply was all sent
    transcriptions: list[dict] = field(default_factory=list)
    transcription_reply: Reply = field(default_factory=Reply)
    transcription_text: str = "hello from the fake transcriber"
    models: list[str] = field(default_factory=lambda: ["fake-model"])  # what GET /models lists
    refuse_tools: bool = False  # answer a request carrying ``tools`` with a 400 (a server without tool support)

    def __post_init__(self) -> None:
        self._queue: deque[Reply] = deque()
        self._by_model: dict[str, deque[Reply]] = {}
        self._default = Reply()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._counter = 0

    # -- control, from any thread --------------------------------------------------------------
    def start(self) -> FakeUpstream:
        """Serve in a daemon thread; returns once listening."""
        self._thread = threading.Thread(target=self._serve, name="fake-upstream", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving, closing every open connection."""
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
            self._thread.join(10)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each chat request takes the next, then the default."""
        with self._lock:
            self._queue.extend(replies)

    def script_for(self, model: str, *replies: Reply) -> None:
        """Queue replies for requests naming ``model``; they come before the general script."""
        with self._lock:
            self._by_model.setdefault(model, deque()).extend(replies)

    def set_default(self, reply: Reply) -> None:
        """The reply used when nothing is queued."""
        self._default = reply

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._queue.clear()
            self._by_model.clear()
            self.requests.clear()
            self.arrivals.clear()
            self.ends.clear()
            self.transcriptions.clear()
        self._default = Reply()
        self.transcription_reply = Reply()
        self.transcription_text = "hello from the fake transcriber"
        self.models = ["fake-model"]
        self.refuse_tools = False

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict]:
        """Block until ``n`` chat requests have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests

    def _next_reply(self, model: str | None = None) -> Reply:
        with self._lock:
            queued = self._by_model.get(model or "")
            if queued:
                return queued.popleft()
            return self._queue.popleft() if self._queue else self._default

    # -- serving -----------------------------------------------------------------------------
    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._listen())
        loop.run_until_complete(self._server.serve_forever_quietly())
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.close()

    async def _listen(self) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._server = _Quiet(server)
        self._ready.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep_open = await self._route(method, path.split("?", 1)[0], headers, body, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(self, method: str, path: str, headers: dict, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(json.loads(body or b"{}"), writer)
        if method == "GET" and path.endswith("/models"):
            data = {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.models],
            }
            await self._json(writer, 200, data)
            return True
        if method == "POST" and path.endswith("/audio/transcriptions"):
            return await self._transcribe(headers, body, writer)
        await self._json(writer, 404, _error(f"Unknown path {path}", "invalid_request_error"))
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, data: dict, extra: str = "") -> None:
        payload = json.dumps(data).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{extra}\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()

    async def _chat(self, request: dict, writer: asyncio.StreamWriter) -> bool:
        if self.record:
            self.requests.append(request)
            self.arrivals.append(time.monotonic())
        if self.refuse_tools and request.get("tools"):  # as vLLM or llama.cpp without tool support answer
            message = '"tools" is not supported by this model: auto tool choice requires --enable-auto-tool-choice'
            await self._json(writer, 400, _error(message, "invalid_request_error"))
            return True
        reply = self._next_reply(request.get("model"))
        if reply.drop_before_headers:
            writer.transport.abort()
            return False
        if reply.headers_delay:
            await asyncio.sleep(reply.headers_delay)
        if reply.status != 200:
            kind = ERROR_TYPES.get(reply.status, "server_error")
            extra = f"Retry-After: {reply.retry_after}\r\n" if reply.retry_after is not None else ""
            await self._json(writer, reply.status, _error(reply.error_message, kind), extra)
            return True
        tokens = list(reply.tokens) if reply.tokens is not None else _echo(request)
        finish = "tool_calls" if reply.tool_calls else reply.finish_reason
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        model = request.get("model", "fake-model")
        if not request.get("stream"):
            message = {"role": "assistant", "content": "".join(tokens)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            await self._json(
                writer, 200, {"id": "chatcmpl-x", "object": "chat.completion", "model": model, "choices": [choice]}
            )
            return True

        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        if reply.hang:
            await asyncio.sleep(3600)
            return False
        self._counter += 1
        with_usage = bool((request.get("stream_options") or {}).get("include_usage")) and reply.usage
        chunk = _Chunks(f"chatcmpl-{self._counter}", model, with_usage)
        await _send(writer, chunk.delta({"role": "assistant", "content": ""}))
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        for index, token in enumerate(tokens):
            if reply.drop_after is not None and index >= reply.drop_after:
                writer.transport.abort()
                return False
            if index == reply.pause_after:
                await _wait_for(reply.resume)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await _send(writer, chunk.delta({"content": token}))
        pieces = 0
        for index, call in enumerate(reply.tool_calls or ()):
            self._counter += 1
            head = {
                "index": index,
                "id": call.get("id") or f"call_{self._counter}",
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            await _send(
                writer, chunk.delta({"tool_calls": [head]} if tokens else {"content": None, "tool_calls": [head]})
            )
            arguments, size = call["arguments"], reply.argument_piece
            for start in range(0, len(arguments), size):
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                piece = {"index": index, "function": {"arguments": arguments[start : start + size]}}
                await _send(writer, chunk.delta({"tool_calls": [piece]}))
                pieces += 1
        await _send(writer, chunk.delta({}, finish))
        if with_usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
            await _send(writer, chunk.usage(prompt, len(tokens) + pieces))
        await _send(writer, "[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        if self.record:
            self.ends.append(time.monotonic())
        return True

    async def _transcribe(self, headers: dict, body: bytes, writer: asyncio.StreamWriter) -> bool:
        content_type = headers.get("content-type", "")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields: dict[str, str] = {}
        record: dict = {"fields": fields, "file_name": None, "file_bytes": b"", "content_type": None}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            if filename is not None:
                record.update(
                    file_name=filename,
                    file_bytes=part.get_payload(decode=True) or b"",
                    content_type=part.get_content_type(),
                )
            else:
                fields[name] = (part.get_payload(decode=True) or b"").decode()
        self.transcriptions.append(record)
        reply = self.transcription_reply
        if reply.status != 200:
            await self._json(
                writer, reply.status, _error(reply.error_message, ERROR_TYPES.get(reply.status, "server_error"))
            )
        else:
            await self._json(writer, 200, {"text": self.transcription_text})
        return True


class _Quiet:
    """An asyncio server whose serve-forever ends quietly when closed."""

    def __init__(self, server: asyncio.AbstractServer) -> None:
        self.server = server

    def close(self) -> None:
        self.server.close()

    async def serve_forever_quietly(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.server.serve_forever()


class _Chunks:
    """Builds chat.completion.chunk events."""

    def __init__(self, chunk_id: str, model: str, with_usage: bool) -> None:
        self.base = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self.with_usage = with_usage

    def delta(self, delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        event = {**self.base, "choices": [choice]}
        if self.with_usage:
            event["usage"] = None
        return json.dumps(event)

    def usage(self, prompt: int, completion: int) -> str:
        totals = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return json.dumps({**self.base, "choices": [], "usage": totals})


async def _send(writer: asyncio.StreamWriter, data: str) -> None:
    payload = f"data: {data}\n\n".encode()
    writer.write(b"%x\r\n%b\r\n" % (len(payload), payload))
    await writer.drain()


async def _wait_for(event: threading.Event, timeout: float = 30.0) -> None:
    """Hold this stream (not the server) until a test sets ``event``; never longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _echo(request: dict) -> list[str]:
    """The default answer: "Echo:" and the words of the last user message."""
    text = ""
    for message in request.get("messages", []):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            text = content
    return ["Echo", ":"] + [" " + word for word in text.split()]


def main() -> None:
    """Serve a fixed reply of --tokens tokens at --rate tokens per second until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first token")
    args = parser.parse_args()
    server = FakeUpstream(port=args.port, record=False)
    tokens = [f" tok{i}" for i in range(args.tokens)]
    server.set_default(Reply(tokens=tokens, delay=1.0 / args.rate, first_delay=args.first_delay))
    server.start()
    print(f"READY {server.base_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
