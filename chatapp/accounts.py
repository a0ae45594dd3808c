"""Accounts and access: guests, sign-up and sign-in, passwords, admins, invites, reset links, the policy.

A user is a guest (no username) or an account. Guests are created by the first action that needs
one, and deleted with their data once idle for ``GUEST_RETENTION_DAYS``. No Flask request
handling here: the views pass in what they read (form fields, the client's IP).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import cast
from zoneinfo import ZoneInfo, available_timezones

from flask import Flask, Response, current_app, g, has_request_context
from limits import parse_many
from sqlalchemy import Update, and_, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from . import conversations, metrics, quotas
from .blocking import call_blocking
from .config import ConfigError
from .errors import ChatError
from .extensions import commit_keeping_loaded, db, limiter
from .models import ApiToken, Conversation, Folder, ImportJob, Invite, Preset, ResetLink, User, utcnow

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
PASSWORD_MIN, PASSWORD_MAX = 8, 256
DISPLAY_NAME_MAX = 100
INVITE_LIFETIME = timedelta(days=7)
RESET_LIFETIME = timedelta(days=1)
SWEEP_EVERY = 3600.0  # seconds between guest sweeps in one process
SWEEP_BATCH = 200  # guests deleted per sweep at most; a full batch brings the next sweep forward
WRONG_CREDENTIALS = "Wrong username or password."
GUESTS_OFF = "This server does not take guests: sign in (or sign up) to chat."


# -- policy ----------------------------------------------------------------------------------------------
def init_app(app: Flask) -> None:
    """Resolve the access policy, bind the rate limiter, schedule the guest sweep, add the commands."""
    config = app.config
    production = config["CHATAPP_ENV"] == "production"
    config["GUESTS"] = _on_off("GUESTS", config["GUESTS"] if config["GUESTS"] is not None else "on")
    config["SIGNUPS"] = str(config["SIGNUPS"] or ("invite" if production else "open")).lower()
    if config["SIGNUPS"] not in ("open", "invite", "closed"):
        raise ConfigError(f"SIGNUPS must be open, invite or closed, not {config['SIGNUPS']!r}.")
    for key in ("SIGNIN_LIMIT_PER_IP", "SIGNIN_LIMIT_PER_ACCOUNT", "GUEST_LIMIT_PER_IP"):
        if not limit_off(config[key]):
            parse_many(config[key])  # a typo fails at start-up, not at the first sign-in
    oidc = [key for key in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET") if config[key]]
    if oidc and len(oidc) < 3:
        missing = ", ".join(sorted({"OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"} - set(oidc)))
        raise ConfigError(f"Single sign-on needs OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET: set {missing}.")
    config.setdefault("RATELIMIT_STORAGE_URI", config["REDIS_URL"] or "memory://")
    config.setdefault("RATELIMIT_KEY_PREFIX", config["REDIS_PREFIX"])
    config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)
    sweeper = GuestSweeper(app)
    app.extensions["chatapp.guest_sweeper"] = sweeper
    app.before_request(sweeper.maybe_start)
    app.after_request(_retry_after_header)

    from . import cli

    cli.init_app(app)


def _on_off(key: str, value: object) -> str:
    text = str(value).lower()
    if text in ("on", "true", "1", "yes"):
        return "on"
    if text in ("off", "false", "0", "no"):
        return "off"
    raise ConfigError(f"{key} must be on or off, not {value!r}.")


def limit_off(value: str | None) -> bool:
    """True when a rate-limit setting turns its limit off ("off", "0" or empty)."""
    return str(value or "").strip().lower() in ("", "off", "0", "none")


def guests_on() -> bool:
    """Whether visitors may chat as guests (``GUESTS``)."""
    return current_app.config["GUESTS"] == "on"


def signups() -> str:
    """``open``, ``invite`` or ``closed`` (``SIGNUPS``)."""
    return current_app.config["SIGNUPS"]


def may_use(user: User) -> bool:
    """Whether this user may use the app now: not disabled, and not a guest while guests are off."""
    return user.disabled_at is None and (not user.is_guest or guests_on())


def is_active(user_id: str) -> bool:
    """Whether the user exists and may use the app, read fresh (for closing a disabled user's sockets)."""
    row = db.session.execute(select(User.disabled_at, User.username).where(User.id == user_id)).first()
    return row is not None and row.disabled_at is None and (row.username is not None or guests_on())


def admin_usernames() -> set[str]:
    """The usernames named in ``ADMIN_USERS``."""
    return {clean_username(name) for name in str(current_app.config["ADMIN_USERS"] or "").split(",") if name.strip()}


def is_admin(user: User | None) -> bool:
    """Admins are named: ``ADMIN_USERS`` or ``flask create-admin``; never the first to sign up."""
    if user is None or user.is_guest or user.disabled_at is not None:
        return False
    return user.is_admin or user.username in admin_usernames()


def session_valid(user: User, generation: object) -> bool:
    """Whether a session signed in with ``generation`` still holds (not signed out everywhere, not disabled).

    A guest's session holds while ``GUESTS=off`` too: signing in then brings its conversations along.
    """
    return user.disabled_at is None and generation == user.session_generation


# -- guests ----------------------------------------------------------------------------------------------
def placeholder() -> User:
    """A visitor without a user row: an unsaved stand-in that owns nothing (empty sidebar)."""
    return User(id="", time_zone="UTC", session_generation=0, is_admin=False)


def create_guest(ip: str | None) -> User:
    """A new guest row, for a visitor's first action that needs one (refused when guests are off)."""
    _check_guest_allowed(ip)
    user = User(last_seen_at=utcnow())
    db.session.add(user)
    commit_keeping_loaded()  # signing in reads it straight away
    return user


def create_api_guest(ip: str | None) -> tuple[User, str]:
    """A new guest and a bearer token for it (the token is shown only this once)."""
    _check_guest_allowed(ip)
    user = User(last_seen_at=utcnow())
    db.session.add(user)
    db.session.flush()
    row, token = ApiToken.issue(user.id, "guest")
    db.session.add(row)
    db.session.commit()
    return user, token


def _check_guest_allowed(ip: str | None) -> None:
    if not guests_on():
        raise ChatError(GUESTS_OFF, 403, "guests_disabled")
    hit_limit("GUEST_LIMIT_PER_IP", ip or "unknown", "Too many new guests from your network.")


def adopt_guest(account: User, guest: User | None) -> None:
    """Move a guest's conversations, API tokens, presets and imports into the account, then delete the guest."""
    if guest is None or not guest.is_guest or guest.id == account.id:
        return
    db.session.execute(update(Conversation).where(Conversation.user_id == guest.id).values(user_id=account.id))
    db.session.execute(update(Folder).where(Folder.user_id == guest.id).values(user_id=account.id))
    db.session.execute(update(ApiToken).where(ApiToken.user_id == guest.id).values(user_id=account.id))
    db.session.execute(update(Preset).where(Preset.user_id == guest.id).values(user_id=account.id))
    db.session.execute(update(ImportJob).where(ImportJob.user_id == guest.id).values(user_id=account.id))
    quotas.move_usage(guest.id, account.id)  # signing in does not give a guest's quota back
    db.session.delete(guest)
    db.session.commit()


def purge_guests(days: int | None = None, limit: int | None = None) -> int:
    """Delete guests idle for ``days`` (default ``GUEST_RETENTION_DAYS``) with their data and files."""
    days = current_app.config["GUEST_RETENTION_DAYS"] if days is None else days
    if days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=days)
    idle = or_(User.last_seen_at < cutoff, and_(User.last_seen_at.is_(None), User.created_at < cutoff))
    query = select(User).where(User.username.is_(None), idle).order_by(User.id)
    guests = list(db.session.scalars(query.limit(limit) if limit else query))
    for guest in guests:
        delete_user(guest)
    return len(guests)


