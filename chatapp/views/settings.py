"""Settings: display name and time zone, password, sessions, API tokens, deleting the account."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from .. import accounts, identity, presets
from ..errors import ChatError
from ..extensions import db
from ..identity import current_user
from ..models import ApiToken, Conversation, User

bp = Blueprint("settings", __name__)


def render_settings(
    new_token: str | None = None,
    status: int = 200,
    error: ChatError | None = None,
    preset_form: tuple[str, dict, str] | None = None,
    **form: str,
) -> tuple[str, int]:
    """The settings page; a new token is shown this once; an error sits next to its field.

    ``preset_form``: (which preset form, "new" or an id, what was typed in it, the error) to show again.
    """
    user = current_user()
    tokens = db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    html = render_template(
        "settings.html",
        tokens=list(tokens) if user.id else [],
        new_token=new_token,
        user=user,
        stored=bool(user.id),
        error=error,
        errors={error.details["field"]: error.message} if error and "field" in error.details else {},
        presets=presets.list_presets(user.id),
        preset_form=preset_form,
        form=form,
        time_zones=accounts.time_zones(),
        conversations=Conversation.for_user(user.id),
        conversation=None,
    )
    return html, status


def _account() -> User:
    """The signed-in account (these forms are not offered to guests)."""
    user = current_user()
    if user.is_guest:
        abort(404)
    return user


@bp.get("/settings")
def settings():  # noqa: ANN201
    """Profile, password, sessions, API tokens."""
    return render_settings()


@bp.post("/settings/profile")
def profile():  # noqa: ANN201
    """Save the display name and the time zone."""
    form = {key: request.form.get(key, "") for key in ("display_name", "time_zone")}
    try:
        accounts.update_profile(current_user(), form["display_name"], form["time_zone"])
    except ChatError as exc:
        return render_settings(status=exc.status, error=exc, **form)
    flash("Saved.")
    return redirect(url_for(".settings"), 303)


@bp.post("/settings/password")
def password():  # noqa: ANN201
    """Change the password; every other session of the account is signed out."""
    user = _account()
    try:
        accounts.change_password(user, request.form.get("current_password", ""), request.form.get("new_password", ""))
    except ChatError as exc:
        return render_settings(status=exc.status, error=exc)
    identity.sign_in(user)  # this browser stays signed in, with the new generation
    flash("Password changed. Other browsers and devices are signed out.")
    return redirect(url_for(".settings"), 303)


@bp.post("/settings/sign-out-everywhere")
def sign_out_everywhere() -> Response:
    """Sign this account out in every browser, this one too."""
    accounts.sign_out_everywhere(_account())
    identity.sign_out()
    flash("You are signed out everywhere.")
    return redirect(url_for("auth.sign_in"), 303)


@bp.route("/settings/delete", methods=["GET", "POST"])
def delete_account():  # noqa: ANN201
    """Ask, then delete this user with every conversation, image and token."""
    user = identity.session_user()
    if user is None:  # nothing stored for this visitor: nothing to delete
        return redirect(url_for(".settings"), 303)
    if request.method == "GET":
        return render_template("auth/delete_account.html", user=user, errors={})
    if user.password_hash and not accounts.check_password(user, request.form.get("password", "")):
        errors = {"password": "That is not your password."}
        return render_template("auth/delete_account.html", user=user, errors=errors), 403
    if not user.password_hash and request.form.get("confirm") != "yes":
        errors = {"confirm": "Tick the box to confirm."}
        return render_template("auth/delete_account.html", user=user, errors=errors), 422
    was_guest = user.is_guest
    accounts.delete_user(user)
    identity.sign_out()
    flash("Your conversations were deleted." if was_guest else "Your account and everything in it were deleted.")
    return redirect(url_for("auth.sign_in"), 303)


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


PRESET_FIELDS = ("name", "model", "system_prompt", "temperature", "max_tokens", "opening_prompt")


@bp.post("/settings/presets")
def create_preset():  # noqa: ANN201
    """Save a new preset: named settings (and an opening prompt) to start chats with."""
    form = {key: request.form.get(key, "") for key in PRESET_FIELDS}
    try:
        preset = presets.create_preset(current_user().id, presets.fields_from_form(form))
    except ChatError as exc:
        if exc.status != 422:
            raise
        db.session.rollback()
        return render_settings(status=422, preset_form=("new", form, exc.message))
    flash(f"Preset “{preset.name}” saved. Choose it when you start a new chat.")
    return redirect(url_for(".settings", _anchor="presets-heading"), 303)


@bp.post("/settings/presets/<int:preset_id>")
def update_preset(preset_id: int):  # noqa: ANN201
    """Change a preset."""
    preset = presets.owned_preset(current_user().id, preset_id)
    form = {key: request.form.get(key, "") for key in PRESET_FIELDS}
    try:
        presets.update_preset(preset, presets.fields_from_form(form))
    except ChatError as exc:
        if exc.status != 422:
            raise
        db.session.rollback()
        return render_settings(status=422, preset_form=(str(preset_id), form, exc.message))
    flash(f"Preset “{preset.name}” saved.")
    return redirect(url_for(".settings", _anchor=f"preset-{preset.id}"), 303)


@bp.post("/settings/presets/<int:preset_id>/delete")
def delete_preset(preset_id: int) -> Response:
    """Delete a preset."""
    preset = presets.owned_preset(current_user().id, preset_id)
    name = preset.name
    presets.delete_preset(preset)
    flash(f"Preset “{name}” deleted.")
    return redirect(url_for(".settings", _anchor="presets-heading"), 303)
