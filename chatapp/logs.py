"""The server log: JSON lines (``LOG_FORMAT=json``, the default in production) or text, on stderr.

Every line carries the request id (``X-Request-ID``, taken from the request or made, and sent back)
and, where known, the identity, conversation and message ids. Inside a request they are read from
the request; background work (an answer's thread) binds them with ``bind``. Message text is never
logged unless ``LOG_CONTENT`` is on.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import inspect

from .config import ConfigError

REQUEST_ID_HEADER = "X-Request-ID"
FIELDS = ("request_id", "user_id", "conversation_id", "message_id")
# A request id from outside is kept only if it is a plain token: it goes into every log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_bound: ContextVar[dict[str, Any] | None] = ContextVar("chatapp_log_fields", default=None)
requests_log = logging.getLogger("chatapp.requests")


def bind(**fields: Any) -> None:
    """Attach ``fields`` (ids) to every line logged from now on in this thread or greenlet."""
    _bound.set({**(_bound.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def current_fields() -> dict[str, Any]:
    """The ids known here (the request's, else what was bound), to carry into background work."""
    fields = dict(_bound.get() or {})
    if has_request_context():
        fields.update(_request_fields())
    return fields


def _request_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {"request_id": g.get("request_id")}
    user = g.get("user") or g.get("session_user")
    # The identity key, never an attribute: that could load an expired row in the middle of logging.
    state = inspect(user, raiseerr=False) if user is not None else None
    fields["user_id"] = (state.identity[0] if state is not None and state.identity else None) or g.get("api_user_id")
    for name in ("conversation_id", "message_id"):
        fields[name] = (request.view_args or {}).get(name)
    return {key: value for key, value in fields.items() if value}


class ContextFilter(logging.Filter):
    """Adds the ids known where the line is logged (an explicit ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; only add fields."""
        for key, value in current_fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """``time level logger message key=value…``: the ids and any ``extra`` fields, for reading by eye."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, then the record's extra fields."""
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in RESERVED_ATTRS and not k.startswith("_")}
        ordered = [k for k in FIELDS if k in extras] + sorted(k for k in extras if k not in FIELDS)
        pairs = " ".join(
            f"{key}={extras[key]!r}" if isinstance(extras[key], str) else f"{key}={extras[key]}" for key in ordered
        )
        return f"{line} {pairs}" if pairs else line


def make_formatter(kind: str) -> logging.Formatter:
    """The formatter for ``LOG_FORMAT`` (json or text)."""
    if kind == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    return TextFormatter()


def log_format(config: dict) -> str:
    """``LOG_FORMAT``: json or text; by default json under ``CHATAPP_ENV=production``."""
    kind = str(config["LOG_FORMAT"] or ("json" if config["CHATAPP_ENV"] == "production" else "text")).lower()
    if kind not in ("json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text, not {config['LOG_FORMAT']!r}.")
    return kind


class _Handler(logging.StreamHandler):
    """chatapp's own handler on the root logger (one per process: a new app replaces it).

    It writes to whatever ``sys.stderr`` is when a line is logged (as logging's last resort does),
    so a replaced stderr (a test's capture, since closed) never swallows the lines.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        """The current stderr."""
        return sys.stderr


def init_app(app: Flask) -> None:
    """Send log lines to stderr in the configured format; give every request an id. Call first."""
    handler = _Handler()
    handler.setFormatter(make_formatter(log_format(app.config)))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    # On the root logger (so library warnings come out the same way), before migrations run:
    # Alembic then leaves the logging set-up alone.
    root.addHandler(handler)
    level = str(app.config["LOG_LEVEL"]).upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {app.config['LOG_LEVEL']!r}.")
    logging.getLogger("chatapp").setLevel(level)
    # A database error's message quotes the statement's parameters, a message's text among them.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault("hide_parameters", not app.config["LOG_CONTENT"])
    app.before_request(_begin)
    app.after_request(_end)


def _begin() -> None:
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = sent if REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    g.request_started = time.monotonic()


def _end(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    requests_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,  # never the query string: ?token= carries a secret
            "route": request.url_rule.rule if request.url_rule is not None else None,
            "status": response.status_code,
            "duration_ms": round((time.monotonic() - started) * 1000, 1) if started else None,
        },
    )
    return response
