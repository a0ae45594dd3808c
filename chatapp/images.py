"""Images attached to messages: checked by content (Pillow), cleaned of metadata, stored, sent as parts."""

from __future__ import annotations

import base64
import io
import secrets
from dataclasses import dataclass

from flask import current_app, g
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from sqlalchemy import func, select

from . import storage
from .blocking import call_blocking
from .errors import ChatError
from .extensions import db
from .models import Conversation, Image, Message

FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}
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
    """Check one upload by its content and re-encode it: no EXIF, at most MAX_SIDE pixels a side.

    The size comes from the header: an image over ``MAX_IMAGE_PIXELS``, or one that takes the
    message's images (numbered from 1, in order) over ``MAX_MESSAGE_IMAGE_PIXELS``, is refused before
    anything is decoded. Decoding and re-encoding run off the event loop.
    """
    config = current_app.config
    name = f"Image {number}"
    if not data:
        raise ChatError(f"{name} is empty.", 400)
    if len(data) > config["MAX_IMAGE_BYTES"]:
        limit = config["MAX_IMAGE_BYTES"]
        raise ChatError(f"{name} is {len(data):,} bytes; the limit is {limit:,}. Use a smaller image.", 413)
    try:
        image = PILImage.open(io.BytesIO(data))  # reads the header only
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        # Pillow's own guard (past 89 million pixels) speaks before we can: the same refusal.
        limit = config["MAX_IMAGE_PIXELS"]
        raise ChatError(f"{name} has more pixels than the limit of {limit:,} pixels in all.", 422) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ChatError(f"{name} is not an image this app can read. Use PNG, JPEG, WebP or GIF.", 415) from exc
    if image.format not in FORMATS:
        raise ChatError(f"{name} is a {image.format} image. Use PNG, JPEG, WebP or GIF.", 415)
    width, height = image.size
    if width * height > config["MAX_IMAGE_PIXELS"]:
        limit = config["MAX_IMAGE_PIXELS"]
        raise ChatError(f"{name} is {width}×{height} pixels; the limit is {limit:,} pixels in all.", 422)
    # g lives as long as the request (or the WebSocket message): the images of one message.
    total = (g.get("image_pixels", 0) if number > 1 else 0) + width * height
    if total > config["MAX_MESSAGE_IMAGE_PIXELS"]:
        limit = config["MAX_MESSAGE_IMAGE_PIXELS"]
        raise ChatError(
            f"The images of this message have {total:,} pixels with image {number}; the limit is {limit:,} "
            "pixels in all. Send fewer or smaller images.",
            422,
        )
    g.image_pixels = total
    return call_blocking(_reencode, image, image.format, name)


def _reencode(image: PILImage.Image, fmt: str, name: str) -> Prepared:
    """Decode and write the image afresh (no EXIF, no text chunks); CPU-bound, so run off the loop."""
    mime, extension = FORMATS[fmt]
    try:
        image = ImageOps.exif_transpose(image)  # keep the orientation the EXIF data asked for
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        if mime == "image/jpeg" and image.mode != "RGB":
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=FORMATS_BY_MIME[mime])
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ChatError(f"{name} could not be read (the file may be damaged).", 415) from exc
    return Prepared(out.getvalue(), mime, extension, image.width, image.height)


FORMATS_BY_MIME = {mime: fmt for fmt, (mime, _ext) in FORMATS.items()}


def store(prepared: Prepared, message_id: int) -> Image:
    """Save the bytes under a random name in the configured storage; returns the image's (unsaved) row."""
    image = Image(
        message_id=message_id,
        filename=f"{secrets.token_hex(16)}.{prepared.extension}",
        mime=prepared.mime,
        width=prepared.width,
        height=prepared.height,
        size=len(prepared.data),
    )
    storage.current().save(image, prepared.data)
    return image


def copy(image: Image, message_id: int) -> Image:
    """The same picture for another message (an edited version), stored on its own."""
    extension = image.filename.rsplit(".", 1)[1]
    copied = store(Prepared(load(image), image.mime, extension, image.width, image.height), message_id)
    copied.alt = image.alt  # its description too
    return copied


def load(image: Image) -> bytes:
    """The image's bytes, from whichever storage holds them (raises storage.Missing)."""
    return storage.load(image)


def path_of(image: Image) -> str:
    """Where the image's file is, with local storage (``UPLOAD_FOLDER``)."""
    return storage.local().path(image.filename)


def data_url(image: Image) -> str:
    """The image inline, as the Chat Completions ``image_url`` part wants it."""
    return f"data:{image.mime};base64,{base64.b64encode(load(image)).decode()}"


def remove_files(filenames: list[str]) -> None:
    """Delete stored images' bytes (after their rows are gone), in every backend."""
    storage.delete(filenames)


def storage_used(user_id: str) -> int:
    """Bytes of images stored for the identity's conversations."""
    query = (
        select(func.coalesce(func.sum(Image.size), 0))
        .join(Message, Image.message_id == Message.id)
        .join(Conversation, Message.conversation_id == Conversation.id)
        .where(Conversation.user_id == user_id)
    )
    return int(db.session.scalar(query) or 0)


def check_quota(user_id: str, sizes: list[int]) -> None:
    """Refuse (413) new images that would take the identity past ``MAX_IMAGE_STORAGE_PER_USER``."""
    limit = current_app.config["MAX_IMAGE_STORAGE_PER_USER"]
    needed = sum(sizes)
    if not limit or not needed:
        return
    used = storage_used(user_id)
    if used + needed > limit:
        raise ChatError(
            f"Not enough image storage: these images need {_size(needed)}, and your images already use "
            f"{_size(used)} of your {_size(limit)}. Delete conversations with images you no longer need to free "
            "space, or send smaller images.",
            413,
            "image_storage_full",
            {"used": used, "limit": limit, "needed": needed},
        )


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    return f"{size / 1000:,.1f} kB" if size < 100_000 else f"{size / 1_000_000:,.1f} MB"
