"""The Stats page: answers, tokens, timings, feedback and tone over the last 30 days, as charts and tables."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, render_template, request

from .. import accounts, insight
from ..identity import current_user
from ..models import Conversation

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def stats():  # noqa: ANN201
    """The identity's stats (``?scope=all``: everyone's, for an administrator)."""
    user = current_user()
    scope = request.args.get("scope") or "mine"
    found = insight.stats_of(user, scope)  # a ChatError becomes the error page
    days = [day.day for day in found.days]
    labels = [_short(day) for day in days]
    return render_template(
        "stats.html",
        stats=found,
        labels=dict(zip(days, labels, strict=True)),
        charts=insight.charts_for(found, labels),
        timing=list(zip(found.ttft_ms, found.duration_ms, strict=True)),
        scope=scope,
        may_see_all=accounts.is_admin(user),
        conversations=Conversation.for_user(user.id),
        conversation=None,
    )


def _short(day: str) -> str:
    """An ISO day, e.g. "2026-11-24", as "Nov 24"."""
    return date.fromisoformat(day).strftime("%b %-d")
