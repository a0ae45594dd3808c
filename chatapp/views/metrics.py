"""``GET /metrics``: Prometheus' text format, only with ``METRICS_TOKEN`` set and sent as a bearer token."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():  # noqa: ANN201
    """Every worker's metrics; 404 unless ``METRICS_TOKEN`` is set, 401 without it."""
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        abort(404)
    header = request.headers.get("Authorization", "")
    sent = header[7:].strip() if header.startswith("Bearer ") else ""
    if not hmac.compare_digest(sent.encode(), str(token).encode()):
        return Response(
            "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.\n",
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain; charset=utf-8"},
        )
    return Response(generate_latest(metrics.registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})
