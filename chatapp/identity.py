"""Guest identities in the signed session cookie, and CSRF tokens for every form and HTMX call."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, Response, abort, g, request, session

from .conversations import get_user
from .errors import api_error
from .models import ApiToken, User

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def current_user() -> User:
    """The visitor's guest identity, created (and remembered in the cookie) on first use."""
    if "user" not in g:
        g.user = get_user(session.get("uid"))
        if session.get("uid") != g.user.id:
            session["uid"] = g.user.id
            session.permanent = True
    return g.user


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def check_csrf() -> None:
    """Refuse a state-changing request without this session's token (form field or header)."""
    if request.method in SAFE_METHODS or request.path.startswith("/api/"):  # bearer tokens, never cookies
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_FIELD)
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, "This page's security token is missing or has expired. Reload the page and try again.")


def init_app(app: Flask) -> None:
    """Check CSRF before every request and offer ``csrf_token()`` to templates."""
    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token


def bearer_token() -> str:
    """The API token sent with this request: ``Authorization: Bearer``, or ``?token=`` on the WebSocket."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token and request.path.endswith("/ws"):  # browsers cannot set headers on a WebSocket
        token = request.args.get("token", "")
    return token


def require_bearer() -> Response | None:
    """Before an API request: remember the token's identity in ``g.api_user_id``, or answer 401."""
    token = bearer_token()
    user_id = ApiToken.user_for(token) if token else None
    if user_id is None:
        response, status = api_error(
            401, "Send a valid token as 'Authorization: Bearer <token>'; POST /api/v1/auth/guest gives one."
        )
        response.status_code = status
        return response
    g.api_user_id = user_id
    g.api_token = token
    return None