class GuestSweeper:
    """Deletes idle guests from a short background thread, at most once an hour per process.

    It is started by requests (a clock check per request), so an idle process does no work.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.next_at = 0.0
        self.lock = threading.Lock()

    def maybe_start(self) -> None:
        """Start a sweep if one is due."""
        now = time.monotonic()
        if now < self.next_at:
            return
        with self.lock:
            if now < self.next_at:
                return
            self.next_at = now + SWEEP_EVERY
        threading.Thread(target=self.run, name="guest-sweep", daemon=True).start()

    def run(self) -> None:
        """One sweep (never raises: it runs in its own thread)."""
        try:
            with self.app.app_context():
                conversations.purge_temporary()  # temporary chats left idle
                count = purge_guests(limit=SWEEP_BATCH)
            if count:
                log.info("deleted %d idle guests", count)
            if count == SWEEP_BATCH:
                self.next_at = time.monotonic() + 60  # more are due: come back soon
        except Exception:
            log.exception("guest sweep failed")


# -- sign-up, sign-in, passwords --------------------------------------------------------------------------
def clean_username(raw: str) -> str:
    """Usernames are compared lower-case and without surrounding spaces."""
    return (raw or "").strip().lower()


def find_account(username: str) -> User | None:
    """The account with this username (compared lower-case), if any."""
    return db.session.scalar(select(User).where(User.username == clean_username(username)))


def field_error(field: str, message: str, status: int = 422, code: str = "invalid") -> ChatError:
    """An error to show next to one form field."""
    return ChatError(message, status, code, {"field": field})


def _check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise field_error(
            "username",
            "Use 3 to 32 characters: letters, digits, dots, dashes or underscores; start with a letter or digit.",
        )


def _check_password(password: str, field: str = "password") -> None:
    if len(password) < PASSWORD_MIN:
        raise field_error(field, f"Use at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise field_error(field, f"Use at most {PASSWORD_MAX} characters.")


def hash_password(password: str) -> str:
    """werkzeug's scrypt hash, computed off the event loop (it takes tens of milliseconds of CPU)."""
    return call_blocking(generate_password_hash, password, "scrypt")


@cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(16), "scrypt")


def _matches(stored: str | None, password: str) -> bool:
    # Without a stored hash, check against a dummy one anyway: the answer takes as long either way.
    return check_password_hash(stored or _dummy_hash(), password) and stored is not None


def check_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is the user's (false for no user or no password; same time either way)."""
    if len(password) > PASSWORD_MAX:
        return False
    return call_blocking(_matches, user.password_hash if user else None, password)


def _clean_display_name(raw: str) -> str | None:
    name = " ".join((raw or "").split())
    if len(name) > DISPLAY_NAME_MAX:
        raise field_error("display_name", f"Use at most {DISPLAY_NAME_MAX} characters; this has {len(name)}.")
    return name or None


def sign_up(
    username: str,
    password: str,
    guest: User | None,
    invite: str | None = None,
    display_name: str = "",
    ip: str | None = None,
) -> User:
    """A new account; a guest's conversations and tokens stay with it (the guest becomes the account).

    A sign-up without a guest makes a new identity: it counts against ``GUEST_LIMIT_PER_IP`` too.
    """
    invite_row = check_signup(invite)
    username = clean_username(username)
    _check_username(username)
    _check_password(password)
    name = _clean_display_name(display_name)
    if find_account(username) is not None:
        raise field_error("username", "That username is taken; choose another.", 409, "username_taken")
    if guest is None:
        hit_limit("GUEST_LIMIT_PER_IP", ip or "unknown", "Too many new accounts from your network.")
    password_hash = hash_password(password)
    user = guest if guest is not None and guest.is_guest else User()
    user.username, user.password_hash, user.display_name = username, password_hash, name
    user.last_seen_at = utcnow()
    return _save_new_account(user, invite_row)


