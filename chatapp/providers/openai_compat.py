"""Streaming Chat Completions from any OpenAI-compatible server through the ``openai`` package."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import openai

from ..config import UPSTREAM_DEFAULT_MODEL
from . import Chunk, ProviderError

log = logging.getLogger(__name__)


class OpenAIProvider:
    """OpenAI, OpenRouter, Ollama, vLLM, llama.cpp server: anything speaking Chat Completions."""

    name = "openai"
    text_only = False  # whether a model reads images is the server's to say (a 400 if it cannot)

    def __init__(self, api_key: str | None, base_url: str | None, model: str | None, timeout: float) -> None:
        self.model = model or UPSTREAM_DEFAULT_MODEL
        self.base_url = base_url
        parts = urlsplit(base_url or "https://api.openai.com/v1")
        self.host = parts.netloc.rsplit("@", 1)[-1]
        self.upstream = f"{parts.scheme}://{self.host}"  # the circuit breaker's key, and /healthz's name for it
        self.timeout = timeout
        # Local servers (Ollama, llama.cpp) accept any key; the client insists on one.
        # No retries in the client: chatapp's own (chatapp.resilience) wait visibly and can be stopped.
        self.client = openai.OpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=10.0),
            max_retries=0,
        )

    def stream(
        self,
        messages: list[dict],
        max_tokens: int,
        model: str | None = None,
        temperature: float | None = None,
        tools: list[dict] | None = None,
    ) -> OpenAIStream:
        """Start a streamed completion; errors before the first byte raise ProviderError."""
        # The client sends the request and maps error statuses to exceptions; the events are
        # parsed here with json.loads, which costs a quarter of building the SDK's typed chunk
        # objects (measured: 26 vs 103 µs a chunk), and with many streams that is the CPU budget.
        # The messages go in ``extra_body``, which the client sends as given: as ``messages=`` the
        # client first walks them against its type hints, about 0.15 ms a message (measured: 6 ms
        # for 40), all of it holding up every other stream. They are plain JSON already.
        extra = {"temperature": temperature} if temperature is not None else {}
        model = model or self.model
        body: dict = {"messages": messages}
        if tools:
            body["tools"] = tools
        request = self.client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
            model=model,
            messages=[],
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=body,
            **extra,
        )
        try:
            response = request.__enter__()
        except openai.OpenAIError as exc:
            retryable, retry_after = _retry_info(exc)
            refused = bool(tools) and _refuses_tools(exc)
            raise ProviderError(self.describe(exc, model=model), retryable, retry_after, refused) from exc
        return OpenAIStream(self, response)

    def warm_up(self) -> None:
        """Do now what the client's first request would: import its chat resources and read the platform
        for its headers (``uname -p``, a subprocess): about 20 ms that every open stream would wait."""
        _ = self.client.chat.completions
        self.client.platform_headers()

    def models(self) -> list[str]:
        """The upstream's model list, or the configured model if it cannot be listed."""
        try:
            return sorted(m.id for m in self.client.models.list()) or [self.model]
        except openai.OpenAIError:
            return [self.model]

    def describe(self, exc: BaseException, mid_stream: bool = False, model: str | None = None) -> str:
        """A reason a user can act on, for an exception from the client; where it went is only logged.

        The upstream's address (an internal host and port, often) is no business of the user's.
        ``model`` is the model the request named (a conversation may choose its own).
        """
        log.warning("upstream %s (model %s) failed: %r", self.host, model or self.model, exc)
        if isinstance(exc, openai.APIStatusError):
            return self._status_reason(exc, model or self.model)
        if isinstance(exc, openai.APITimeoutError) or _is_timeout(exc):
            return f"The model server sent nothing for {self.timeout:g} seconds, so the answer was abandoned. Retry."
        if isinstance(exc, openai.APIConnectionError) and not mid_stream:
            return "Could not connect to the model server. Retry in a moment; if it keeps failing, tell the operator."
        return (
            "The connection to the model server dropped in the middle of the answer. "
            "The text so far is kept: continue or retry."
        )

    def _status_reason(self, exc: openai.APIStatusError, model: str) -> str:
        """What an error status means; the provider's own words only for 4xx (5xx may show internals)."""
        status = exc.status_code
        detail = _upstream_message(exc, self.host) if status < 500 else ""
        if isinstance(exc, openai.AuthenticationError):
            return f"The model provider rejected the API key (401). Check OPENAI_API_KEY.{detail}"
        if isinstance(exc, openai.NotFoundError):
            advice = "Choose another model for this conversation, or check CHAT_MODEL."
            return f"The model “{model}” was not found (404). {advice}{detail}"
        if isinstance(exc, openai.RateLimitError):
            return f"The model provider is rate limiting requests (429). Wait a moment, then retry.{detail}"
        if status >= 500:
            return f"The model server had an error ({status}). Retry in a moment."
        return f"The model provider refused the request ({status}).{detail}"


