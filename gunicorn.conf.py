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
