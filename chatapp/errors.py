"""Error pages: HTML for people, JSON for programs, a small fragment for HTMX calls."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

API_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class ChatError(Exception):
    """A request the user can correct; ``status`` is the HTTP status to answer with."""

    def __init__(
        self,
        message: str,
        status: int = 422,
        code: str | None = None,
        details: dict | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code  # for the JSON API; None: derived from the status
        self.details = details or {}
        self.headers: dict[str, str] = {}  # sent with the error by every HTTP door
        if retry_after is not None:
            self.details["retry_after"] = retry_after
            self.headers["Retry-After"] = str(retry_after)


def wants_fragment() -> bool:
    """True for an HTMX call that swaps part of the page (not a boosted navigation)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")


def api_error(status: int, message: str, code: str | None = None, details: dict | None = None) -> tuple[Response, int]:
    """The JSON API's error: ``{"error": {"code", "message", "details"}}`` with the status."""
    body = {"error": {"code": code or API_CODES.get(status, "error"), "message": message, "details": details or {}}}
    return jsonify(body), status


def error_response(message: str, status: int, code: str | None = None, details: dict | None = None):  # noqa: ANN201
    """The error in the form the client asked for."""
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return api_error(status, message, code, details)
    if wants_fragment():
        html = render_template("partials/error.html", message=message)
        return html, status, {"HX-Retarget": "#composer-error", "HX-Reswap": "innerHTML"}
    draft = _typed_text()
    return render_template("error.html", message=message, status=status, draft=draft), status


def _typed_text() -> str:
    """What the user typed, to offer back; a body that was refused (too large) is not read again."""
    if request.method != "POST":
        return ""
    if "stream" in request.__dict__ and "form" not in request.__dict__:
        return ""  # reading the body already failed: nothing to offer, and nothing more is read
    try:
        return request.form.get("content", "")
    except RequestEntityTooLarge:
        return ""


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
        response = app.make_response(error_response(exc.message, exc.status, exc.code, exc.details))
        response.headers.update(exc.headers)
        return response
