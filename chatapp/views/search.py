"""The search page: a plain GET form (``?q=``) whose results update as you type with HTMX."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from sqlalchemy import select

from .. import search as core
from ..errors import ChatError
from ..extensions import db
from ..identity import current_user
from ..models import Conversation

bp = Blueprint("search", __name__)
RESULTS_PER_PAGE = 20


@bp.after_request
def _vary(response: Response) -> Response:
    response.vary.add("HX-Request")
    response.vary.add("HX-Target")
    return response


@bp.get("/search")
def search():  # noqa: ANN201
    """Search every message and title; HTMX (target ``#search-results``) gets just the results."""
    user = current_user()
    query = request.args.get("q", "")
    page, error, status = core.Page(), None, 200
    try:
        filters = core.parse_filters(request.args)
        page = core.search(user, query, filters, RESULTS_PER_PAGE, request.args.get("cursor") or None)
    except ChatError as exc:
        error, status = exc, exc.status
    context = {"query": query, "page": page, "error": error, "args": request.args}
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "search-results":
        return render_template("partials/search_results.html", **context), status
    return render_template(
        "search.html", conversations=Conversation.for_user(user.id), choices=_choices(user.id), **context
    ), status


def _choices(user_id: str | None) -> list[tuple[int, str]]:
    """Every searchable conversation (archived too) for the filter, by title."""
    query = (
        select(Conversation.id, Conversation.title)
        .where(Conversation.user_id == user_id, Conversation.temporary.is_(False))
        .order_by(Conversation.title, Conversation.id)
    )
    return [(row.id, row.title) for row in db.session.execute(query)]
