"""gunicorn settings shared by the Procfile, ``scripts/dev run`` and the benchmarks.

The command lines set the worker class, connections and binding; this file holds what a command
line cannot say: the number of workers when the platform does not, and where the workers' metrics
meet.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import tempfile

CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" in microseconds, or "max <period>"


def available_cpus(cpu_max: str = CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, or the container's CPU quota if that is lower."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open(cpu_max) as file:
            quota, period = file.read().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read: the affinity stands
    return max(1, count)


# Several workers need Redis (stop, live streams and limits across them). With it and without a
# WEB_CONCURRENCY from the platform, use every core this process may run on; never override it.
if os.environ.get("REDIS_URL") and not os.environ.get("WEB_CONCURRENCY"):
    workers = available_cpus()

# Every worker writes its metrics to files here; a scrape of any one reports them all. This must
# be set before a worker imports prometheus_client, which is why it is here.
_made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatapp-metrics-")

# gunicorn's own lines (start, workers booting and dying) in the app's LOG_FORMAT, as read from the
# environment: JSON by default in production, like the app's (chatapp/logs.py).
if (os.environ.get("LOG_FORMAT") or ("json" if os.environ.get("CHATAPP_ENV") == "production" else "")) == "json":
    logconfig_dict = {
        "root": {"level": "WARNING", "handlers": []},  # the app puts its own handler there
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},  # chatapp.requests has it
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
            }
        },
    }


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """Start from zero: a fixed ``PROMETHEUS_MULTIPROC_DIR`` may hold a previous run's files."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def child_exit(server, worker) -> None:  # noqa: ANN001
    """A worker is gone: its open streams and running answers no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # noqa: ANN001
    """Remove the metrics directory this file made."""
    if _made_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


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
