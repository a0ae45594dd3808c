"""Prometheus metrics: what the app counts (served by ``views/metrics.py`` behind ``METRICS_TOKEN``).

Under gunicorn, ``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts,
so every worker writes its values to files there and a scrape of any worker reports the sum of
all of them (prometheus-client's multiprocess mode). Without it (one process, ``flask run``, the
tests) the values live in this process's default registry.
"""

from __future__ import annotations

import glob
import os

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# -- what is counted --------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "chatapp_http_requests", "HTTP requests by route (the URL rule) and status", ["method", "route", "status"]
)
STREAMS_OPEN = Gauge(
    "chatapp_streams_open", "Viewers following an answer live (SSE, NDJSON, WebSocket)", multiprocess_mode="livesum"
)
ANSWERS_RUNNING = Gauge("chatapp_answers_running", "Answers being generated now", multiprocess_mode="livesum")
WORKERS = Gauge("chatapp_workers", "Processes serving the app", multiprocess_mode="livesum")
ANSWERS_STARTED = Counter("chatapp_answers_started", "Answers started", ["model"])
ANSWERS_FINISHED = Counter(
    "chatapp_answers_finished", "Answers ended, by status (complete, stopped, error, interrupted)", ["model", "status"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatapp_answer_time_to_first_token_seconds",
    "From an answer's start to its first text",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
ANSWER_DURATION = Histogram(
    "chatapp_answer_duration_seconds",
    "From an answer's start to its end",
    ["model", "status"],
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
TOKENS = Counter(
    "chatapp_tokens", "Tokens sent to (prompt) and received from (completion) the model", ["model", "kind"]
)
UPSTREAM_ERRORS = Counter(
    "chatapp_upstream_errors",
    "Failed calls to the model server, by kind "
    "(connect, timeout, disconnect, rate_limited, server_error, client_error, error_event)",
    ["kind"],
)
UPSTREAM_RETRIES = Counter("chatapp_upstream_retries", "Calls to the model server tried again", ["model"])
LIMIT_REFUSALS = Counter("chatapp_limit_refusals", "Requests refused by a limit or quota (429)", ["limit"])
BROKER_LAG = Histogram(
    "chatapp_broker_lag_seconds",
    "From a delta's publication to a follower receiving it (the oldest of each batch read; "
    "includes the follower's deliberate 50 ms coalescing)",
    ["broker"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

OTHER_MODEL = "other"  # the label of model names the operator did not list (a label per typo is no use)


def model_label(model: str | None, default: str) -> str:
    """The model's name as a label: the configured model or one in ``ALLOWED_MODELS``, else "other"."""
    from .conversations import allowed_models

    name = model or default
    return name if name == default or name in allowed_models() else OTHER_MODEL


def upstream_error(exc: BaseException) -> None:
    """Count a failed call to the model server (each attempt, when calls are retried)."""
    UPSTREAM_ERRORS.labels(kind=error_kind(exc)).inc()


def error_kind(exc: BaseException) -> str:
    """What went wrong, from a ``ProviderError`` (or the client's exception it was raised from)."""
    import openai

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, openai.APIStatusError):
        status = cause.status_code
        return "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"
    if isinstance(cause, openai.APITimeoutError) or any("Timeout" in c.__name__ for c in type(cause).__mro__):
        return "timeout"
    if isinstance(cause, openai.APIConnectionError):
        return "connect"
    if cause is exc:  # raised by the provider itself: an error event in the stream, or the local model
        return "error_event"
    return "disconnect"  # the stream broke after it began


def refused(limit: str) -> None:
    """Count a refusal by the limit named ``limit`` (a quota, a rate limit)."""
    LIMIT_REFUSALS.labels(limit=limit).inc()


# -- totals across workers ---------------------------------------------------------------------------------
def registry() -> CollectorRegistry:
    """What a scrape reports: every worker's files in multiprocess mode, else this process's registry."""
    if not MULTIPROCESS:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def live_total(name: str) -> float:
    """A live-summed gauge's value over every worker (in multiprocess mode), or this process's."""
    if not MULTIPROCESS:
        return REGISTRY.get_sample_value(name) or 0.0
    # Only the live gauges' files: reading every metric of every worker takes far longer.
    files = glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "gauge_livesum_*.db"))
    families = multiprocess.MultiProcessCollector.merge(files, accumulate=False)
    return sum(sample.value for family in families for sample in family.samples if sample.name == name)


# -- request counting ------------------------------------------------------------------------------------
def _count(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    HTTP_REQUESTS.labels(method=request.method, route=rule, status=str(response.status_code)).inc()
    return response


def _breached(limit: object) -> None:
    """Flask-Limiter's callback when a request goes over one of its limits (sign-in attempts)."""
    refused(f"http:{request.endpoint or 'unknown'}")


def init_app(app: Flask) -> None:
    """Count requests and limit refusals, and mark this process as a worker; before the limiter is bound."""
    app.config.setdefault("RATELIMIT_ON_BREACH_CALLBACK", _breached)
    app.after_request(_count)
    WORKERS.set(1)
