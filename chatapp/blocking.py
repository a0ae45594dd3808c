"""Running CPU-bound work (hashing, image decoding, a local model) without stalling other requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def call_blocking(func: Callable[..., Any], *args: Any) -> Any:
    """Run a CPU-bound call so it cannot stall other requests.

    Under gthread or sync workers the caller already is a real OS thread. Under gevent,
    ``threading`` is patched into greenlets, so hand the call to gevent's pool of real threads.
    """
    if not _gevent_patched():
        return func(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(func, args)


def in_background(target: Callable[..., Any], *args: Any, name: str) -> None:
    """Run ``target(*args)`` on its own (a daemon thread; under gevent, a greenlet), without waiting.

    ``threading.Thread.start`` waits until the new thread has started; under gevent that hands the
    loop to every other ready greenlet first, so when 150 sends arrive together each one waits for
    all the others at that point and they all finish at the end of the burst, not one after another.
    """
    if _gevent_patched():
        import gevent

        gevent.spawn(target, *args).name = name
    else:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()


def let_others_run() -> None:
    """Pause for a moment, so other requests run before a burst of work that cannot yield.

    Under gevent every greenlet made ready in one turn of the loop runs before any socket is served:
    when a hundred answers end in the same instant, their hundred database writes would otherwise run
    back to back while every other stream waits. A zero sleep would not let timers or sockets in.
    """
    with _turns:  # those that pause together take turns: one burst of work per turn of the loop
        time.sleep(0.0005)


_turns = threading.Lock()

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TakeTurns:
    """WSGI middleware: under gevent, requests that write take turns with the rest of the event loop.

    gevent runs every greenlet whose socket became readable in one turn of the loop before it runs
    anything else. When 150 sends arrive together their handlers (7 ms each) all ran in one turn, and
    the answers they started, the streams already open and the viewers just connecting waited for all
    of them: every first token came at the end of the burst, and open streams stalled for a second
    (bench/README.md). Now one write starts per turn of the loop, and what it started runs before the
    next one. Reads (a page, an event stream, a WebSocket's upgrade) go straight on: they are what
    the waiting was for.

    (Letting writes run for up to 20 ms of a turn instead of one per turn was measured too: the same
    gaps, and first tokens reached the clients a second later.)
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        """Wait for a turn (a write), then serve the request."""
        if environ.get("REQUEST_METHOD") not in SAFE_METHODS:
            take_turn()
        return self.app(environ, start_response)


def take_turn() -> None:
    """Under gevent, wait for a turn of the event loop before work that writes (see ``TakeTurns``; the
    WebSocket takes one per client message). Elsewhere threads take turns by themselves: nothing to do."""
    if _gevent_patched():
        let_others_run()


def warm_up() -> None:
    """Under gevent, make the event loop's thread pool and name resolver now: the first answer's
    connection to the model server would otherwise import and build them (about 20 ms, py-spy) while
    every open stream of the worker waits."""
    if _gevent_patched():
        import gevent

        hub = gevent.get_hub()
        _ = hub.threadpool, hub.resolver


def _gevent_patched() -> bool:
    """Whether gevent has patched ``threading`` (a gevent worker): threads are greenlets."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


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
            let_others_run()
            self.last = time.monotonic()