def _save_new_account(user: User, invite: Invite | None) -> User:
    db.session.add(user)
    try:
        db.session.flush()
        if invite is not None:
            _redeem_invite(invite, user)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise field_error("username", "That username is taken; choose another.", 409, "username_taken") from None
    return user


def check_signup(invite: str | None) -> Invite | None:
    """Whether a sign-up may happen now (``SIGNUPS``), and the invite it uses, if any."""
    policy = signups()
    if policy == "closed":
        raise ChatError(
            "Sign-ups are closed on this server. Ask its administrator for an account.", 403, "signups_closed"
        )
    if invite:
        row = find_invite(invite)
        if row is None:
            raise ChatError(
                "This invite link cannot be used: it was used already, has expired or was revoked. Ask for a new one.",
                403,
                "invalid_invite",
            )
        return row
    if policy == "invite":
        raise ChatError(
            "Sign-up on this server is by invitation: open the invite link you were given.", 403, "invite_required"
        )
    return None


def authenticate(username: str, password: str) -> User:
    """The account with this username and password; the error never says which of the two was wrong."""
    user = find_account(username)
    matches = check_password(user, password)  # hashed even without such a user: the same time either way
    if user is None or not matches:
        raise ChatError(WRONG_CREDENTIALS, 401, "wrong_credentials")
    if user.disabled_at is not None:
        raise ChatError("This account is disabled. Ask an administrator.", 403, "account_disabled")
    return user


def sign_in(username: str, password: str, guest: User | None) -> User:
    """Check the password, then bring the guest's conversations along into the account."""
    user = authenticate(username, password)
    adopt_guest(user, guest)
    user.seen()
    return user


def change_password(user: User, current: str, new: str) -> None:
    """A new password (the current one is asked for if there is one); signs out every other session."""
    if user.password_hash and not check_password(user, current):
        raise field_error("current_password", "That is not your current password.", 403, "wrong_password")
    _check_password(new, "new_password")
    _store_password(user, new)


def _store_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.session_generation += 1
    db.session.commit()


def set_password(username: str, password: str) -> User:
    """Recovery without email (``flask set-password``): the account's new password; signs it out everywhere."""
    user = find_account(username)
    if user is None:
        raise ChatError(f"There is no account named {username!r}.", 404)
    _check_password(password)
    _store_password(user, password)
    return user


def sign_out_everywhere(user: User) -> None:
    """End every session of this user, on every browser (their cookies carry the old generation)."""
    user.session_generation += 1
    db.session.commit()


def update_profile(user: User, display_name: str, time_zone: str) -> None:
    """Change the display name and the time zone (an IANA name such as Europe/Berlin)."""
    name = _clean_display_name(display_name)
    zone = (time_zone or "").strip() or "UTC"
    if zone not in time_zones():
        raise field_error("time_zone", "Choose a time zone from the list: an IANA name such as Europe/Berlin.")
    user.display_name, user.time_zone = name, zone
    db.session.commit()


@cache
def time_zones() -> list[str]:
    """Every IANA time zone name this machine knows, sorted, UTC first."""
    return ["UTC"] + sorted(z for z in available_timezones() if z != "UTC" and not z.startswith(("Etc/", "SystemV/")))


