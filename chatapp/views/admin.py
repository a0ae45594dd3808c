"""``/admin``: users (guests and accounts) with their usage; disable, enable, delete; invite and reset links.

Only admins see it; everyone else gets 404, as if it did not exist.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from .. import accounts, conversations, identity, quotas
from ..errors import ChatError
from ..extensions import db
from ..models import Conversation, User

bp = Blueprint("admin", __name__, url_prefix="/admin")
KINDS = ("all", "accounts", "guests")
FEEDBACK_ROWS = 50  # the latest answers with feedback shown


@bp.before_request
def _admins_only() -> None:
    if not accounts.is_admin(identity.session_user()):
        abort(404)


def _me() -> User:
    user = identity.session_user()
    if user is None:  # not reached: only admins get past _admins_only
        abort(404)
    return user


def _user_or_404(user_id: str) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


def _not_me(user: User, action: str) -> None:
    if user.id == _me().id:
        raise ChatError(f"You cannot {action} your own account here; use Settings.", 409)


def render_admin(status: int = 200, new_link: str | None = None, link_kind: str | None = None) -> tuple[str, int]:
    """The users table (one page of it), open invites, and a just-made link, shown this once."""
    page = max(request.args.get("page", 1, type=int), 1)
    kind = request.args.get("kind", "all") if request.args.get("kind") in KINDS else "all"
    users, more = accounts.list_users(page, kind)
    me = _me()
    html = render_template(
        "admin.html",
        users=users,
        usage=quotas.usage_for([u.id for u in users]),
        page=page,
        more=more,
        kind=kind,
        kinds=KINDS,
        invites=accounts.open_invites(),
        new_link=new_link,
        link_kind=link_kind,
        signups=accounts.signups(),
        admins=accounts.admin_usernames(),
        me=me,
        conversations=Conversation.for_user(me.id),
        conversation=None,
        feedback=conversations.recent_feedback(FEEDBACK_ROWS),
    )
    return html, status


@bp.get("")
def index():  # noqa: ANN201
    """Every user with their usage today and in total."""
    return render_admin()


@bp.post("/users/<user_id>/disable")
def disable(user_id: str) -> Response:
    """Disable a user: signed out everywhere, their tokens refused."""
    user = _user_or_404(user_id)
    _not_me(user, "disable")
    accounts.set_disabled(user, True)
    flash(f"{user.name} is disabled.")
    return redirect(url_for(".index"), 303)


@bp.post("/users/<user_id>/enable")
def enable(user_id: str) -> Response:
    """Let a disabled user in again."""
    user = _user_or_404(user_id)
    accounts.set_disabled(user, False)
    flash(f"{user.name} is enabled again.")
    return redirect(url_for(".index"), 303)


@bp.route("/users/<user_id>/delete", methods=["GET", "POST"])
def delete(user_id: str):  # noqa: ANN201
    """Ask, then delete a user with all their conversations, images and tokens."""
    user = _user_or_404(user_id)
    _not_me(user, "delete")
    if request.method == "GET":
        conversations = len(Conversation.for_user(user.id))
        return render_template("admin_delete.html", user=user, count=conversations)
    name = user.name
    accounts.delete_user(user)
    flash(f"{name} and all their data were deleted.")
    return redirect(url_for(".index"), 303)


@bp.post("/users/<user_id>/reset-link")
def reset_link(user_id: str):  # noqa: ANN201
    """A single-use password-reset link for an account, shown once."""
    token = accounts.create_reset_link(_user_or_404(user_id))
    return render_admin(201, url_for("auth.reset", token=token, _external=True), "reset")


@bp.post("/invites")
def invite():  # noqa: ANN201
    """A single-use sign-up link, shown once."""
    token = accounts.create_invite(_me())
    return render_admin(201, url_for("auth.sign_up", invite=token, _external=True), "invite")


@bp.post("/invites/<int:invite_id>/revoke")
def revoke_invite(invite_id: int) -> Response:
    """Make an open invite unusable."""
    accounts.revoke_invite(invite_id)
    flash("Invite revoked.")
    return redirect(url_for(".index"), 303)
