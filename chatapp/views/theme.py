"""Appearance: the light/dark choice stored per identity, and the sidebar's date groups."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, jsonify, redirect, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ChatError
from ..extensions import db
from ..identity import current_user, session_user
from ..models import Conversation, User

bp = Blueprint("theme", __name__)

THEMES = ("light", "dark")  # stored; "system" is stored as None
GROUPS = ("Today", "Yesterday", "Previous 7 days", "Older")


@bp.app_template_global()
def stored_theme() -> str | None:
    """ "light", "dark", or None (follow the system): the identity's choice, else the session's."""
    try:
        user = session_user()
        theme = (user.theme if user else None) or session.get("theme")
    except SQLAlchemyError:  # an error page while the database is down still renders
        return None
    return theme if theme in THEMES else None


@bp.post("/theme")
def set_theme():  # noqa: ANN201
    """Remember light, dark or system for this identity (in the session until it has a user row)."""
    choice = request.form.get("theme", "")
    if choice not in (*THEMES, "system"):
        raise ChatError("Choose light, dark or system.", 422)
    theme = choice if choice in THEMES else None
    user = session_user()
    if user is not None:
        user.theme = theme
        db.session.commit()
        session.pop("theme", None)
    elif theme:
        session["theme"] = theme
    else:
        session.pop("theme", None)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(theme=choice)
    return redirect(_local(request.form.get("next", "")) or url_for("chat.index"), 303)


def _local(url: str) -> str | None:
    """``url`` if it is a path on this site (never another host), else None."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return None
    return url


def time_zone_of(user: User) -> tzinfo:
    """The identity's time zone (UTC by default, and for a name this machine does not know)."""
    try:
        return ZoneInfo(user.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@bp.app_template_global()
def date_groups(
    conversations: Iterable[Conversation], user: User | None = None, now: datetime | None = None
) -> list[tuple[str, list[Conversation]]]:
    """Conversations (newest first) under Today, Yesterday, Previous 7 days and Older, in the user's zone."""
    zone = time_zone_of(user if user is not None else current_user())
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    groups: dict[str, list[Conversation]] = {name: [] for name in GROUPS}
    for conversation in conversations:
        age = (today - conversation.updated_at.replace(tzinfo=UTC).astimezone(zone).date()).days
        name = GROUPS[0] if age <= 0 else GROUPS[1] if age == 1 else GROUPS[2] if age <= 7 else GROUPS[3]
        groups[name].append(conversation)
    return [(name, members) for name, members in groups.items() if members]
