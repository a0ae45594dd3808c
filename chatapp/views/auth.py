"""Sign-in, sign-up, sign-out, password-reset links and single sign-on (OpenID Connect): plain forms."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_limiter import RateLimitExceeded
from werkzeug.wrappers import Response

from .. import accounts, identity
from ..errors import ChatError
from ..extensions import limiter
from ..models import User

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)
OIDC = "chatapp.oidc"


# -- limits: failed attempts only, per IP and per account -----------------------------------------------
def _limit(setting: str) -> dict:
    return {
        # "off" is exempt; Flask-Limiter still parses the value first, so give it one it can read.
        "limit_value": lambda: (
            "1 per second" if accounts.limit_off(current_app.config[setting]) else current_app.config[setting]
        ),
        "exempt_when": lambda: accounts.limit_off(current_app.config[setting]),
        "deduct_when": lambda response: response.status_code != 303,  # a success does not count
        "methods": ["POST"],
    }


def _account_key() -> str:
    return "account:" + accounts.clean_username(request.form.get("username", ""))


@bp.app_errorhandler(RateLimitExceeded)
def too_many(exc: RateLimitExceeded) -> ResponseReturnValue:
    """Too many attempts: the page says when to try again."""
    current = limiter.current_limit
    wait = max(1, int(current.reset_at - time.time())) if current else 60
    html = render_template("auth/too_many.html", when=accounts.retry_phrase(wait))
    return html, 429, {"Retry-After": str(wait)}


@bp.app_template_filter("local")
def local(moment: datetime | None) -> str:
    """A stored time in the viewer's time zone, as "2026-11-24 14:05"."""
    user = identity.session_user()
    shown = accounts.local_time(moment, user.time_zone if user else "UTC")
    return shown.strftime("%Y-%m-%d %H:%M") if shown else "–"


@bp.app_template_global()
def viewer_zone() -> str:
    """The viewer's time zone name, for column headings."""
    user = identity.session_user()
    return user.time_zone if user else "UTC"


# -- pages ----------------------------------------------------------------------------------------------
def safe_next(target: str | None) -> str | None:
    """A path on this site to return to after signing in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def render_sign_in(status: int = 200, error: ChatError | None = None, **form: str) -> tuple[str, int]:
    """The sign-in page, with what was typed (never the password) and the error, if any."""
    html = render_template(
        "auth/sign_in.html",
        error=error,
        errors=_field_errors(error),
        form=form,
        next=safe_next(request.values.get("next")),
        oidc_label=oidc_label(),
        signups=accounts.signups(),
        guests=accounts.guests_on(),
    )
    return html, status


def render_sign_up(status: int = 200, error: ChatError | None = None, **form: str) -> tuple[str, int]:
    """The sign-up page; it explains instead when the policy or the invite does not allow a sign-up."""
    invite = request.values.get("invite") or None
    try:
        accounts.check_signup(invite)
        refused = None
    except ChatError as exc:
        refused, status = exc, exc.status
    html = render_template(
        "auth/sign_up.html",
        refused=refused,
        error=error,
        errors=_field_errors(error),
        form=form,
        invite=invite,
        oidc_label=oidc_label(),
        guests=accounts.guests_on(),
        guest=_guest(),
    )
    return html, status


def _field_errors(error: ChatError | None) -> dict[str, str]:
    if error is None or "field" not in error.details:
        return {}
    return {error.details["field"]: error.message}


def _guest() -> User | None:
    user = identity.session_user()
    return user if user is not None and user.is_guest else None


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(**_limit("SIGNIN_LIMIT_PER_IP"))
@limiter.limit(**_limit("SIGNIN_LIMIT_PER_ACCOUNT"), key_func=_account_key)
def sign_in():  # noqa: ANN201
    """Sign in with username and password; a guest's conversations come along."""
    if request.method == "GET":
        return render_sign_in()
    username = request.form.get("username", "")
    try:
        user = accounts.sign_in(username, request.form.get("password", ""), _guest())
    except ChatError as exc:
        return render_sign_in(exc.status, exc, username=username)
    identity.sign_in(user)
    return redirect(safe_next(request.form.get("next")) or url_for("chat.index"), 303)


