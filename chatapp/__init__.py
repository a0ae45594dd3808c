"""chatapp: a self-hosted LLM chat web app (Flask + HTMX)."""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
from datetime import timedelta
from pathlib import Path

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from .blocking import TakeTurns
from .config import ConfigError, load_config

PACKAGE = Path(__file__).resolve().parent
# Installed (pip install .), templates, static files and migrations are package data inside chatapp/;
# in a checkout (or an editable install) they sit beside the package.
INSTALLED = (PACKAGE / "templates").is_dir()
DATA = PACKAGE if INSTALLED else PACKAGE.parent
TEMPLATES, STATIC, MIGRATIONS = (str(DATA / name) for name in ("templates", "static", "migrations"))
log = logging.getLogger(__name__)


def instance_path() -> str:
    """``INSTANCE_PATH``; else ``instance/`` of the checkout, or ``./instance`` when installed."""
    default = Path.cwd() / "instance" if INSTALLED else PACKAGE.parent / "instance"
    return os.path.abspath(os.environ.get("INSTANCE_PATH") or default)


def warm_up(app: Flask) -> None:
    """Load now what serving the first answers would otherwise load in the middle of every stream:
    the tokenizer, the price table, the tone analyser's word list, the templates of a message and its
    stream, the model client's own first-request work and gevent's name resolver (together about half
    a second, which in a gevent worker every open stream would wait)."""
    from . import blocking, prices, tokens, tone

    blocking.warm_up()
    tokens.count_tokens("warm")
    app.extensions["chatapp.generator"].router.warm_up()  # the model client's first request: imports, platform
    prices.load_table()
    tone.load_analyzer()
    for name in ("chat.html", "partials/finished.html", "partials/message.html", "partials/answer_state.html"):
        app.jinja_env.get_template(name)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, database (migrated), provider, broker, generator, views."""
    app = Flask(
        __name__,
        instance_path=instance_path(),
        instance_relative_config=True,
        template_folder=TEMPLATES,
        static_folder=STATIC,
    )
    if test_config and test_config.get("TESTING"):
        app.testing = True
    os.makedirs(app.instance_path, exist_ok=True)
    load_config(app, test_config)
    app.config["REDIS_URL"] = redis_url(app.config["REDIS_URL"], app.config["REDIS_TLS_VERIFY"])
    from .prices import check_config

    check_config(app.config["MODEL_PRICES"])  # a price list that cannot be read stops the start, saying why

    from . import accounts, errors, identity, limits, logs, metrics, security, storage, views
    from .extensions import db, migrate, sock

    logs.init_app(app)  # first: every later request hook and the migrations log with it
    metrics.init_app(app)  # before accounts: the rate limiter reports its refusals
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    storage.init_app(app)
    sock.init_app(app)
    limits.init_app(app)  # before identity: the CSRF check reads the body
    identity.init_app(app)
    accounts.init_app(app)  # access policy, rate limiter, guest sweep, flask commands
    errors.init_app(app)
    security.init_app(app)  # before views: ids in URLs are bounded when routes are added
    views.init_app(app)
    _init_database(app)
    _init_generator(app)
    _init_proxy(app)  # every layer inside it sees the visitor's address
    app.wsgi_app = TakeTurns(app.wsgi_app)  # type: ignore[method-assign]  # outermost: a write waits before any work
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
                upgrade(directory=MIGRATIONS)
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
    from .tokens import count_tokens

    try:
        provider = make_provider(app)
    except ProviderError as exc:
        raise ConfigError(str(exc)) from None  # refuse to start rather than fail every answer
    broker = make_broker(app.config["REDIS_URL"], app.config["REDIS_PREFIX"])
    if not app.config["REDIS_URL"] and int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
        log.warning("WEB_CONCURRENCY > 1 without REDIS_URL: stop and live streams only work within one worker")
    count_tokens("")  # load the encoding now, not during someone's first message
    generator = Generator(app, broker, provider)
    app.extensions["chatapp.generator"] = generator
    # The flusher also sweeps for answers whose worker died: run it from this process's first request.
    app.before_request(generator.ensure_threads)
    atexit.register(generator.close)


def redis_url(url: str | None, verify: bool) -> str | None:
    """``REDIS_URL``, told not to check a self-signed certificate (Heroku's) when ``verify`` is off."""
    if not url or verify or not url.startswith("rediss://") or "ssl_cert_reqs=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "ssl_cert_reqs=none"


def _init_proxy(app: Flask) -> None:
    """Trust ``X-Forwarded-For/Proto/Host`` from ``PROXY_HOPS`` proxies (1 in production, else 0)."""
    hops = app.config["PROXY_HOPS"]
    if hops in (None, ""):
        hops = int(app.config["CHATAPP_ENV"] == "production")
    if not str(hops).isdigit():
        raise ConfigError(f"PROXY_HOPS is {hops!r}: set it to the number of proxies in front of the app (0 or more).")
    app.config["PROXY_HOPS"] = hops = int(hops)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.session_interface = _SessionInterface()


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is also Secure whenever the request came over HTTPS (as the proxy says)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """``SESSION_COOKIE_SECURE``, or the request's own scheme."""
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)