def local_time(moment: datetime | None, zone: str) -> datetime | None:
    """A stored (naive UTC) time in the given time zone."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC).astimezone(ZoneInfo(zone if zone in time_zones() else "UTC"))


def delete_user(user: User) -> None:
    """Delete the user with everything they own: conversations (and image files) and tokens."""
    # Every conversation, archived and temporary ones too (not only the sidebar's).
    for conversation in list(db.session.scalars(select(Conversation).where(Conversation.user_id == user.id))):
        conversations.delete(conversation)  # stops a running answer, removes the files
    db.session.delete(user)  # API tokens and reset links go by ON DELETE CASCADE
    db.session.commit()


# -- single sign-on -------------------------------------------------------------------------------------
def oidc_sign_in(subject: str, claims: dict, guest: User | None, invite: str | None = None) -> User:
    """The account linked to the issuer's ``sub``; a new one (a sign-up, under ``SIGNUPS``) if none is."""
    user = db.session.scalar(select(User).where(User.oidc_subject == subject))
    if user is not None:
        if user.disabled_at is not None:
            raise ChatError("This account is disabled. Ask an administrator.", 403, "account_disabled")
        adopt_guest(user, guest)
        user.seen()
        return user
    invite_row = check_signup(invite)
    user = guest if guest is not None and guest.is_guest else User()
    user.oidc_subject = subject
    user.username = _free_username(claims)
    user.display_name = " ".join(str(claims.get("name") or "").split())[:DISPLAY_NAME_MAX] or None
    user.last_seen_at = utcnow()
    return _save_new_account(user, invite_row)


def _free_username(claims: dict) -> str:
    """A username from the identity's claims (preferred_username, else the email's local part), made unique."""
    wanted = str(claims.get("preferred_username") or str(claims.get("email") or "").split("@")[0] or "user")
    base = re.sub(r"[^a-z0-9._-]+", "-", wanted.lower()).strip("._-")[:26] or "user"
    base = base if len(base) >= 3 else f"{base}-user"
    taken = set(db.session.scalars(select(User.username).where(User.username.like(f"{base}%"))))
    for number in range(1, 1000):
        candidate = base if number == 1 else f"{base}-{number}"
        if candidate not in taken:
            return candidate
    return f"{base}-{secrets.token_hex(3)}"


# -- admin -----------------------------------------------------------------------------------------------
def _update(statement: Update) -> int:
    """Run an UPDATE; the number of rows it changed."""
    return cast(CursorResult, db.session.execute(statement)).rowcount


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def list_users(page: int = 1, kind: str = "all", per_page: int = 50) -> tuple[list[User], bool]:
    """A page of users, most recently seen first, and whether there are more."""
    query = select(User)
    if kind == "accounts":
        query = query.where(User.username.is_not(None))
    elif kind == "guests":
        query = query.where(User.username.is_(None))
    recent = func.coalesce(User.last_seen_at, User.created_at)
    query = query.order_by(recent.desc(), User.id).offset((max(page, 1) - 1) * per_page).limit(per_page + 1)
    users = list(db.session.scalars(query))
    return users[:per_page], len(users) > per_page


def set_disabled(user: User, disabled: bool) -> None:
    """Disable (signing out every session and refusing the user's tokens) or re-enable a user."""
    if disabled and user.disabled_at is None:
        user.disabled_at = utcnow()
        user.session_generation += 1
    elif not disabled:
        user.disabled_at = None
    db.session.commit()


def create_invite(admin: User) -> str:
    """A single-use sign-up link's token, valid for ``INVITE_LIFETIME`` (only its hash is kept)."""
    if signups() == "closed":
        raise ChatError("Sign-ups are closed (SIGNUPS=closed): invites would not work.", 409, "signups_closed")
    token = secrets.token_urlsafe(24)
    db.session.add(Invite(token_hash=_hash(token), created_by=admin.id, expires_at=utcnow() + INVITE_LIFETIME))
    db.session.commit()
    return token


def open_invites() -> list[Invite]:
    """Invites not used yet and not expired, newest first."""
    query = select(Invite).where(Invite.used_at.is_(None), Invite.expires_at > utcnow()).order_by(Invite.id.desc())
    return list(db.session.scalars(query))


def revoke_invite(invite_id: int) -> None:
    """Make an invite unusable."""
    invite = db.session.get(Invite, invite_id)
    if invite is None:
        raise ChatError("No such invite.", 404)
    db.session.delete(invite)
    db.session.commit()


def find_invite(token: str) -> Invite | None:
    """The invite if it can still be used."""
    query = select(Invite).where(
        Invite.token_hash == _hash(token), Invite.used_at.is_(None), Invite.expires_at > utcnow()
    )
    return db.session.scalar(query)


