"""Voice input: check a recording by its content and forward it to a Whisper-style endpoint."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

import openai
from flask import Request, current_app

from .errors import ChatError

# What each accepted format starts with (the name and the browser's claimed type are not trusted).
FORMATS = {
    "webm": "audio/webm",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
}


@dataclass(frozen=True)
class Transcriber:
    """Where recordings go: an OpenAI-compatible ``audio/transcriptions`` endpoint."""

    base_url: str | None
    api_key: str | None
    model: str
    timeout: float

    @classmethod
    def from_config(cls) -> Transcriber | None:
        """The configured transcriber, or None when voice input is not configured."""
        config = current_app.config
        base_url = config["TRANSCRIBE_BASE_URL"] or config["OPENAI_BASE_URL"]
        api_key = config["TRANSCRIBE_API_KEY"] or config["OPENAI_API_KEY"]
        if not (base_url or api_key):
            return None
        return cls(base_url, api_key, config["TRANSCRIBE_MODEL"], config["UPSTREAM_TIMEOUT"])

    def transcribe(self, data: bytes) -> str:
        """The text spoken in ``data``; ChatError with a readable reason when that fails."""
        kind = audio_format(data)
        client = openai.OpenAI(
            api_key=self.api_key or "not-needed", base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        try:
            with client:
                result = client.audio.transcriptions.create(
                    model=self.model, file=(f"recording.{kind}", data, FORMATS[kind])
                )
        except openai.APIStatusError as exc:
            if exc.status_code < 500 and exc.status_code not in (401, 403, 404, 429):
                raise ChatError(
                    f"The transcription service could not use this recording ({exc.status_code}).", 422
                ) from exc
            raise ChatError(f"The transcription service answered {exc.status_code}. Try again later.", 503) from exc
        except openai.OpenAIError as exc:
            raise ChatError(
                "The transcription service cannot be reached. Try again later, or type instead.", 503
            ) from exc
        return (result.text or "").strip()


class RecordingRequest(Request):
    """A request whose uploads to audio views (``@uploads("audio")``) are held in memory, never in a temporary file.

    Werkzeug spools an upload over 500 KB to an unnamed temporary file; a recording is not to touch the
    disk. The body limit such a view gets (``MAX_AUDIO_BYTES`` and the form around it, chatapp.limits)
    is checked before parsing starts, so it bounds this memory too.
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        view = current_app.view_functions.get(self.endpoint or "")
        if getattr(view, "uploads", None) == "audio":
            return io.BytesIO()
        return super()._get_file_stream(total_content_length, content_type, filename, content_length)


def audio_format(data: bytes) -> str:
    """The format of a recording, by its first bytes; ChatError if empty or not one we take."""
    if not data:
        raise ChatError("The recording is empty. Record again, a little longer.", 400)
    head = data[:12]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    raise ChatError("That file is not audio this app can read. Use webm, ogg, wav, mp3 or m4a.", 415)


def transcribe_upload(data: bytes) -> str:
    """Transcribe an uploaded recording with the configured service."""
    limit = current_app.config["MAX_AUDIO_BYTES"]
    if len(data) > limit:
        raise ChatError(f"The recording is {len(data):,} bytes; the limit is {limit:,}. Record a shorter one.", 413)
    transcriber = Transcriber.from_config()
    if transcriber is None:
        raise ChatError(
            "Voice input is not configured: set TRANSCRIBE_BASE_URL (and TRANSCRIBE_API_KEY) "
            "or OPENAI_BASE_URL / OPENAI_API_KEY.",
            503,
        )
    return transcriber.transcribe(data)
