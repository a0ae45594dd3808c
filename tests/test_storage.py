"""Image storage backends (local files, the database, S3) and the per-identity image storage quota."""

from __future__ import annotations

import base64
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image as PILImage

from chatapp.config import ConfigError
from chatapp.extensions import db
from chatapp.models import Image, ImageData
from tests.conftest import Chat, skip_or_fail
from tests.test_api import Api
from tests.test_images import picture, send_with_images, stored_images


@dataclass
class S3:
    """A bucket on the local moto server, with the settings that point chatapp at it."""

    endpoint: str
    bucket: str

    def settings(self) -> dict:
        return {
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "test",
            "S3_SECRET_ACCESS_KEY": "test",
        }

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server, on 127.0.0.1."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        skip_or_fail("install moto[server] (the test extra) to run the S3 storage tests")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> S3:
    """A new, empty bucket."""
    bucket = S3(s3_endpoint, f"chatapp-{secrets.token_hex(4)}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket


def answer_of(response) -> int:  # noqa: ANN001
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("message-", 1)[1])


def conversation_of(response) -> int:  # noqa: ANN001
    return int(response.headers["Location"].split("/c/")[1].split("#")[0])


def round_trip(chat: Chat, upstream) -> tuple[list[Image], int]:  # noqa: ANN001
    """Attach two images, view them, send them to the model, edit the message: what a user does."""
    response = send_with_images(chat, "what are these?", picture(), picture("WEBP", (20, 10)))
    chat.wait(answer_of(response))
    conversation_id = conversation_of(response)
    images = stored_images(chat)
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    for image, size in zip(images, [(40, 30), (20, 10)], strict=True):
        assert f'<img src="/images/{image.id}"' in page
        served = chat.client.get(f"/images/{image.id}")
        assert served.status_code == 200 and served.mimetype == image.mime
        assert "private" in served.headers["Cache-Control"]
        assert PILImage.open(io.BytesIO(served.data)).size == size
        again = chat.client.get(f"/images/{image.id}", headers={"If-None-Match": served.headers["ETag"]})
        assert again.status_code == 304
    parts = upstream.requests[-1]["messages"][-1]["content"]
    sent = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts if p["type"] == "image_url"]
    assert [PILImage.open(io.BytesIO(data)).size for data in sent] == [(40, 30), (20, 10)]

    with chat.app.app_context():
        message_id = db.session.scalars(db.select(Image.message_id)).first()
    chat.wait(answer_of(chat.post(f"/messages/{message_id}/edit", {"content": "and now?"})))
    parts = upstream.requests[-1]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]  # the edited version kept them
    images = stored_images(chat)
    assert len(images) == 4
    return images, conversation_id


def delete_conversation(chat: Chat, conversation_id: int, images: list[Image]) -> None:
    assert chat.post(f"/c/{conversation_id}/delete").status_code == 303
    assert stored_images(chat) == []
    for image in images:
        assert chat.client.get(f"/images/{image.id}").status_code == 404


def same_browser(chat: Chat, app) -> Chat:  # noqa: ANN001
    """The browser of ``chat`` (its session cookie) talking to another app: another host, or an upgrade."""
    other = Chat(app)
    name = app.config["SESSION_COOKIE_NAME"]
    other.client.set_cookie(name, chat.client.get_cookie(name).value)
    return other


def blob_count(app) -> int:  # noqa: ANN001
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(ImageData))


def test_local_files_are_the_sqlite_default(make_app, upstream, tmp_path) -> None:  # noqa: ANN001
    chat = Chat(make_app())
    assert chat.app.extensions["chatapp.storage"].name == "local"
    images, conversation_id = round_trip(chat, upstream)
    files = sorted(os.listdir(tmp_path / "uploads"))
    assert files == sorted(image.filename for image in images)
    assert blob_count(chat.app) == 0
    delete_conversation(chat, conversation_id, images)
    assert os.listdir(tmp_path / "uploads") == []


def test_database_storage_on_sqlite(make_app, upstream, tmp_path) -> None:  # noqa: ANN001
    chat = Chat(make_app(IMAGE_STORAGE="database"))
    images, conversation_id = round_trip(chat, upstream)
    assert blob_count(chat.app) == 4
    assert not (tmp_path / "uploads").exists()  # nothing on this host's disk
    delete_conversation(chat, conversation_id, images)
    assert blob_count(chat.app) == 0


@pytest.mark.postgres
def test_database_storage_is_the_postgresql_default(make_app, upstream, postgres_url, tmp_path) -> None:  # noqa: ANN001
    chat = Chat(make_app(DATABASE_URL=postgres_url))
    assert chat.app.extensions["chatapp.storage"].name == "database"
    images, conversation_id = round_trip(chat, upstream)
    assert blob_count(chat.app) == 4
    assert not (tmp_path / "uploads").exists()
    # Another host (a second app on the same database) serves the same bytes.
    other = same_browser(chat, make_app(DATABASE_URL=postgres_url, UPLOAD_FOLDER=str(tmp_path / "elsewhere")))
    served = other.client.get(f"/images/{images[0].id}")
    assert served.status_code == 200 and PILImage.open(io.BytesIO(served.data)).size == (40, 30)
    delete_conversation(chat, conversation_id, images)
    assert blob_count(chat.app) == 0


