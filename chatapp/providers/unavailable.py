"""Stands in when no provider can be built, so every answer says why instead of crashing."""

from __future__ import annotations

from . import ProviderError, Stream


class UnavailableProvider:
    """A provider that fails every answer with the configuration problem."""

    name = "unavailable"
    model = "no model configured"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def models(self) -> list[str]:
        """None can answer."""
        return []

    def stream(
        self, messages: list[dict], max_tokens: int, model: str | None = None, temperature: float | None = None
    ) -> Stream:
        """Always fails with the reason."""
        raise ProviderError(self.reason)
