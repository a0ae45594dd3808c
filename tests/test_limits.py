"""Body limits on every route and content type, WebSocket frames, and image pixel limits (at and past each)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image as PILImage
from simple_websocket import Client, ConnectionClosed
from werkzeug.serving import make_server

from chatapp.extensions import db
from chatapp.models import Conversation, Image, Message
from tests.conftest import Chat

ROOT = Path(__file__).resolve().parent.parent


def stored(app) -> tuple[int, int, int]:  # noqa: ANN001
    """(conversations, messages, images) in the database."""
    with app.app_context():
        return tuple(db.session.query(model).count() for model in (Conversation, Message, Image))


def form_body(token: str, size: int) -> bytes:
    """A urlencoded body of exactly ``size`` bytes: the token and a message padded to fit."""
    head = urlencode({"csrf_token": token, "content": ""}).encode()
    return head + b"a" * (size - len(head))


def api_token(app) -> dict:  # noqa: ANN001
    token = app.test_client().post("/api/v1/auth/guest").get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


# -- bodies -----------------------------------------------------------------------------------------------
def test_a_large_urlencoded_message_is_413_stores_nothing_and_is_not_echoed(chat: Chat) -> None:
    chat.get("/")
    body = form_body(chat.token, 2_500_000)  # over MAX_FORM_BYTES (1 MB), well under the image allowance
    for url in ("/conversations", "/c/1/messages"):
        response = chat.client.post(url, data=body, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 413, url
        page = response.get_data(as_text=True)
        assert "the limit is 1,000,000 bytes" in page
        assert len(page) < 20_000 and "aaaaaaaaaa" not in page  # the error does not carry the body back
    assert stored(chat.app) == (0, 0, 0)


def test_form_limit_at_the_limit_and_one_past_it(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_FORM_BYTES=20_000))
    chat.get("/")
    for size, status in ((20_000, 303), (20_001, 413)):
        body = form_body(chat.token, size)
        response = chat.client.post("/conversations", data=body, content_type="application/x-www-form-urlencoded")
        assert response.status_code == status, size
    assert stored(chat.app)[0] == 1


def test_a_large_json_message_is_413_on_the_api(make_app) -> None:  # noqa: ANN001
    app = make_app(MAX_FORM_BYTES=20_000)
    client, headers = app.test_client(), api_token(app)
    conversation = client.post("/api/v1/conversations", json={}, headers=headers).get_json()
    url = f"/api/v1/conversations/{conversation['id']}/messages"
    padding = len(json.dumps({"content": ""}))
    for size, status in ((20_000, 202), (20_001, 413)):
        body = json.dumps({"content": "a" * (size - padding)})
        assert len(body) == size
        response = client.post(url, data=body, content_type="application/json", headers=headers)
        assert response.status_code == status, size
    assert response.get_json()["error"]["code"] == "too_large"
    assert stored(app)[1] == 2  # the first message and its answer; nothing of the second


def test_multipart_keeps_the_image_allowance_but_bounds_each_text_field(make_app) -> None:  # noqa: ANN001
    chat = Chat(
        make_app(
            MAX_FORM_BYTES=150_000,
            MAX_MESSAGE_CHARS=200_000,
            MAX_USER_MESSAGE_TOKENS=100_000,
            MAX_HISTORY_TOKENS=100_000,
        )
    )
    chat.get("/")
    photo = picture((60, 40))
    big_photo = picture((300, 300), noise=True)  # over MAX_FORM_BYTES: the image allowance applies
    assert (
        len(big_photo) > 150_000
    )  # (and the whole body under 500 kB, which the test client spools to a file it leaks)
    at_limit = chat.post(
        "/conversations",
        {"content": "a" * 150_000, "images": [(io.BytesIO(big_photo), "a.png")]},
        content_type="multipart/form-data",
    )
    assert at_limit.status_code == 303
    past_it = chat.post(
        "/conversations",
        {"content": "a" * 150_001, "images": [(io.BytesIO(photo), "a.png")]},
        content_type="multipart/form-data",
    )
    assert past_it.status_code == 413 and "aaaaaaaaaa" not in past_it.get_data(as_text=True)
    # A multipart body to a route that takes no files gets the form limit as a whole.
    conversation_id = at_limit.headers["Location"].split("/c/")[1].split("#")[0]
    rename = chat.post(
        f"/c/{conversation_id}/rename",
        {"title": "x", "images": [(io.BytesIO(big_photo), "a.png")]},
        content_type="multipart/form-data",
    )
    assert rename.status_code == 413
    assert stored(chat.app) == (1, 2, 1)


def raw_request(base_url: str, head: str) -> bytes:
    """Send only a request's head (no body) and read the answer: it must come without the body."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_a_413_comes_before_the_body_is_sent(live_server, app) -> None:  # noqa: ANN001
    api = api_token(app)
    heads = [
        "POST /conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 20000000\r\n\r\n",
        "POST /c/1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 900000000\r\n\r\n",
        f"POST /api/v1/conversations/1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: {api['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n",
    ]
    for head in heads:
        answer = raw_request(live_server, head)
        assert answer.split(b"\r\n", 1)[0].split()[1] == b"413", answer[:200]


