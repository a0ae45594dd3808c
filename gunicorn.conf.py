"""gunicorn settings shared by the Procfile, ``scripts/dev run`` and the benchmarks.

The command lines set the worker class, connections and binding; this file holds what a command
line cannot say.
"""


def post_worker_init(worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """Under gevent, accept one new connection per turn of the event loop.

    gevent's servers accept up to 100 connections per wake-up (``max_accept``) and run all their
    handlers before the loop polls again, so a burst of sends stalls every open stream for as long
    as those handlers take (measured: 200-500 ms with 150 answers starting at once). Taking one at a
    time lets the streams already open go on between them; gevent documents lower values as giving
    "higher priority to already established connections". gunicorn does the same with several
    workers; this makes it so with one.
    """
    if "gevent" in worker.cfg.worker_class_str:
        from gevent.baseserver import BaseServer

        BaseServer.max_accept = 1
    _finish_answers_on_sigterm(worker)


GRACE_MARGIN = 3.0  # seconds kept back from --graceful-timeout to end answers and let their streams close


def _generator(worker):  # noqa: ANN001, ANN202 - gunicorn's worker; chatapp's Generator (or None: the bench relay)
    return getattr(worker.wsgi, "extensions", {}).get("chatapp.generator")


def _finish_answers_on_sigterm(worker) -> None:  # noqa: ANN001
    """On SIGTERM (a restart, a deploy) answers go on for the graceful timeout, less a margin.

    gunicorn then waits up to ``--graceful-timeout`` for open connections, and the master kills the
    worker when it runs out, which would leave answers ``streaming`` with only their last flush. So
    the answers still running a margin before that end ``interrupted``, their text kept; their viewers
    get that final state (with Continue), the connections close, and the worker exits in time.
    """
    generator = _generator(worker)
    if generator is None:
        return
    import signal
    import threading

    gevent = __import__("gevent") if "gevent" in worker.cfg.worker_class_str else None
    previous = signal.getsignal(signal.SIGTERM)
    timeout = max(worker.cfg.graceful_timeout - GRACE_MARGIN, worker.cfg.graceful_timeout / 2)

    def on_sigterm(signum, frame) -> None:  # noqa: ANN001
        if callable(previous):
            previous(signum, frame)  # gunicorn's: stop accepting, wait for open connections
        if gevent:  # in a signal handler, a gevent worker may only spawn (as gunicorn's own handlers do)
            gevent.spawn(generator.drain, timeout)
        else:
            threading.Thread(target=generator.drain, args=(timeout,), name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_int(worker) -> None:  # noqa: ANN001
    """A quick shutdown (SIGINT, SIGQUIT): running answers end ``interrupted`` now, their text kept."""
    if generator := _generator(worker):
        generator.close()


def worker_exit(server, worker) -> None:  # noqa: ANN001
    """Whatever still runs as the worker exits ends ``interrupted`` (text kept), not ``streaming``."""
    if generator := _generator(worker):
        generator.close()
