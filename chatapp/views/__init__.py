"""Blueprints and template helpers."""

from __future__ import annotations

from flask import Flask

from ..models import siblings_of
from ..rendering import render_markdown


def init_app(app: Flask) -> None:
    """Register every blueprint and the ``markdown`` filter."""
    from . import chat, health

    app.register_blueprint(chat.bp)
    app.register_blueprint(health.bp)
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.globals["siblings_of"] = siblings_of
