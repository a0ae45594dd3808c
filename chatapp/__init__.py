"""chatapp: a self-hosted LLM chat web app (Flask + HTMX)."""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
from datetime import timedelta
from pathlib import Path

from flask import Flask

from .config import load_config

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, database (migrated), provider, broker, generator, views."""
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    if test_config and test_config.get("TESTING"):
        app.testing = True
    os.makedirs(app.instance_path, exist_ok=True)
    load_config(app, test_config)

    from . import errors, identity, limits, security, views
    from .extensions import db, migrate, sock

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    sock.init_app(app)
    limits.init_app(app)  # before identity: the CSRF check reads the body
    identity.init_app(app)
    errors.init_app(app)
    security.init_app(app)  # before views: ids in URLs are bounded when routes are added
    views.init_app(app)
    _init_database(app)
    _init_generator(app)
    return app


def _init_database(app: Flask) -> None:
    from sqlalchemy import inspect

    from . import sqlite
    from .extensions import db

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sqlite.configure(db.engine)

        if app.config["AUTO_MIGRATE"]:
            from flask_migrate import upgrade

            # Every gunicorn worker builds the app; the lock lets one migrate while the others wait.
            with open(os.path.join(app.instance_path, "migrate.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                upgrade(directory=str(ROOT / "migrations"))
        from .models import mark_stale_interrupted, utcnow

        # Startup recovery: answers whose generator died are marked interrupted, text kept.
        if inspect(db.engine).has_table("message"):
            count = mark_stale_interrupted(utcnow() - timedelta(seconds=app.config["STALE_AFTER"]))
            if count:
                log.warning("marked %d unfinished answers as interrupted", count)
        db.session.remove()
        db.engine.dispose()  # no connections carried across a fork


def _init_generator(app: Flask) -> None:
    from .broker import make_broker
    from .generation import Generator
    from .providers import ProviderError, make_provider
    from .providers.unavailable import UnavailableProvider
    from .tokens import count_tokens

    try:
        provider = make_provider(app)
    except ProviderError as exc:
        log.error("%s", exc)
        provider = UnavailableProvider(str(exc))
    broker = make_broker(app.config["REDIS_URL"], app.config["REDIS_PREFIX"])
    if not app.config["REDIS_URL"] and int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
        log.warning("WEB_CONCURRENCY > 1 without REDIS_URL: stop and live streams only work within one worker")
    count_tokens("")  # load the encoding now, not during someone's first message
    generator = Generator(app, broker, provider)
    app.extensions["chatapp.generator"] = generator
    # The flusher also sweeps for answers whose worker died: run it from this process's first request.
    app.before_request(generator.ensure_threads)
    atexit.register(generator.close)