# -- WebSocket frames -------------------------------------------------------------------------------------
@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(app) -> str:  # noqa: ANN001
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def test_websocket_messages_are_bounded(make_app, serve) -> None:  # noqa: ANN001
    app = make_app(MAX_FORM_BYTES=20_000)
    address = serve(app)
    token = api_token(app)["Authorization"].split()[1]
    ws = Client.connect(f"ws://{address}/api/v1/ws?token={token}")
    try:
        assert json.loads(ws.receive(timeout=10))["type"] == "connection_established"
        padding = len(json.dumps({"type": "ping", "pad": ""}))
        ws.send(json.dumps({"type": "ping", "pad": "a" * (20_000 - padding)}))  # at the limit: answered
        assert json.loads(ws.receive(timeout=10))["type"] == "pong"
        ws.send(json.dumps({"type": "ping", "pad": "a" * (20_001 - padding)}))  # one past it: closed
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.receive(timeout=10)
        assert closed.value.reason == 1009  # "message too big"
    finally:
        with contextlib.suppress(ConnectionClosed):
            ws.close()


# -- images -----------------------------------------------------------------------------------------------
def picture(size: tuple[int, int], noise: bool = False) -> bytes:
    image = PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else None
    image = image or PILImage.new("RGB", size, (20, 120, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png(width: int, height: int, rows: bytes = b"") -> bytes:
    """A grayscale PNG by hand: its header says ``width``×``height``; ``rows`` is the raw image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel
    idat = zlib.compress(rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def send_images(chat: Chat, *images: bytes):  # noqa: ANN201
    files = [(io.BytesIO(data), f"p{i}.png") for i, data in enumerate(images)]
    return chat.post("/conversations", {"content": "look", "images": files}, content_type="multipart/form-data")


def test_decompression_bombs_are_refused_before_decoding(chat: Chat) -> None:
    side = 15_000  # 225 million pixels in a 28 kB file; decoded, 675 MB of RGB
    bomb = png(side, side, b"\0" * (1 + -(-side // 8)) * side)  # each row: filter byte + bits
    assert len(bomb) < 100_000
    claim = png(100_000, 100_000)  # a header claiming 10^10 pixels, and no data
    for data in (bomb, claim, png(10_000, 10_000)):  # 100 million: past Pillow's warning threshold too
        response = send_images(chat, data)
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        assert "50,000,000 pixels" in page and "look" in page  # the text comes back to send again
    assert stored(chat.app) == (0, 0, 0)


def test_image_pixels_at_the_limit_and_one_past_it(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_IMAGE_PIXELS=10_000))
    assert send_images(chat, picture((100, 100))).status_code == 303
    refused = send_images(chat, picture((101, 100)))
    assert refused.status_code == 422
    assert "Image 1 is 101×100 pixels; the limit is 10,000 pixels" in refused.get_data(as_text=True)
    assert stored(chat.app)[2] == 1


def test_message_pixels_at_the_limit_and_one_past_it(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_IMAGE_PIXELS=10_000, MAX_MESSAGE_IMAGE_PIXELS=20_000))
    square = picture((100, 100))
    assert send_images(chat, square, square).status_code == 303
    refused = send_images(chat, square, square, picture((1, 1)))
    assert refused.status_code == 422
    assert "20,001 pixels" in refused.get_data(as_text=True) and "the limit is 20,000" in refused.get_data(as_text=True)
    assert send_images(chat, square, square).status_code == 303  # the count is per message
    assert stored(chat.app)[2] == 4


def test_the_api_door_applies_the_same_pixel_limit(make_app) -> None:  # noqa: ANN001
    app = make_app(MAX_IMAGE_PIXELS=10_000)
    client, headers = app.test_client(), api_token(app)
    conversation = client.post("/api/v1/conversations", json={}, headers=headers).get_json()
    response = client.post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        data={"content": "look", "images": [(io.BytesIO(picture((101, 100))), "p.png")]},
        content_type="multipart/form-data",
        headers=headers,
    )
    assert response.status_code == 422 and "the limit is 10,000 pixels" in response.get_json()["error"]["message"]


GEVENT_SCRIPT = """
from gevent import monkey

monkey.patch_all()
import io, sys, time

import gevent
from flask import Flask
from PIL import Image

from chatapp.images import prepare

app = Flask("probe")
app.config.update(MAX_IMAGE_BYTES=10**9, MAX_IMAGE_PIXELS=10**8, MAX_MESSAGE_IMAGE_PIXELS=10**8)
out = io.BytesIO()
Image.new("RGB", (3000, 3000), (10, 200, 30)).save(out, format="PNG")
ticks = []

def tick():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.002)

gevent.spawn(tick)
gevent.sleep(0.01)
with app.app_context():
    before = len(ticks)
    prepared = prepare(out.getvalue())
    print(len(ticks) - before, prepared.width)
"""


def test_decoding_runs_off_the_event_loop_under_gevent() -> None:
    """Under gevent, other greenlets (other requests, open streams) keep running while an image is decoded."""
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    ticks, width = map(int, result.stdout.split())
    assert width == 2048  # decoded, scaled down and re-encoded
    assert ticks > 0  # the loop turned meanwhile; decoding on it would have frozen the ticker