@bp.route("/sign-up", methods=["GET", "POST"])
def sign_up():  # noqa: ANN201
    """Create an account (``SIGNUPS``: open, or with an invite link); a guest's conversations stay."""
    if request.method == "GET":
        return render_sign_up()
    form = {key: request.form.get(key, "") for key in ("username", "display_name")}
    try:
        user = accounts.sign_up(
            form["username"],
            request.form.get("password", ""),
            _guest(),
            request.form.get("invite") or None,
            form["display_name"],
            ip=request.remote_addr,
        )
    except ChatError as exc:
        return render_sign_up(exc.status, exc, **form)
    identity.sign_in(user)
    return redirect(url_for("chat.index"), 303)


@bp.post("/sign-out")
def sign_out() -> Response:
    """Sign out in this browser."""
    identity.sign_out()
    return redirect(url_for("chat.index") if accounts.guests_on() else url_for(".sign_in"), 303)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str):  # noqa: ANN201
    """Choose a new password through a single-use link from an admin."""
    link = accounts.find_reset(token)
    if link is None:
        return render_template("auth/reset.html", invalid=accounts.INVALID_RESET, token=token, errors={}), 403
    if request.method == "GET":
        return render_template("auth/reset.html", token=token, errors={})
    try:
        accounts.reset_password(token, request.form.get("password", ""))
    except ChatError as exc:
        return render_template("auth/reset.html", token=token, error=exc, errors=_field_errors(exc)), exc.status
    flash("Your password was changed. Sign in with it.")
    return redirect(url_for(".sign_in"), 303)


# -- single sign-on -------------------------------------------------------------------------------------
@bp.record_once
def _register_oidc(state) -> None:  # noqa: ANN001
    app: Flask = state.app
    if not app.config["OIDC_ISSUER"]:
        return
    from authlib.integrations.flask_client import OAuth

    oauth = OAuth(app)
    issuer = app.config["OIDC_ISSUER"].rstrip("/")
    app.extensions[OIDC] = oauth.register(
        "oidc",
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile"},
    )


def oidc_label() -> str | None:
    """The name on the "Sign in with …" button, or None without single sign-on."""
    if OIDC not in current_app.extensions:
        return None
    return current_app.config["OIDC_LABEL"] or urlsplit(current_app.config["OIDC_ISSUER"]).hostname


@bp.get("/sign-in/oidc")
def oidc_start() -> Response:
    """Off to the identity provider (its answer comes back to ``oidc_callback``)."""
    client = current_app.extensions.get(OIDC) or abort(404)
    session["oidc_next"] = safe_next(request.args.get("next"))
    session["oidc_invite"] = request.args.get("invite")
    return client.authorize_redirect(url_for(".oidc_callback", _external=True))


@bp.get("/sign-in/oidc/callback")
def oidc_callback():  # noqa: ANN201
    """Back from the identity provider: the account linked to its ``sub`` (made on first sign-in)."""
    from authlib.integrations.base_client import OAuthError
    from requests import RequestException

    client = current_app.extensions.get(OIDC) or abort(404)
    try:
        token = client.authorize_access_token()
        claims = dict(token.get("userinfo") or client.userinfo(token=token))
    except (OAuthError, RequestException, ValueError) as exc:
        log.warning("single sign-on failed: %s", exc)
        error = ChatError("Single sign-on did not complete. Try again.", 401, "sso_failed")
        return render_sign_in(401, error)
    try:
        user = accounts.oidc_sign_in(str(claims["sub"]), claims, _guest(), session.pop("oidc_invite", None))
    except ChatError as exc:
        return render_sign_in(exc.status, exc)
    next_url = session.pop("oidc_next", None)
    identity.sign_in(user)
    return redirect(next_url or url_for("chat.index"), 303)
