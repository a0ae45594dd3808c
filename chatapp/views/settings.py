"""Settings: API tokens for the visitor's own identity (created, listed, revoked)."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from sqlalchemy import select

from ..extensions import db
from ..identity import current_user
from ..models import ApiToken, Conversation

bp = Blueprint("settings", __name__)


def render_settings(new_token: str | None = None, status: int = 200) -> tuple[str, int]:
    """The settings page; a new token is shown this once."""
    user = current_user()
    tokens = db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    html = render_template(
        "settings.html",
        tokens=list(tokens),
        new_token=new_token,
        user=user,
        conversations=Conversation.for_user(user.id),
        conversation=None,
    )
    return html, status


@bp.get("/settings")
def settings():  # noqa: ANN201
    """API tokens of this identity."""
    return render_settings()


@bp.post("/settings/tokens")
def create_token():  # noqa: ANN201
    """A new token, shown once (only its hash is kept)."""
    name = " ".join(request.form.get("name", "").split())[:100] or "API token"
    row, token = ApiToken.issue(current_user().id, name)
    db.session.add(row)
    db.session.commit()
    return render_settings(new_token=token, status=201)


@bp.post("/settings/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):  # noqa: ANN201
    """Revoke one of this identity's tokens."""
    row = db.session.get(ApiToken, token_id)
    if row is None or row.user_id != current_user().id:
        abort(404)
    db.session.delete(row)
    db.session.commit()
    return redirect(url_for(".settings"), 303)
