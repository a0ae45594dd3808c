"""What metrics and logs cost: per call, and a /metrics scrape over several workers' files.

Run: ``.venv/bin/python bench/observability.py`` (prints figures; no server needed). It runs in
multiprocess mode, as under gunicorn, with ``--workers`` processes' worth of metric files.
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fill(directory: str) -> None:
    """One worker's worth of values: every route and status seen, answers of three models."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    sys.path.insert(0, str(ROOT))
    from chatapp import metrics

    for route in range(40):
        for status in ("200", "303", "404", "429"):
            metrics.HTTP_REQUESTS.labels(method="GET", route=f"/route/{route}", status=status).inc()
    for model in ("a", "b", "other"):
        for status in ("complete", "stopped", "error"):
            metrics.ANSWERS_FINISHED.labels(model=model, status=status).inc()
            metrics.ANSWER_DURATION.labels(model=model, status=status).observe(3.0)
        metrics.TIME_TO_FIRST_TOKEN.labels(model=model).observe(0.4)
        metrics.TOKENS.labels(model=model, kind="prompt").inc(100)
    metrics.BROKER_LAG.labels(broker="redis").observe(0.01)
    metrics.STREAMS_OPEN.inc()


def per_call(what: str, call, n: int) -> None:  # noqa: ANN001
    started = time.perf_counter()
    for _ in range(n):
        call()
    print(f"{what:<48} {(time.perf_counter() - started) / n * 1e6:8.2f} µs")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="chatapp-metrics-bench-")
    context = multiprocessing.get_context("spawn")
    for _ in range(args.workers):
        process = context.Process(target=fill, args=(directory,))
        process.start()
        process.join()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    sys.path.insert(0, str(ROOT))
    from prometheus_client import generate_latest

    from chatapp import metrics
    from chatapp.logs import make_formatter

    lag = metrics.BROKER_LAG.labels(broker="redis")
    per_call("histogram observe (broker lag, per batch read)", lambda: lag.observe(0.003), 100_000)
    per_call(
        "labelled counter inc (a request)",
        lambda: metrics.HTTP_REQUESTS.labels(method="GET", route="/c/<int:conversation_id>", status="200").inc(),
        100_000,
    )
    per_call(
        "gauge inc + dec (a stream opens and closes)",
        lambda: (metrics.STREAMS_OPEN.inc(), metrics.STREAMS_OPEN.dec()),
        100_000,
    )
    for kind in ("json", "text"):
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(make_formatter(kind))
        logger = logging.getLogger(f"bench.{kind}")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        extra = {"method": "GET", "path": "/c/1", "route": "/c/<int:conversation_id>", "status": 200}
        extra |= {"duration_ms": 1.2, "request_id": "0123456789abcdef0123456789abcdef", "user_id": "u" * 32}
        per_call(
            f"{kind} log line (a request)",
            lambda logger=logger, extra=extra: logger.info("GET /c/1 200", extra=extra),
            20_000,
        )
    started = time.perf_counter()
    body = generate_latest(metrics.registry())
    took = (time.perf_counter() - started) * 1000
    print(f"{'/metrics scrape over ' + str(args.workers + 1) + ' processes':<48} {took:8.2f} ms ({len(body):,} bytes)")
    per_call("/healthz total (a live gauge, every process)", lambda: metrics.live_total("chatapp_answers_running"), 200)


if __name__ == "__main__":
    main()
