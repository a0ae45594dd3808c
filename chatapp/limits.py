"""Request body limits, checked before a body is read: small for forms and JSON, larger for uploads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from flask import Flask, current_app, request

MULTIPART_OVERHEAD = 100_000
MULTIPART_READ_SIZE = 2 * 64 * 1024  # werkzeug's multipart parser reads 64 KiB at a time


def init_app(app: Flask) -> None:
    """Hold each request to its limit (registered before anything reads the body)."""
    # Each non-file field of a multipart body (a message's text) is held to the form limit too.
    # Werkzeug also applies this bound to each 64 KiB piece it reads, so it cannot be smaller.
    app.config["MAX_FORM_MEMORY_SIZE"] = max(app.config["MAX_FORM_BYTES"], MULTIPART_READ_SIZE)
    app.before_request(limit_body)


def uploads(kind: Literal["images", "audio", "import"]) -> Callable[[Callable], Callable]:
    """Declare at the view that it takes multipart uploads: images (a message's), audio or an export to import."""

    def mark(view: Callable) -> Callable:
        view.uploads = kind  # type: ignore[attr-defined]
        return view

    return mark


def limit_body() -> None:
    """Set this request's largest body: only a multipart upload to an upload endpoint gets more.

    Werkzeug refuses a larger ``Content-Length`` with 413 before reading a byte, and stops a
    chunked body at the limit; urlencoded and JSON bodies never get the upload allowance.
    """
    config = current_app.config
    limit = config["MAX_FORM_BYTES"]
    view = current_app.view_functions.get(request.endpoint or "")
    kind = getattr(view, "uploads", None)
    if request.mimetype == "multipart/form-data":
        if kind == "audio":
            limit = config["MAX_AUDIO_BYTES"] + MULTIPART_OVERHEAD
        elif kind == "import":
            limit = config["MAX_IMPORT_BYTES"] + MULTIPART_OVERHEAD
        elif kind == "images":
            limit += config["MAX_IMAGE_BYTES"] * config["MAX_IMAGES"] + MULTIPART_OVERHEAD
    request.max_content_length = limit
