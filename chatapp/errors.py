"""Error pages: HTML for people, JSON for programs, a small fragment for HTMX calls."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .conversations import ChatError


def wants_fragment() -> bool:
    """True for an HTMX call that swaps part of the page (not a boosted navigation)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")


def error_response(message: str, status: int):  # noqa: ANN201
    """The error in the form the client asked for."""
    if request.blueprint == "api" or (request.accept_mimetypes.best == "application/json"):
        return jsonify(error={"code": str(status), "message": message}), status
    if wants_fragment():
        html = render_template("partials/error.html", message=message)
        return html, status, {"HX-Retarget": "#composer-error", "HX-Reswap": "innerHTML"}
    # Offer the typed text back (a 413 body is too large to read, so there is nothing to offer).
    draft = request.form.get("content", "") if request.method == "POST" and status != 413 else ""
    return render_template("error.html", message=message, status=status, draft=draft), status


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # noqa: ANN202
        message = exc.description or exc.name
        if exc.code == 404:
            message = "There is nothing here. The page may have been deleted, or it belongs to someone else."
        if exc.code == 413:
            limit = request.max_content_length or app.config["MAX_CONTENT_LENGTH"]
            message = f"That was too large: the limit is {limit:,} bytes for this request."
        return error_response(message, exc.code or 500)

    @app.errorhandler(ChatError)
    def chat_error(exc: ChatError):  # noqa: ANN202
        return error_response(exc.message, exc.status)
