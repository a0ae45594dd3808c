"""``/healthz`` (liveness: up, and what answers) and ``/readyz`` (readiness: database and Redis)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from .. import metrics, readiness
from ..extensions import db
from ..generation import current_generator

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    """Status, database reachability, provider and model, answers generating across every worker.

    ``upstreams``: each model server's circuit breaker in this process (closed, open, half-open);
    an open one is reported, never a failure of this check (an outage must not restart the app).
    """
    generator = current_generator()
    try:
        db.session.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
    finally:
        db.session.close()
    # Under gunicorn, totals over every worker (their metrics files); else this app's own count.
    running = int(metrics.live_total("chatapp_answers_running")) if metrics.MULTIPROCESS else len(generator.running)
    body = {
        "status": "ok" if database else "degraded",
        "database": database,
        "provider": generator.provider.name,
        "model": generator.provider.model,
        "broker": type(generator.broker).__name__,
        "generations_running": running,
        "streams_open": int(metrics.live_total("chatapp_streams_open")),
        "workers": int(metrics.live_total("chatapp_workers")),
        "upstreams": generator.router.states(),
    }
    return jsonify(body), 200 if database else 503


@bp.get("/readyz")
def readyz():  # noqa: ANN201
    """200 when the database (and Redis, when configured) answer, else 503; the upstream is only reported."""
    ready, body = readiness.check()
    return jsonify(body), 200 if ready else 503
