"""Blueprints and template helpers."""

from __future__ import annotations

from flask import Flask

from ..models import siblings_of
from ..rendering import render_markdown
from ..voice import Transcriber


def init_app(app: Flask) -> None:
    """Register every blueprint and the ``markdown`` filter."""
    from . import admin, api, auth, chat, data, health, settings, theme, voice, ws

    app.register_blueprint(chat.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(voice.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.register_blueprint(settings.bp)
    app.register_blueprint(data.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(theme.bp)
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.globals["siblings_of"] = siblings_of
    app.jinja_env.globals["voice_enabled"] = lambda: Transcriber.from_config() is not None
