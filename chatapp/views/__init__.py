"""Blueprints and template helpers."""

from __future__ import annotations

from flask import Flask

from ..conversations import available_models
from ..generation import current_generator
from ..models import siblings_of
from ..prices import format_cost, message_cost
from ..rendering import render_markdown
from ..tone import tone
from ..voice import Transcriber


def init_app(app: Flask) -> None:
    """Register every blueprint and the ``markdown`` filter."""
    from . import (
        admin,
        api,
        auth,
        chat,
        data,
        health,
        metrics,
        organise,
        rooms,
        search,
        settings,
        share,
        stats,
        theme,
        voice,
        ws,
    )

    app.register_blueprint(chat.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(voice.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.register_blueprint(settings.bp)
    app.register_blueprint(data.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(theme.bp)
    app.register_blueprint(stats.bp)
    app.register_blueprint(share.bp)
    app.register_blueprint(rooms.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(organise.bp)
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.filters["tone"] = tone
    app.jinja_env.globals["siblings_of"] = siblings_of
    app.jinja_env.globals["available_models"] = available_models
    app.jinja_env.globals["message_cost"] = message_cost
    app.jinja_env.filters["dollars"] = format_cost
    app.jinja_env.globals["provider_model"] = lambda: current_generator().provider.model
    app.jinja_env.globals["provider_name"] = lambda: current_generator().provider.name
    app.jinja_env.globals["voice_enabled"] = lambda: Transcriber.from_config() is not None
    # Why an answer being written has no text yet (retrying…), for pages drawn while it waits (JS off too).
    app.jinja_env.globals["answer_status"] = lambda message_id: current_generator().broker.last_status(message_id)
