"""Answer limits and quotas, enforced in the core for every door (page, REST, WebSocket).

Before an answer starts, ``check_can_start`` refuses with a 429 ``ChatError`` when the identity
already has ``MAX_CONCURRENT_ANSWERS`` answers streaming (counted in the database, so it holds
across workers), has used its daily token quota (``DAILY_TOKENS_PER_USER`` / ``_PER_GUEST``; the
day ends at midnight in the identity's time zone), or has started ``ANSWERS_PER_MINUTE`` answers in
the last 60 seconds (a moving window from the ``limits`` package, in Redis when ``REDIS_URL`` is set,
so every worker and host shares it). When an answer ends, ``charge`` adds its real tokens to the
``Usage`` ledger, which deleting conversations does not touch. ``ANSWER_LIMITS=off`` turns all of
this off (the benchmarks do).
"""

from __future__ import annotations

import math
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from limits import RateLimitItemPerMinute, storage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import metrics
from .errors import ChatError
from .extensions import db
from .models import STREAMING, Conversation, Message, Usage, User

# Daily token quotas when DAILY_TOKENS_PER_* is not set: unlimited in development; in production
# small for guests (a few conversations' worth) and moderate for accounts.
PRODUCTION_DAILY_TOKENS = {"DAILY_TOKENS_PER_GUEST": 20_000, "DAILY_TOKENS_PER_USER": 200_000}
BUSY_RETRY_AFTER = 5  # seconds suggested to wait when too many answers are streaming at once
OFF = {"0", "false", "no", "off"}


def enabled() -> bool:
    """False when ``ANSWER_LIMITS`` is off."""
    value = current_app.config["ANSWER_LIMITS"]
    return str(value).strip().lower() not in OFF if isinstance(value, str) else bool(value)


def check_can_start(user_id: str) -> None:
    """Raise a 429 ``ChatError`` if this identity may not start an answer now; else count the start."""
    if not enabled():
        return
    user = db.session.get(User, user_id)
    if user is None:
        return
    _check_concurrent(user)
    _check_daily_tokens(user)
    _check_per_minute(user)  # last: it counts the start, which a refusal above must not


def charge(user_id: str | None, tokens: int) -> None:
    """Add one answer and its tokens to the ledger row of the identity's local today (caller commits)."""
    if user_id is None:
        return
    time_zone = db.session.scalar(select(User.time_zone).where(User.id == user_id))
    if time_zone is None:  # the identity was deleted meanwhile
        return
    _add(user_id, _today(_zone(time_zone)), 1, max(tokens, 0))


def move_usage(from_user_id: str, to_user_id: str) -> None:
    """Carry a guest's ledger into the account it signs in to, day by day (caller commits)."""
    for row in list(db.session.scalars(select(Usage).where(Usage.user_id == from_user_id))):
        _add(to_user_id, row.day, row.answers, row.tokens)
        db.session.delete(row)


def _add(user_id: str, day: date, answers: int, tokens: int) -> None:
    """Upsert into the ledger (SQLite and PostgreSQL both speak ON CONFLICT)."""
    insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Usage).values(user_id=user_id, day=day, answers=answers, tokens=tokens)
    added = {"answers": Usage.answers + statement.excluded.answers, "tokens": Usage.tokens + statement.excluded.tokens}
    db.session.execute(statement.on_conflict_do_update(index_elements=[Usage.user_id, Usage.day], set_=added))


def usage_for(user_ids: list[str]) -> dict[str, dict]:
    """Answers and tokens today (each identity's local day) and in total, from the ledger."""
    result = {
        user_id: {"answers_today": 0, "tokens_today": 0, "answers_total": 0, "tokens_total": 0} for user_id in user_ids
    }
    if not user_ids:
        return result
    totals = select(Usage.user_id, func.sum(Usage.answers), func.sum(Usage.tokens)).group_by(Usage.user_id)
    for user_id, answers, tokens in db.session.execute(totals.where(Usage.user_id.in_(user_ids))):
        result[user_id].update(answers_total=int(answers), tokens_total=int(tokens))
    zones = db.session.execute(select(User.id, User.time_zone).where(User.id.in_(user_ids)))
    today = {user_id: _today(_zone(time_zone)) for user_id, time_zone in zones}
    rows = select(Usage).where(Usage.user_id.in_(user_ids), Usage.day.in_(set(today.values())))
    for row in db.session.scalars(rows):
        if today.get(row.user_id) == row.day:
            result[row.user_id].update(answers_today=row.answers, tokens_today=row.tokens)
    return result


