"""Who is visiting (an account or a guest, in the signed session cookie), and CSRF tokens for every form."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime

from flask import Flask, Response, abort, g, redirect, request, session, url_for

from . import accounts
from .errors import api_error
from .extensions import db
from .models import ApiToken, User

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_USER, SESSION_GENERATION = "uid", "gen"
SESSION_DAY = "day"  # the day the session cookie was last sent: it is sent again on a later day's visit


def session_user() -> User | None:
    """The signed-in account or the guest of this session, or None (nothing is created).

    A session whose user was deleted or disabled, or signed out everywhere, is signed out here.
    """
    if "session_user" not in g:
        user_id = session.get(SESSION_USER)
        user = db.session.get(User, user_id) if user_id else None
        if user_id and (user is None or not accounts.session_valid(user, session.get(SESSION_GENERATION, 0))):
            sign_out()
            user = None
        if user is not None:
            user.seen()
            _keep_signed_in()
        g.session_user = user
    return g.session_user


def _keep_signed_in() -> None:
    """Send the session cookie again on the first visit of a day, so it lasts ``SESSION_LIFETIME_DAYS``
    from the last visit, not from the sign-in. Otherwise a response carries it only when the session
    changed (``SESSION_REFRESH_EACH_REQUEST`` is off, ``config.py``)."""
    today = datetime.now(UTC).date().isoformat()
    if session.get(SESSION_DAY) != today:
        session[SESSION_DAY] = today


def current_user() -> User:
    """The visitor's user for the chat pages; a guest row is made only by an action that needs one.

    On a GET without a user: an unsaved stand-in that owns nothing. With ``GUESTS=off``, a visitor
    who is not signed in to an account is sent to the sign-in page.
    """
    if "user" not in g:
        user = session_user()
        if (user is None or user.is_guest) and not accounts.guests_on():
            _to_sign_in()
        if user is None and request.method in SAFE_METHODS:
            user = accounts.placeholder()
        elif user is None:
            user = accounts.create_guest(request.remote_addr)
            sign_in(user)
        g.user = user
    return g.user


def _to_sign_in() -> None:
    target = url_for("auth.sign_in", next=request.full_path.rstrip("?") if request.method in SAFE_METHODS else None)
    if request.headers.get("HX-Request"):
        abort(_hx_redirect(target))
    abort(redirect(target, 303))


def _hx_redirect(target: str):  # noqa: ANN202
    response = redirect(target, 303)
    response.status_code = 401
    response.headers["HX-Redirect"] = target
    return response


def sign_in(user: User) -> None:
    """Remember ``user`` in this browser's session (a new session: only the CSRF token is kept)."""
    _clear_session()
    session[SESSION_USER] = user.id
    session[SESSION_GENERATION] = user.session_generation
    session.permanent = True
    _keep_signed_in()
    g.session_user = g.user = user


def sign_out() -> None:
    """Forget the user in this browser (the CSRF token stays: open pages keep working)."""
    _clear_session()
    g.session_user = None
    g.pop("user", None)


def _clear_session() -> None:
    kept = {key: session[key] for key in (CSRF_FIELD, "_flashes") if key in session}  # and notices to show
    session.clear()
    session.update(kept)


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
        session.permanent = True  # the cookie lasts SESSION_LIFETIME_DAYS, not until the browser closes
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
    app.jinja_env.globals["account"] = session_user
    app.jinja_env.globals["is_admin"] = accounts.is_admin


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
    user = ApiToken.owner(token) if token else None
    if user is None:
        response, status = api_error(
            401, "Send a valid token as 'Authorization: Bearer <token>'; POST /api/v1/auth/guest gives one."
        )
        response.status_code = status
        return response
    g.api_user_id = user.id
    g.api_user = user  # held for the request: what it writes names its author without loading them again
    g.api_token = token
    return None
