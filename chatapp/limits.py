"""Request body limits, checked before a body is read: small for forms and JSON, larger for uploads."""

from __future__ import annotations

from flask import Flask, current_app, request

AUDIO_ENDPOINTS = {"voice.transcribe", "api.transcriptions"}
IMAGE_ENDPOINTS = {"chat.create", "chat.send", "api.send_message"}
MULTIPART_OVERHEAD = 100_000
MULTIPART_READ_SIZE = 2 * 64 * 1024  # werkzeug's multipart parser reads 64 KiB at a time


def init_app(app: Flask) -> None:
    """Hold each request to its limit (registered before anything reads the body)."""
    # Each non-file field of a multipart body (a message's text) is held to the form limit too.
    # Werkzeug also applies this bound to each 64 KiB piece it reads, so it cannot be smaller.
    app.config["MAX_FORM_MEMORY_SIZE"] = max(app.config["MAX_FORM_BYTES"], MULTIPART_READ_SIZE)
    app.before_request(limit_body)


def limit_body() -> None:
    """Set this request's largest body: only a multipart upload to an upload endpoint gets more.

    Werkzeug refuses a larger ``Content-Length`` with 413 before reading a byte, and stops a
    chunked body at the limit; urlencoded and JSON bodies never get the upload allowance.
    """
    config = current_app.config
    limit = config["MAX_FORM_BYTES"]
    if request.mimetype == "multipart/form-data":
        if request.endpoint in AUDIO_ENDPOINTS:
            limit = config["MAX_AUDIO_BYTES"] + MULTIPART_OVERHEAD
        elif request.endpoint in IMAGE_ENDPOINTS:
            limit += config["MAX_IMAGE_BYTES"] * config["MAX_IMAGES"] + MULTIPART_OVERHEAD
    request.max_content_length = limit
