"""Voice input: recordings are checked by content, forwarded for transcription, and land in the composer."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile

import httpx
from flask import request
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.conftest import Chat
from tests.fake_upstream import Reply

WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 400  # starts like a WebM (Matroska) file
SAMPLES = {
    "webm": WEBM,
    "ogg": b"OggS" + b"\x00" * 100,
    "wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 100,
    "mp3": b"ID3\x04\x00" + b"\x00" * 100,
    "m4a": b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 100,
}


def upload(chat: Chat, data: bytes, name: str = "clip.webm", json: bool = True, content: str = "", query: str = ""):  # noqa: ANN201
    headers = {"Accept": "application/json"} if json else {}
    form = {"audio": (io.BytesIO(data), name), "content": content}
    return chat.post(f"/transcribe{query}", form, headers=headers, content_type="multipart/form-data")


def test_recording_is_transcribed_into_json(chat: Chat, upstream) -> None:  # noqa: ANN001
    response = upload(chat, WEBM)
    assert response.status_code == 200
    assert response.get_json() == {"text": "hello from the fake transcriber"}
    received = upstream.transcriptions[0]
    assert received["fields"]["model"] == "whisper-1"
    assert received["file_bytes"] == WEBM
    assert received["file_name"] == "recording.webm" and received["content_type"] == "audio/webm"
    assert upstream.requests == []  # nothing was sent to the chat model


def test_every_accepted_format_is_recognised_by_content(chat: Chat, upstream) -> None:  # noqa: ANN001
    for kind, data in SAMPLES.items():
        assert upload(chat, data, name="no-extension").status_code == 200, kind
    assert [t["file_name"] for t in upstream.transcriptions] == [f"recording.{k}" for k in SAMPLES]


def test_javascript_off_puts_the_text_in_the_composer_after_what_was_typed(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("first")
    chat.wait(answer_id)
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert (
        'enctype="multipart/form-data"' in page
        and f'formaction="/transcribe?conversation_id={conversation_id}"' in page
    )
    response = upload(chat, WEBM, json=False, content="I said:", query=f"?conversation_id={conversation_id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert ">I said: hello from the fake transcriber</textarea>" in page
    assert "Echo: first" in page  # the same conversation, ready to send


def test_bad_recordings_get_clear_errors_and_keep_the_typed_text(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_AUDIO_BYTES=1000))
    cases = [
        (b"", 400, "The recording is empty"),
        (b"<html>not audio</html>", 415, "not audio this app can read"),
        (WEBM + b"\x00" * 2000, 413, "the limit is 1,000"),
    ]
    for data, status, message in cases:
        response = upload(chat, data)
        assert response.status_code == status
        assert message in response.get_json()["error"]["message"]
        page = upload(chat, data, json=False, content="keep me").get_data(as_text=True)
        assert message in page and ">keep me</textarea>" in page
    assert upstream.transcriptions == []


def test_transcription_service_failures(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.transcription_reply = Reply(status=400, error_message="bad audio")
    response = upload(chat, WEBM)
    assert response.status_code == 422 and "could not use this recording" in response.get_json()["error"]["message"]
    upstream.transcription_reply = Reply(status=500)
    response = upload(chat, WEBM)
    assert response.status_code == 503 and "answered 500" in response.get_json()["error"]["message"]


def test_unreachable_service_is_503(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(TRANSCRIBE_BASE_URL="http://127.0.0.1:9/v1"))
    response = upload(chat, WEBM)
    assert response.status_code == 503
    assert "cannot be reached" in response.get_json()["error"]["message"]


def test_not_configured_hides_the_mic_and_says_so(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(OPENAI_BASE_URL=None, OPENAI_API_KEY=None))
    page = chat.get("/").get_data(as_text=True)
    assert 'id="mic"' not in page and "/transcribe" not in page
    response = upload(chat, WEBM)
    assert response.status_code == 503
    assert "Voice input is not configured" in response.get_json()["error"]["message"]


def test_transcription_settings_default_to_the_chat_ones_and_can_differ(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(TRANSCRIBE_MODEL="whisper-large-v3", TRANSCRIBE_BASE_URL=upstream.base_url))
    assert upload(chat, WEBM).status_code == 200
    assert upstream.transcriptions[0]["fields"]["model"] == "whisper-large-v3"


def temporary_files() -> set[tuple[str, str]]:
    """This process's open files in the temporary directory (an unnamed one shows as '/tmp/#123 (deleted)')."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(tempfile.gettempdir()):
                found.add((fd, target))
    return found


def test_recordings_are_kept_in_memory_not_on_disk(app, live_server: str, upstream) -> None:  # noqa: ANN001
    """A recording big enough for Werkzeug to spool to a temporary file is held in memory, on both doors."""
    big = WEBM + b"\x00" * 2_000_000
    for url, field in [("/transcribe", "audio"), ("/api/v1/transcriptions", "file")]:
        boundary, body = encode_multipart({field: FileStorage(io.BytesIO(big), "a.webm")})  # in memory, as sent
        before = temporary_files()
        content_type = f"multipart/form-data; boundary={boundary}"
        with app.test_request_context(url, method="POST", data=body, content_type=content_type):
            upload = request.files[field]  # parsed here, as the view (or the CSRF check) would
            assert temporary_files() - before == set(), url  # no file was opened for it
            assert isinstance(upload.stream, io.BytesIO) and upload.read() == big, url

    # Over real HTTP the recording is forwarded intact, whether the service answers or fails.
    with httpx.Client(base_url=live_server) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
        headers = {"Accept": "application/json", "X-CSRF-Token": token}
        response = client.post("/transcribe", files={"audio": ("a.webm", big)}, headers=headers)
        assert response.status_code == 200
        upstream.transcription_reply = Reply(status=500)
        assert client.post("/transcribe", files={"audio": ("a.webm", big)}, headers=headers).status_code == 503
    assert upstream.transcriptions[0]["file_bytes"] == big


def test_upload_needs_the_csrf_token(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.get("/")
    response = chat.client.post(
        "/transcribe", data={"audio": (io.BytesIO(WEBM), "a.webm")}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert upstream.transcriptions == []
