"""Responses more than one door sends alike (views never import each other: they share these)."""

from __future__ import annotations

from flask import Response, request
from werkzeug.wrappers import Response as BaseResponse

from .. import images
from ..conversations import NOT_FOUND
from ..errors import ChatError
from ..models import Image


def image_response(image: Image) -> BaseResponse:
    """An attached image's bytes, cached privately (the page and the API serve the same)."""
    try:
        data = images.load(image)
    except images.storage.Missing:
        raise ChatError(NOT_FOUND, 404, "not_found") from None  # e.g. a local file on a disk wiped by a deploy
    response = Response(data, mimetype=image.mime)
    response.cache_control.private = True  # for its owner only: no shared caches
    response.cache_control.max_age = 86400
    response.set_etag(image.filename)  # a random name for bytes that never change
    return response.make_conditional(request)
