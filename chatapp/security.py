"""Headers on every response, and ids in URLs that fit the database (a larger one is simply 404)."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter

LARGEST_ID = 2**63 - 1  # BIGINT; a larger number cannot name a row, and drivers fail on it (500)

# No inline script or style anywhere: a script or style that got into a message cannot run. Images
# come only from the app (composer previews are blob:/data:), so model Markdown such as
# ![](https://elsewhere/?q=…) cannot send a conversation anywhere: a known way for prompt injection
# to leak one. connect-src 'self' covers the answer streams (EventSource) and fetch.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # Links in answers lead elsewhere: they learn nothing of the conversation's URL.
    "Referrer-Policy": "same-origin",
}


class IdConverter(IntegerConverter):
    """``<int:…>`` in every route: an id larger than a BIGINT names nothing, so the answer is 404.

    NotFound rather than werkzeug's ValidationError: with that, another method's rule for the same
    path would make it a 405.
    """

    def to_python(self, value: str) -> int:
        """The id; past 19 digits ``int()`` is not even tried (it refuses 4,300 digits with a 500)."""
        if len(value) > len(str(LARGEST_ID)) or int(value) > LARGEST_ID:
            raise NotFound()
        return super().to_python(value)


def init_app(app: Flask) -> None:
    """Bound ``int`` URL parts (before any route is registered) and add the headers to every response."""
    app.url_map.converters["int"] = IdConverter
    app.after_request(add_headers)


def add_headers(response: Response) -> Response:
    """The security headers, and ``Allow`` on a 405 (error handlers build a new response without it)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if response.status_code == 405 and "Allow" not in response.headers:
        failure = request.routing_exception
        if isinstance(failure, MethodNotAllowed) and failure.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(failure.valid_methods))
    return response
