"""Images attached to messages: checked by content (Pillow), cleaned of metadata, stored, sent as parts."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
from dataclasses import dataclass

from flask import current_app
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from .errors import ChatError
from .models import Image

FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
MAX_PIXELS = 50_000_000  # refuse before decoding anything larger (decompression bombs)
MAX_SIDE = 2048  # larger images are scaled down to this longest side before they are stored and sent
# Budget estimate for one image in the history: OpenAI counts a detailed 1024×1024 image as 765 tokens.
IMAGE_TOKENS = 765


@dataclass(frozen=True)
class Prepared:
    """A checked image, re-encoded without metadata, ready to store."""

    data: bytes
    mime: str
    extension: str
    width: int
    height: int


def prepare(data: bytes, number: int = 1) -> Prepared:
    """Check one upload by its content and re-encode it: no EXIF, at most MAX_SIDE pixels a side."""
    limit = current_app.config["MAX_IMAGE_BYTES"]
    name = f"Image {number}"
    if not data:
        raise ChatError(f"{name} is empty.", 400)
    if len(data) > limit:
        raise ChatError(f"{name} is {len(data):,} bytes; the limit is {limit:,}. Use a smaller image.", 413)
    try:
        image = PILImage.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise ChatError(f"{name} is not an image this app can read. Use PNG, JPEG, WebP or GIF.", 415) from exc
    if image.format not in FORMATS:
        raise ChatError(f"{name} is a {image.format} image. Use PNG, JPEG, WebP or GIF.", 415)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ChatError(f"{name} is {width}×{height} pixels; the limit is {MAX_PIXELS:,} pixels in all.", 422)
    mime, extension = FORMATS[image.format]
    try:
        image = ImageOps.exif_transpose(image)  # keep the orientation the EXIF data asked for
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        if mime == "image/jpeg" and image.mode != "RGB":
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=FORMATS_BY_MIME[mime])  # written afresh: no EXIF, no text chunks
    except (OSError, ValueError) as exc:
        raise ChatError(f"{name} could not be read (the file may be damaged).", 415) from exc
    return Prepared(out.getvalue(), mime, extension, image.width, image.height)


FORMATS_BY_MIME = {mime: fmt for fmt, (mime, _ext) in FORMATS.items()}


def uploads_dir() -> str:
    """``UPLOAD_FOLDER`` (default ``instance/uploads``), created on first use."""
    path = current_app.config["UPLOAD_FOLDER"] or os.path.join(current_app.instance_path, "uploads")
    os.makedirs(path, exist_ok=True)
    return path


def store(prepared: Prepared, message_id: int) -> Image:
    """Write the file under a random name and return its (unsaved) row."""
    filename = f"{secrets.token_hex(16)}.{prepared.extension}"
    with open(os.path.join(uploads_dir(), filename), "wb") as file:
        file.write(prepared.data)
    return Image(
        message_id=message_id,
        filename=filename,
        mime=prepared.mime,
        width=prepared.width,
        height=prepared.height,
        size=len(prepared.data),
    )


def copy(image: Image, message_id: int) -> Image:
    """The same picture for another message (an edited version), in a file of its own."""
    with open(path_of(image), "rb") as file:
        data = file.read()
    copied = store(Prepared(data, image.mime, image.filename.rsplit(".", 1)[1], image.width, image.height), message_id)
    copied.alt = image.alt  # its description too
    return copied


def path_of(image: Image) -> str:
    """Where the image's file is."""
    return os.path.join(uploads_dir(), image.filename)


def data_url(image: Image) -> str:
    """The image inline, as the Chat Completions ``image_url`` part wants it."""
    with open(path_of(image), "rb") as file:
        return f"data:{image.mime};base64,{base64.b64encode(file.read()).decode()}"


def remove_files(filenames: list[str]) -> None:
    """Delete stored files (after their rows are gone)."""
    for filename in filenames:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(uploads_dir(), filename))