def _redeem_invite(invite: Invite, user: User) -> None:
    used = _update(
        update(Invite).where(Invite.id == invite.id, Invite.used_at.is_(None)).values(used_at=utcnow(), used_by=user.id)
    )
    if used != 1:  # someone else used it in the meantime
        db.session.rollback()
        raise ChatError("This invite link was just used by someone else. Ask for a new one.", 403, "invalid_invite")


def create_reset_link(user: User) -> str:
    """A single-use password-reset token for an account, valid for ``RESET_LIFETIME``."""
    if user.is_guest:
        raise ChatError("Guests have no password to reset.", 422)
    token = secrets.token_urlsafe(24)
    db.session.add(ResetLink(user_id=user.id, token_hash=_hash(token), expires_at=utcnow() + RESET_LIFETIME))
    db.session.commit()
    return token


def find_reset(token: str) -> ResetLink | None:
    """The reset link if it can still be used."""
    query = select(ResetLink).where(
        ResetLink.token_hash == _hash(token), ResetLink.used_at.is_(None), ResetLink.expires_at > utcnow()
    )
    return db.session.scalar(query)


INVALID_RESET = "This password-reset link cannot be used: it was used already or has expired. Ask for a new one."


def reset_password(token: str, password: str) -> User:
    """Set the password through a reset link (once); every session of the account is signed out."""
    link = find_reset(token)
    if link is None:
        raise ChatError(INVALID_RESET, 403, "invalid_reset")
    _check_password(password)
    password_hash = hash_password(password)
    used = _update(
        update(ResetLink).where(ResetLink.user_id == link.user_id, ResetLink.used_at.is_(None)).values(used_at=utcnow())
    )
    if used < 1:
        db.session.rollback()
        raise ChatError(INVALID_RESET, 403, "invalid_reset")
    user = db.session.get_one(User, link.user_id)
    user.password_hash = password_hash
    user.session_generation += 1
    db.session.commit()
    return user


def make_admin(username: str, password: str | None = None) -> tuple[User, bool]:
    """``flask create-admin``: make the account an admin, creating it (with ``password``) if needed."""
    username = clean_username(username)
    found = find_account(username)
    user = found if found is not None else _new_account(username, password)
    user.is_admin = True
    db.session.commit()
    return user, found is None


def _new_account(username: str, password: str | None) -> User:
    _check_username(username)
    if password is None:
        raise ChatError("A new account needs a password.", 422)
    _check_password(password)
    user = User(username=username, password_hash=hash_password(password), last_seen_at=utcnow())
    db.session.add(user)
    return user


# -- rate limits (in the limiter's storage: Redis with REDIS_URL, so they hold across workers) ---------
def hit_limit(setting: str, key: str, what: str) -> None:
    """Count one event against the limit named by ``setting``; past it, a 429 that says when to retry."""
    raw = current_app.config[setting]
    if limit_off(raw):
        return
    strategy = limiter.limiter
    for item in parse_many(raw):
        identifiers = (current_app.config["REDIS_PREFIX"], setting.lower(), key)
        if strategy.hit(item, *identifiers):
            continue
        metrics.refused(setting.lower())
        wait = max(1, math.ceil(strategy.get_window_stats(item, *identifiers).reset_time - time.time()))
        if has_request_context():
            g.retry_after = wait
        raise ChatError(f"{what} Try again {retry_phrase(wait)}.", 429, "rate_limited", {"retry_after": wait})


def retry_phrase(seconds: int) -> str:
    """ "in 40 seconds (at 14:05 UTC)"."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%H:%M UTC")
    if seconds < 90:
        return f"in {seconds} seconds (at {at})"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"in {minutes} minutes (at {at})"
    return f"in {math.ceil(minutes / 60)} hours (at {at})"


def _retry_after_header(response: Response) -> Response:
    wait = g.pop("retry_after", None)
    if wait and response.status_code == 429 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(wait)
    return response