class OpenAIStream:
    """Iterates an upstream stream as Chunks; ``close`` ends it from another thread."""

    def __init__(self, provider: OpenAIProvider, response: Any) -> None:
        self.provider = provider
        self.response = response

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for line in self.response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, "event:" lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield from _chunks(json.loads(data))
        except ProviderError:
            raise
        except Exception as exc:  # whatever broke the stream (socket, HTTP library, bad JSON): say so
            log.info("stream from %s failed: %r", self.provider.host, exc)
            # Worth another try when nothing was written yet (the generator knows): the server may recover.
            raise ProviderError(self.provider.describe(exc, mid_stream=True), retryable=True) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Close the HTTP response, which unblocks a reader waiting on it."""
        with contextlib.suppress(Exception):  # closing a half-dead socket may raise; it is closed anyway
            self.response.close()


def _chunks(event: dict) -> Iterator[Chunk]:
    """The Chunks in one chat.completion.chunk event (or raise for an error event)."""
    if event.get("error"):
        message = event["error"].get("message", "unknown error") if isinstance(event["error"], dict) else event["error"]
        raise ProviderError(f"The model provider stopped with an error: “{str(message)[:300]}”. Retry.")
    usage = event.get("usage")
    if usage:
        yield Chunk(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        text, calls = delta.get("content"), delta.get("tool_calls")
        if text or calls or choice.get("finish_reason"):
            yield Chunk(text=text or "", finish_reason=choice.get("finish_reason"), tool_calls=calls or None)


def _refuses_tools(exc: openai.OpenAIError) -> bool:
    """A 400 (or 422) whose words name tools: the server or model does not take function tools."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422):
        return False
    return "tool" in (str(getattr(exc, "body", "") or "") + str(exc.message)).lower()


def _retry_info(exc: openai.OpenAIError) -> tuple[bool, float | None]:
    """Whether asking again may work (connection, timeout, 408, 409, 429, 5xx), and the wait the server asked for."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in (408, 409, 429) or status >= 500
        return retryable, retry_after_seconds(exc.response.headers) if retryable else None
    return isinstance(exc, openai.APIConnectionError), None  # APITimeoutError is one too


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asked for: ``retry-after-ms`` (OpenAI's), ``Retry-After`` in seconds or as an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw):
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None  # neither form: as if it had not said
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _is_timeout(exc: BaseException) -> bool:
    # The HTTP library under the openai client (httpx or httpx2) raises its own timeout classes.
    return any("Timeout" in cls.__name__ for cls in type(exc).__mro__)


def _upstream_message(exc: BaseException, host: str) -> str:
    """The provider's own words (they often say what to change), without addresses in them."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
    if not message:
        return ""
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "…", str(message)[:300], flags=re.IGNORECASE)
    for name in (host, host.rsplit(":", 1)[0]):  # host:port first, then the bare host
        text = text.replace(name, "…")
    return f" The provider said: “{text}”"
