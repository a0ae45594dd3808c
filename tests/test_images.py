"""Images: attached to a message, checked by content, stored without metadata, sent as image parts."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

from PIL import Image as PILImage

from chatapp.extensions import db
from chatapp.models import Image
from tests.conftest import Chat
from tests.fake_upstream import Reply


def picture(fmt: str = "PNG", size: tuple[int, int] = (40, 30), exif: bool = False) -> bytes:
    image = PILImage.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    if exif:
        data = image.getexif()
        data[0x010F] = "SecretCamera"  # Make
        data[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
        image.save(out, format=fmt, exif=data)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def send_with_images(chat: Chat, content: str, *images: bytes, conversation_id: int | None = None):  # noqa: ANN201
    url = f"/c/{conversation_id}/messages" if conversation_id else "/conversations"
    files = [(io.BytesIO(data), f"photo{i}.png") for i, data in enumerate(images)]
    return chat.post(url, {"content": content, "images": files}, content_type="multipart/form-data")


def stored_images(chat: Chat) -> list[Image]:
    with chat.app.app_context():
        rows = list(db.session.scalars(db.select(Image).order_by(Image.id)))
        db.session.expunge_all()
        return rows


def test_image_is_stored_shown_and_sent_as_a_part(chat: Chat, upstream) -> None:  # noqa: ANN001
    response = send_with_images(chat, "What is in this picture?", picture())
    assert response.status_code == 303
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    chat.wait(answer_id)
    [image] = stored_images(chat)
    assert image.mime == "image/png" and (image.width, image.height) == (40, 30)
    assert len(image.filename) == 36 and image.filename.endswith(".png")  # random name

    page = chat.get(response.headers["Location"].split("#")[0]).get_data(as_text=True)
    assert f'<img src="/images/{image.id}"' in page
    served = chat.client.get(f"/images/{image.id}")
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert PILImage.open(io.BytesIO(served.data)).size == (40, 30)
    served.close()

    content = upstream.requests[0]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is in this picture?"}
    assert content[1]["type"] == "image_url"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (40, 30)


def test_another_identity_cannot_see_the_image(app, chat: Chat) -> None:  # noqa: ANN001
    chat.wait(int(send_with_images(chat, "mine", picture()).headers["Location"].rsplit("-", 1)[1]))
    [image] = stored_images(chat)
    assert Chat(app).client.get(f"/images/{image.id}").status_code == 404
    served = chat.client.get(f"/images/{image.id}")
    assert served.status_code == 200
    served.close()


def test_metadata_is_stripped_and_large_images_scaled_down(chat: Chat) -> None:
    original = picture("JPEG", (3000, 1000), exif=True)
    assert PILImage.open(io.BytesIO(original)).getexif()
    send_with_images(chat, "", original)  # an image alone is a message too
    [image] = stored_images(chat)
    with chat.app.app_context():
        from chatapp.images import path_of

        with PILImage.open(path_of(image)) as stored:
            assert not stored.getexif()
            assert stored.size == (2048, 683) == (image.width, image.height)


def test_bad_images_are_refused_and_nothing_is_lost(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_IMAGE_BYTES=50_000, MAX_IMAGES=2))
    cases = [
        (b"this is not an image", 415, "not an image this app can read"),
        (picture("BMP"), 415, "is a BMP image"),
        (picture("PNG", (1000, 1000)) + b"\0" * 60_000, 413, "the limit is 50,000"),
    ]
    for data, status, message in cases:
        response = send_with_images(chat, "keep this text", data)
        assert response.status_code == status
        page = response.get_data(as_text=True)
        assert message in page and "keep this text" in page
    response = send_with_images(chat, "three", picture(), picture(), picture())
    assert response.status_code == 422 and "at most 2" in response.get_data(as_text=True)
    assert upstream.requests == [] and stored_images(chat) == []


def test_decompression_bomb_is_refused_before_decoding(chat: Chat, upstream) -> None:  # noqa: ANN001
    # A PNG header claiming 10000×6000 (60 million pixels) and no pixel data at all: only its header can
    # be read, so the refusal is about the size it claims; had anything been decoded, it would have failed
    # as a damaged file (415) instead.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header_only = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 6000, 8, 2, 0, 0, 0))
    response = send_with_images(chat, "bomb", header_only + chunk(b"IEND", b""))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "is 10000×6000 pixels; the limit is 50,000,000 pixels" in page and "bomb" in page
    assert upstream.requests == [] and stored_images(chat) == []


def test_model_that_cannot_see_images_shows_its_error_and_keeps_the_text(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(status=400, error_message="This model does not support image inputs."))
    response = send_with_images(chat, "describe it", picture())
    answer_id = int(response.headers["Location"].rsplit("-", 1)[1])
    message = chat.wait(answer_id)
    assert message.status == "error" and "does not support image inputs" in message.error
    page = chat.get(response.headers["Location"].split("#")[0]).get_data(as_text=True)
    assert "describe it" in page and "/images/" in page
    # After switching to a model that can (here: the fake's next reply), retry works.
    retried = int(chat.post(f"/messages/{answer_id}/retry").headers["Location"].rsplit("-", 1)[1])
    assert chat.wait(retried).status == "complete"
    assert upstream.requests[-1]["messages"][-1]["content"][1]["type"] == "image_url"


def test_local_model_says_it_cannot_read_images(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(OPENAI_BASE_URL=None, OPENAI_API_KEY=None))
    response = send_with_images(chat, "look", picture())
    message = chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    assert message.status == "error" and "cannot look at images" in message.error


def test_history_trimming_counts_images(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_HISTORY_TOKENS=700, SYSTEM_PROMPT=""))
    response = send_with_images(chat, "first with a picture", picture())
    conversation_id = int(response.headers["Location"].split("/c/")[1].split("#")[0])
    chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    chat.wait(chat.send(conversation_id, "second, text only"))
    sent = upstream.requests[-1]["messages"]
    # The image's estimated 765 tokens no longer fit beside the newer messages: it was trimmed first.
    assert all(isinstance(m["content"], str) for m in sent)
    assert sent[-1]["content"] == "second, text only"


def test_deleting_the_conversation_removes_the_files(chat: Chat) -> None:
    response = send_with_images(chat, "bye", picture(), picture("WEBP"))
    chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    with chat.app.app_context():
        from chatapp.images import path_of

        paths = [path_of(image) for image in stored_images(chat)]
    assert len(paths) == 2 and all(os.path.exists(p) for p in paths)
    conversation_id = int(response.headers["Location"].split("/c/")[1].split("#")[0])
    chat.post(f"/c/{conversation_id}/delete")
    assert not any(os.path.exists(p) for p in paths)


def test_an_edited_message_keeps_its_images(chat: Chat, upstream) -> None:  # noqa: ANN001
    response = send_with_images(chat, "what is this?", picture())
    chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    with chat.app.app_context():
        user_id = db.session.scalars(db.select(Image.message_id)).one()
    edited = chat.post(f"/messages/{user_id}/edit", {"content": "what colour is this?"})
    chat.wait(int(edited.headers["Location"].rsplit("-", 1)[1]))
    parts = upstream.requests[-1]["messages"][-1]["content"]
    assert parts[0]["text"] == "what colour is this?" and parts[1]["type"] == "image_url"
    assert len(stored_images(chat)) == 2  # one for each version, each its own file
