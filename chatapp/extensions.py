"""Flask extensions, created here and bound to the app in ``create_app``."""

from typing import TYPE_CHECKING

from flask import request
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for all models."""


db = SQLAlchemy(model_class=Base)
if TYPE_CHECKING:
    Model = Base  # what db.Model is (plus Flask-SQLAlchemy's query helpers), for the type checker
else:
    Model = db.Model


def commit_keeping_loaded() -> None:
    """Commit without expiring what the session holds. For rows just written from these objects, which
    are what the database has: expiring them would cost a read each when the response shows them (the
    question, the answer, the conversation and the author after a send: a fifth of its statements)."""
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


migrate = Migrate()
sock = Sock()
# HTTP-level limits (sign-in attempts, new guests). Keyed per client IP, which ProxyFix makes the
# real client's behind a proxy; storage is Redis with REDIS_URL, else memory (chatapp.accounts).
limiter = Limiter(key_func=lambda: request.remote_addr or "unknown", strategy="moving-window")