def daily_token_limit(user: User) -> int:
    """The identity's daily token quota; 0: unlimited."""
    name = "DAILY_TOKENS_PER_GUEST" if user.is_guest else "DAILY_TOKENS_PER_USER"
    value = current_app.config[name]
    if value is None or value == "":
        return PRODUCTION_DAILY_TOKENS[name] if current_app.config["CHATAPP_ENV"] == "production" else 0
    return int(value)


def _check_concurrent(user: User) -> None:
    limit = int(current_app.config["MAX_CONCURRENT_ANSWERS"])
    if limit <= 0:
        return
    query = (
        select(func.count())
        .select_from(Message)
        .join(Conversation, Message.conversation_id == Conversation.id)
        .where(Conversation.user_id == user.id, Message.status == STREAMING)
    )
    streaming = db.session.scalar(query) or 0
    if streaming >= limit:
        metrics.refused("concurrent_answers")
        raise ChatError(
            f"{streaming} of your answers are being written right now; at most {limit} can be at once. "
            "Wait for one to finish (or stop one), then send again.",
            429,
            "rate_limited",
            {"limit": limit, "streaming": streaming},
            retry_after=BUSY_RETRY_AFTER,
        )


def _check_daily_tokens(user: User) -> None:
    limit = daily_token_limit(user)
    if limit <= 0:
        return
    zone = _zone(user.time_zone)
    used = db.session.scalar(select(Usage.tokens).where(Usage.user_id == user.id, Usage.day == _today(zone))) or 0
    if used < limit:
        return
    metrics.refused("daily_tokens")
    now = datetime.now(zone)
    resets = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    wait = max(1, math.ceil((resets - now).total_seconds()))
    raise ChatError(
        f"You have used {used:,} of your {limit:,} tokens for today. The quota resets at midnight, "
        f"{resets:%H:%M on %A %d %B %Y} ({zone.key}), in {_duration(wait)}.",
        429,
        "quota_exceeded",
        {"used": used, "limit": limit, "resets_at": resets.isoformat(), "time_zone": zone.key},
        retry_after=wait,
    )


def _check_per_minute(user: User) -> None:
    per_minute = int(current_app.config["ANSWERS_PER_MINUTE"])
    if per_minute <= 0:
        return
    limiter = _limiter()
    item = RateLimitItemPerMinute(per_minute)
    if limiter.hit(item, "answers", user.id):
        return
    metrics.refused("answers_per_minute")
    reset_at = limiter.get_window_stats(item, "answers", user.id).reset_time
    wait = max(1, math.ceil(reset_at - time.time()))
    raise ChatError(
        f"You have started {per_minute} answers in the last minute, the most allowed. Try again in {_duration(wait)}.",
        429,
        "rate_limited",
        {"limit": per_minute},
        retry_after=wait,
    )


def _limiter() -> MovingWindowRateLimiter:
    """This app's moving-window limiter: Redis (shared by every worker and host) or this process's memory."""
    limiter = current_app.extensions.get("chatapp.quotas")
    if limiter is None:
        config = current_app.config
        if config["REDIS_URL"]:
            backend = storage.storage_from_string(config["REDIS_URL"], key_prefix=f"{config['REDIS_PREFIX']}:limits")
        else:
            backend = storage.storage_from_string("memory://")
        limiter = current_app.extensions.setdefault("chatapp.quotas", MovingWindowRateLimiter(backend))
    return limiter


def _zone(name: str | None) -> ZoneInfo:
    """The identity's time zone; UTC if it is unset or unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _today(zone: ZoneInfo) -> date:
    return datetime.now(zone).date()


def _duration(seconds: int) -> str:
    """A wait in words: "45 s", "12 min", "3 h 5 min"."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
