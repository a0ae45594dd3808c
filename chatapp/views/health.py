"""``/healthz``: is the app up, can it reach its database, what answers."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from ..extensions import db
from ..generation import current_generator

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    """Status, database reachability, provider and model, answers generating in this process.

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
    body = {
        "status": "ok" if database else "degraded",
        "database": database,
        "provider": generator.provider.name,
        "model": generator.provider.model,
        "broker": type(generator.broker).__name__,
        "generations_running": len(generator.running),
        "upstreams": generator.router.states(),
    }
    return jsonify(body), 200 if database else 503
