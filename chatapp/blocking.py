"""Running CPU-bound work (hashing, image decoding, a local model) without stalling other requests."""

from __future__ import annotations

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
