"""Request body limits: small for forms, large enough for a recording on the upload endpoint."""

from __future__ import annotations

from flask import Flask, request

AUDIO_ENDPOINTS = {"voice.transcribe", "api.transcriptions"}
IMAGE_ENDPOINTS = {"chat.create", "chat.send", "api.send_message"}
MULTIPART_OVERHEAD = 100_000


def init_app(app: Flask) -> None:
    """Hold each request to its endpoint's limit (registered before anything reads the body)."""
    app.config["MAX_FORM_MEMORY_SIZE"] = app.config["MAX_FORM_BYTES"]

    @app.before_request
    def _limit_body() -> None:
        if request.endpoint in AUDIO_ENDPOINTS:
            request.max_content_length = app.config["MAX_AUDIO_BYTES"] + MULTIPART_OVERHEAD
        elif request.endpoint in IMAGE_ENDPOINTS:
            images = app.config["MAX_IMAGE_BYTES"] * app.config["MAX_IMAGES"]
            request.max_content_length = app.config["MAX_FORM_BYTES"] + images + MULTIPART_OVERHEAD
        else:
            request.max_content_length = app.config["MAX_FORM_BYTES"]