def test_s3_storage(make_app, upstream, s3: S3, tmp_path) -> None:  # noqa: ANN001
    chat = Chat(make_app(**s3.settings()))
    assert chat.app.extensions["chatapp.storage"].name == "s3"  # S3_BUCKET set: s3 by default
    images, conversation_id = round_trip(chat, upstream)
    assert sorted(s3.keys()) == sorted(f"chatapp/images/{image.filename}" for image in images)
    assert blob_count(chat.app) == 0 and not (tmp_path / "uploads").exists()
    delete_conversation(chat, conversation_id, images)
    assert s3.keys() == []


def test_images_stored_before_a_switch_are_still_served(make_app, upstream, tmp_path) -> None:  # noqa: ANN001
    chat = Chat(make_app())
    response = send_with_images(chat, "old", picture())
    chat.wait(answer_of(response))
    [image] = stored_images(chat)
    switched = same_browser(chat, make_app(IMAGE_STORAGE="database"))  # the upgraded app
    served = switched.client.get(f"/images/{image.id}")
    assert served.status_code == 200 and PILImage.open(io.BytesIO(served.data)).size == (40, 30)
    switched.post(f"/c/{conversation_of(response)}/delete")
    assert os.listdir(tmp_path / "uploads") == []


def test_a_lost_file_is_a_404_not_a_500(chat: Chat, tmp_path) -> None:
    chat.wait(answer_of(send_with_images(chat, "gone", picture())))
    [image] = stored_images(chat)
    os.remove(tmp_path / "uploads" / image.filename)  # a disk wiped by a deploy
    assert chat.client.get(f"/images/{image.id}").status_code == 404


def test_storage_settings_are_checked_at_start_up(make_app) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="IMAGE_STORAGE is 'disk'"):
        make_app(IMAGE_STORAGE="disk")
    with pytest.raises(ConfigError, match="S3_BUCKET is not set"):
        make_app(IMAGE_STORAGE="s3")


# The per-identity quota ---------------------------------------------------------------------------


def stored_size(chat: Chat) -> int:
    """What one picture() takes once stored (re-encoded), measured by storing one."""
    chat.wait(answer_of(send_with_images(chat, "measure", picture())))
    return stored_images(chat)[-1].size


def test_quota_on_the_page_at_the_limit_and_one_past(chat: Chat, upstream) -> None:  # noqa: ANN001
    size = stored_size(chat)
    assert size * 3 < 1000  # so the refusal counts in bytes, not kB
    chat.app.config["MAX_IMAGE_STORAGE_PER_USER"] = 3 * size
    conversation_id, answer_id = chat.start("text only")
    chat.wait(answer_id)
    chat.wait(answer_of(send_with_images(chat, "second", picture(), conversation_id=conversation_id)))
    chat.wait(answer_of(send_with_images(chat, "third: exactly at the limit", picture())))
    assert sum(image.size for image in stored_images(chat)) == 3 * size
    requests = len(upstream.requests)

    chat.app.config["MAX_IMAGE_STORAGE_PER_USER"] = 3 * size + 1  # one byte short for another
    for refused in (
        send_with_images(chat, "keep this text", picture()),  # a new conversation
        send_with_images(chat, "keep this text", picture(), conversation_id=conversation_id),
    ):
        assert refused.status_code == 413
        page = refused.get_data(as_text=True)
        assert "keep this text" in page  # nothing typed is lost
        assert f"your images already use {size * 3} bytes of your {size * 3 + 1} bytes" in page
        assert "Delete conversations with images" in page
    assert len(stored_images(chat)) == 3 and len(upstream.requests) == requests  # nothing saved or sent
    # Text alone is still fine, and deleting a conversation with images frees its space.
    chat.wait(chat.send(conversation_id, "no image"))
    chat.post(f"/c/{conversation_id}/delete")
    assert send_with_images(chat, "room again", picture()).status_code == 303


def test_quota_is_per_identity_and_applies_to_the_api(make_app) -> None:  # noqa: ANN001
    app = make_app()
    browser = Chat(app)
    size = stored_size(browser)
    app.config["MAX_IMAGE_STORAGE_PER_USER"] = size  # the browser's identity is full; others are not
    api = Api(app)
    conversation = api.call("POST", "/conversations", {}).get_json()

    def send() -> object:
        return api.client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            data={"content": "see", "images": [(io.BytesIO(picture()), "a.png")]},
            headers=api.headers,
            content_type="multipart/form-data",
        )

    accepted = send()  # exactly at the limit for this identity
    assert accepted.status_code == 202
    api.wait(accepted.get_json()["assistant_message"]["id"])
    refused = send()
    assert refused.status_code == 413
    error = refused.get_json()["error"]
    assert error["code"] == "image_storage_full"
    assert error["details"] == {"used": size, "limit": size, "needed": size}
    assert "Delete conversations with images" in error["message"]
    assert len(stored_images(browser)) == 2


def test_zero_turns_the_quota_off(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_IMAGE_STORAGE_PER_USER=0))
    for _ in range(2):
        assert send_with_images(chat, "free", picture()).status_code == 303
