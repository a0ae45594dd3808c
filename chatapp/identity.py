"""Guest identities in the signed session cookie, and CSRF tokens for every form and HTMX call."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, g, request, session

from .conversations import get_user
from .models import User

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
    """Refuse a state-changing request from another site, or without this session's token (field or header)."""
    if request.method in SAFE_METHODS or request.path.startswith("/api/"):  # bearer tokens, never cookies
        return
    # The host only, not the scheme: behind a proxy that ends TLS the app may see http. A proxy's
    # X-Forwarded-Host counts too: a page on another site cannot make a browser send that header.
    origin = request.headers.get("Origin")
    own = {request.host.lower(), request.headers.get("X-Forwarded-Host", "").split(",")[0].strip().lower()}
    if origin is not None and origin.partition("://")[2].lower() not in own - {""}:  # "null" has no host
        abort(403, "This request came from another site, so it was refused. Use this site's own pages.")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_FIELD)
    if not sent.isascii():
        abort(400, "This page's security token is damaged. Reload the page and try again.")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, "This page's security token is missing or has expired. Reload the page and try again.")


def init_app(app: Flask) -> None:
    """Check CSRF before every request and offer ``csrf_token()`` to templates."""
    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token
