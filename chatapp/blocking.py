"""Running CPU-bound work (hashing, image decoding, a local model) without stalling other requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def call_blocking(func: Callable[..., Any], *args: Any) -> Any:
    """Run a CPU-bound call so it cannot stall other requests.

    Under gthread or sync workers the caller already is a real OS thread. Under gevent,
    ``threading`` is patched into greenlets, so hand the call to gevent's pool of real threads.
    """
    try:
        from gevent import monkey
    except ImportError:
        return func(*args)
    if not monkey.is_module_patched("threading"):
        return func(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(func, args)


class Breather:
    """Long work in a request's thread or greenlet calls this often; every ``every`` seconds it pauses
    for a moment, so other requests run (under gevent a zero sleep would not let timers or sockets in)."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.last = time.monotonic()

    def __call__(self) -> None:
        """Pause briefly if the work has run for ``every`` seconds since the last pause."""
        now = time.monotonic()
        if now - self.last >= self.every:
            time.sleep(0.0005)
            self.last = time.monotonic()
