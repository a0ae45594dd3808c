"""Readiness: can this instance serve (database, Redis)? And can it reach the model (told, not required)?

A provider outage must not take every instance out of the platform's rotation, so the upstream's
reachability is reported but never makes the instance unready.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import current_app
from sqlalchemy import select

from .extensions import db
from .generation import current_generator
from .models import Message

PROBE_TIMEOUT = 3.0  # seconds for each check
UPSTREAM_EVERY = 30.0  # seconds a probe of the model server is reused: platforms poll often


def check() -> tuple[bool, dict[str, Any]]:
    """(ready, details): the database and Redis (when configured) must answer; the upstream is reported."""
    database = _database()
    redis = _redis() if current_app.config["REDIS_URL"] else None
    ready = database and redis is not False
    return ready, {
        "status": "ready" if ready else "unavailable",
        "database": database,
        "redis": redis,
        "upstream": _upstream(),
    }


def _database() -> bool:
    try:
        db.session.execute(select(Message.id).limit(1))  # a real table: reachable, and migrated
        return True
    except Exception:
        current_app.logger.warning("readiness: the database does not answer", exc_info=True)
        return False
    finally:
        db.session.close()


def _redis() -> bool:
    import redis

    client = current_app.extensions.get("chatapp.readiness_redis")
    if client is None:
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"], socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        client = current_app.extensions.setdefault("chatapp.readiness_redis", client)
    try:
        return bool(client.ping())
    except Exception as exc:
        current_app.logger.warning("readiness: Redis does not answer: %r", exc)
        return False


def _upstream() -> dict[str, Any]:
    """Whether the model server answers (any HTTP answer counts), probed at most every 30 s."""
    with _probe_lock:
        found = current_app.extensions.get("chatapp.upstream_probe")
        if found is not None and time.monotonic() - found[0] < UPSTREAM_EVERY:
            return found[1]
        provider = current_generator().provider
        result: dict[str, Any] = {"provider": provider.name, "model": provider.model, "reachable": True}
        client = getattr(provider, "client", None)  # the local model has none: it is in this process
        if client is not None:
            result.update(_probe(client))
        current_app.extensions["chatapp.upstream_probe"] = (time.monotonic(), result)
    return result


_probe_lock = threading.Lock()  # one probe at a time; the others wait for its answer


def _probe(client: Any) -> dict[str, Any]:
    import openai

    try:
        client.with_options(timeout=PROBE_TIMEOUT, max_retries=0).models.list()
        return {"reachable": True}
    except openai.APIStatusError as exc:  # it answered, if only to refuse (no /models, a bad key)
        return {"reachable": True, "status_code": exc.status_code}
    except openai.APITimeoutError:
        return {"reachable": False, "error": f"The model server did not answer within {PROBE_TIMEOUT:g} seconds."}
    except openai.OpenAIError:
        return {"reachable": False, "error": "Could not connect to the model server."}
