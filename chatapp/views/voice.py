"""``/transcribe``: a recording in, its text into the composer (never sent by itself)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import conversations
from ..conversations import ChatError
from ..identity import current_user
from ..limits import uploads
from ..voice import RecordingRequest, transcribe_upload
from .responses import render_chat

bp = Blueprint("voice", __name__)
# Recordings are held in memory, never written to disk (this request class serves the API's upload too).
bp.record_once(lambda state: setattr(state.app, "request_class", RecordingRequest))


@bp.post("/transcribe")
@uploads("audio")
def transcribe():  # noqa: ANN201
    """JSON ``{"text"}`` for the mic button; without JS, the page again with the text in the composer."""
    wants_json = request.accept_mimetypes.best == "application/json"
    conversation_id = request.args.get("conversation_id", type=int)
    conversation = conversations.owned_conversation(current_user().id, conversation_id) if conversation_id else None
    typed = request.form.get("content", "")
    data = b""
    if upload := request.files.get("audio"):
        with upload.stream:
            data = upload.read()
    try:
        text = transcribe_upload(data)
    except ChatError as exc:
        if wants_json:
            raise
        return render_chat(conversation, exc.status, draft=typed, composer_error=exc.message)
    if wants_json:
        return jsonify(text=text)
    return render_chat(conversation, draft=f"{typed.rstrip()} {text}".strip())
