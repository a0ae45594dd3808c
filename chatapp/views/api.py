"""JSON API for programs, ``/api/v1``: bearer tokens, conversations, messages, streams as SSE or NDJSON.

Every route is declared with the pydantic schemas it validates and answers with; the OpenAPI
document at ``/api/v1/openapi.json`` is generated from those same declarations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context, url_for
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import HTTPException

from .. import accounts, conversations, export, importing, schemas
from ..errors import ChatError, api_error
from ..events import SSE_HEADERS, Delta, Done, follow, resume_offset, sse
from ..extensions import db
from ..generation import current_generator
from ..identity import require_bearer
from ..limits import uploads
from ..models import ERROR, Conversation, Message, Tree, User, user_stats
from ..voice import transcribe_upload
from .responses import export_download, image_response

bp = Blueprint("api", __name__, url_prefix="/api/v1")
Body = TypeVar("Body", bound=BaseModel)


@dataclass
class Route:
    """One documented route: what it takes and what it answers."""

    path: str
    method: str
    summary: str
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    streams: bool = False
    public: bool = False  # needs no bearer token
    files: tuple[str, ...] = ()  # media types of a file answer (an export)


ROUTES: list[Route] = []


def route(
    path: str,
    method: str,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    streams: bool = False,
    public: bool = False,
    files: tuple[str, ...] = (),
) -> Callable:
    """Register a view and its schemas (for validation and for the OpenAPI document)."""

    def register(view: Callable) -> Callable:
        summary = (view.__doc__ or "").strip()
        ROUTES.append(Route(path, method, summary, body, response, status, streams, public, files))
        view.public = public  # type: ignore[attr-defined]  # read by _authenticate
        bp.add_url_rule(path.replace("{", "<int:").replace("}", ">"), view_func=view, methods=[method])
        return view

    return register


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):  # noqa: ANN202
    message = "Not found, or not yours." if exc.code == 404 else (exc.description or exc.name)
    return api_error(exc.code or 500, message)


@bp.errorhandler(ChatError)
def _chat_error(exc: ChatError):  # noqa: ANN202
    return (*api_error(exc.status, exc.message, exc.code, exc.details), exc.headers)


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):  # noqa: ANN202
    fields = [{"field": ".".join(map(str, e["loc"])) or "(body)", "problem": e["msg"]} for e in exc.errors()]
    return api_error(
        422,
        "Some fields are invalid: " + "; ".join(f"{f['field']}: {f['problem']}" for f in fields),
        details={"fields": fields},
    )


@bp.before_request
def _authenticate():  # noqa: ANN202
    if getattr(current_app.view_functions.get(request.endpoint or ""), "public", False):
        return None
    refused = require_bearer()
    if refused is not None:
        return refused
    return None


def parse(schema: type[Body]) -> Body:
    """The JSON body, validated (400 if it is not JSON or nests too deeply, 422 if a field is wrong)."""
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw) if raw.strip() else {}
        json.dumps(data, ensure_ascii=False).encode()  # "\ud800" is valid JSON but no text: nothing could store it
    except RecursionError:
        raise ChatError("The JSON is nested too deeply.", 400, "malformed_json") from None
    except UnicodeEncodeError:
        problem = "a string holds a lone surrogate (\\ud800-\\udfff), which is not text"
        raise ChatError(
            f"Some fields are invalid: {problem}.", 422, details={"fields": [{"field": "(body)", "problem": problem}]}
        ) from None
    except ValueError:
        raise ChatError("The body is not valid JSON.", 400, "malformed_json") from None
    return schema.model_validate(data)


def own_conversation(conversation_id: int) -> Conversation:
    return conversations.owned_conversation(g.api_user_id, conversation_id)


def own_message(message_id: int) -> Message:
    return conversations.owned_message(g.api_user_id, message_id)


def limit_arg() -> int:
    value = request.args.get("limit", "20")
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or not 1 <= int(value) <= 100:
        raise ChatError("limit must be a whole number from 1 to 100.", 422, details={"fields": [{"field": "limit"}]})
    return int(value)


conversation_json = schemas.ConversationOut.from_conversation
message_json = schemas.MessageOut.from_message


# -- identity --------------------------------------------------------------------------------------------
@route("/auth/guest", "POST", response=schemas.GuestToken, status=201, public=True)
def guest():  # noqa: ANN201
    """Create a guest identity and a bearer token for it (the token is shown only here)."""
    user, token = accounts.create_api_guest(request.remote_addr)
    return jsonify(token=token, user_id=user.id), 201


# -- conversations ---------------------------------------------------------------------------------------
@route("/conversations", "GET", response=schemas.ConversationPage)
def list_conversations():  # noqa: ANN201
    """The identity's conversations, most recently active first (``?limit=&cursor=``)."""
    rows, next_cursor = conversations.list_conversations(g.api_user_id, limit_arg(), request.args.get("cursor"))
    return jsonify(items=[conversation_json(c) for c in rows], next_cursor=next_cursor)


@route("/conversations", "POST", body=schemas.ConversationCreate, response=schemas.ConversationOut, status=201)
def create_conversation():  # noqa: ANN201
    """Create an empty conversation."""
    fields = parse(schemas.ConversationCreate).model_dump(exclude_unset=True)
    conversation = conversations.create_conversation(db.session.get(User, g.api_user_id), fields)
    return jsonify(conversation_json(conversation)), 201


@route("/conversations/{conversation_id}", "GET", response=schemas.ConversationOut)
def get_conversation(conversation_id: int):  # noqa: ANN201
    """One conversation."""
    return jsonify(conversation_json(own_conversation(conversation_id)))


@route("/conversations/{conversation_id}", "PATCH", body=schemas.ConversationUpdate, response=schemas.ConversationOut)
def update_conversation(conversation_id: int):  # noqa: ANN201
    """Change a conversation's title, model, system prompt or settings."""
    conversation = own_conversation(conversation_id)
    fields = parse(schemas.ConversationUpdate).model_dump(exclude_unset=True)
    return jsonify(conversation_json(conversations.update_conversation(conversation, fields)))


@route("/conversations/{conversation_id}", "DELETE", status=204)
def delete_conversation(conversation_id: int):  # noqa: ANN201
    """Delete a conversation with every message and branch in it."""
    conversations.delete(own_conversation(conversation_id))
    return "", 204


# -- messages --------------------------------------------------------------------------------------------
@route("/conversations/{conversation_id}/messages", "GET", response=schemas.MessagePage)
def list_messages(conversation_id: int):  # noqa: ANN201
    """The visible path, oldest first, paged backwards with ``?before=<message id>``; ``?branches=all``."""
    conversation = own_conversation(conversation_id)
    limit = limit_arg()
    tree = Tree(conversation.id)
    if request.args.get("branches") == "all":
        messages = list(tree.by_id.values())
    else:
        messages = tree.path(conversation.active_leaf_id)
    before_arg = request.args.get("before", "")
    if before_arg and not (before_arg.isascii() and before_arg.isdigit() and len(before_arg) <= 19):
        raise ChatError("before must be a message id.", 422, details={"fields": [{"field": "before"}]})
    if before := int(before_arg or 0):
        messages = (
            [m for m in messages if m.id < before]
            if request.args.get("branches") == "all"
            else messages[: next((i for i, m in enumerate(messages) if m.id == before), len(messages))]
        )
    page = messages[-limit:]
    next_cursor = str(page[0].id) if len(messages) > limit else None
    return jsonify(items=[message_json(m, tree) for m in page], next_cursor=next_cursor)


@route(
    "/conversations/{conversation_id}/messages",
    "POST",
    body=schemas.MessageCreate,
    response=schemas.Sent,
    status=202,
    streams=True,
)
@uploads("images")
def send_message(conversation_id: int):  # noqa: ANN201
    """Send a message; the answer is written in the background (or streamed here with Accept: SSE/NDJSON)."""
    images: list[bytes] = []
    if request.mimetype == "multipart/form-data":  # fields content and parent_id, files images
        data = schemas.MessageCreate.model_validate({"content": "", **request.form.to_dict()})
        for upload in request.files.getlist("images"):
            with upload.stream:
                images.append(upload.read())
    else:
        data = parse(schemas.MessageCreate)
    sent = conversations.send(own_conversation(conversation_id), data.content, images, parent_id=data.parent_id)
    if sent.answer is None:
        tokens, limit = sent.user_message.token_count, current_app.config["MAX_USER_MESSAGE_TOKENS"]
        details = {"tokens": tokens, "limit": limit, "message": message_json(sent.user_message)}
        return api_error(422, sent.user_message.error or "", "message_too_long", details)
    return started(sent.answer, sent.user_message)


@route("/messages/{message_id}", "GET", response=schemas.MessageOut)
def get_message(message_id: int):  # noqa: ANN201
    """One message."""
    return jsonify(message_json(own_message(message_id)))


@route("/messages/{message_id}/stream", "GET", streams=True)
def stream_message(message_id: int):  # noqa: ANN201
    """The answer as SSE (default) or NDJSON (Accept: application/x-ndjson); Last-Event-ID resumes."""
    return stream(own_message(message_id).id)


@route("/messages/{message_id}/edit", "POST", body=schemas.MessageEdit, response=schemas.Sent, status=202, streams=True)
def edit_message(message_id: int):  # noqa: ANN201
    """A new version of a user message beside the original, and a new answer to it."""
    answer = conversations.edit(own_message(message_id), parse(schemas.MessageEdit).content)
    return started(answer)


@route("/messages/{message_id}/retry", "POST", response=schemas.Sent, status=202, streams=True)
def retry_message(message_id: int):  # noqa: ANN201
    """A new answer beside this one, from the same history."""
    return started(conversations.retry(own_message(message_id)))


@route("/images/{image_id}", "GET")
def get_image(image_id: int):  # noqa: ANN201
    """An image attached to one of the identity's messages (its bytes; ``url`` in a message's ``images``)."""
    return image_response(conversations.owned_image(g.api_user_id, image_id))


@route("/messages/{message_id}/stop", "POST", response=schemas.MessageOut)
def stop_message(message_id: int):  # noqa: ANN201
    """Stop an answer; it keeps exactly the text streamed so far."""
    return jsonify(message_json(conversations.stop(own_message(message_id))))


@route("/messages/{message_id}/feedback", "POST", body=schemas.Feedback, response=schemas.MessageOut)
def feedback(message_id: int):  # noqa: ANN201
    """Rate an answer up or down (null clears), with an optional comment."""
    message = own_message(message_id)
    data = parse(schemas.Feedback)
    conversations.give_feedback(message, data.rating, data.comment)
    return jsonify(message_json(message))


@route("/transcriptions", "POST", response=schemas.Transcription)
@uploads("audio")
def transcriptions():  # noqa: ANN201
    """Speech to text: multipart ``file`` (webm, ogg, wav, mp3, m4a) → ``{"text"}``."""
    upload = request.files.get("file")
    if upload is None:
        raise ChatError(
            "Send the recording as a multipart field named 'file'.", 422, details={"fields": [{"field": "file"}]}
        )
    with upload.stream:
        data = upload.read()
    return jsonify(text=transcribe_upload(data))


@route("/models", "GET", response=schemas.ModelList)
def models():  # noqa: ANN201
    """The models the upstream offers (or the configured one, if it cannot list them)."""
    provider = current_generator().provider
    return jsonify(items=[{"id": name, "provider": provider.name} for name in provider.models()])


@route("/stats", "GET", response=schemas.Stats)
def stats():  # noqa: ANN201
    """The identity's totals."""
    return jsonify(user_stats(g.api_user_id))


# -- export and import -----------------------------------------------------------------------------------
EXPORT_TYPES = tuple(dict.fromkeys(t.split(";")[0] for t in export.MIMETYPES.values()))


@route("/conversations/{conversation_id}/export", "GET", files=EXPORT_TYPES)
def export_conversation(conversation_id: int):  # noqa: ANN201
    """One conversation as a file: ``?format=json`` (default, lossless), ``markdown``, ``html`` or ``zip``."""
    return export_download(g.api_user_id, conversation_id, request.args.get("format", "json"))


@route("/export", "GET", files=("application/json", "application/zip"))
def export_all():  # noqa: ANN201
    """Every conversation: ``?format=json`` (default) or ``zip`` (with Markdown, HTML and the images)."""
    return export_download(g.api_user_id, None, request.args.get("format", "json"))


@route("/imports", "POST", response=schemas.ImportJobOut, status=202)
@uploads("import")
def create_import():  # noqa: ANN201
    """Import a file (multipart ``file``): chatapp's export (.json/.zip) or ChatGPT's (conversations.json/.zip)."""
    upload = request.files.get("file")
    if upload is None:
        raise ChatError(
            "Send the export as a multipart field named 'file'.", 422, details={"fields": [{"field": "file"}]}
        )
    with upload.stream:
        job = importing.receive(db.session.get(User, g.api_user_id), upload.stream, upload.filename or "upload")
    location = url_for(".get_import", import_id=job.id)
    return jsonify(schemas.ImportJobOut.from_job(job)), 202, {"Location": location}


@route("/imports/{import_id}", "GET", response=schemas.ImportJobOut)
def get_import(import_id: int):  # noqa: ANN201
    """An import's progress and report (poll until ``status`` is ``done`` or ``failed``)."""
    return jsonify(schemas.ImportJobOut.from_job(importing.owned_job(g.api_user_id, import_id)))


@route("/openapi.json", "GET", public=True)
def openapi():  # noqa: ANN201
    """This API's OpenAPI 3.1 document."""
    return jsonify(openapi_document())


# -- streaming -------------------------------------------------------------------------------------------
def started(answer: Message, question: Message | None = None):  # noqa: ANN201
    """202 with both messages and the stream URL, or the stream itself if the client asked for one."""
    if request.accept_mimetypes.best in ("text/event-stream", "application/x-ndjson"):
        return stream(answer.id)
    stream_url = url_for(".stream_message", message_id=answer.id)
    question = question or db.session.get(Message, answer.parent_id)
    assert question is not None  # an answer always answers a stored question
    body = {"user_message": message_json(question), "assistant_message": message_json(answer), "stream_url": stream_url}
    return jsonify(body), 202


def stream(message_id: int) -> Response:
    """Deltas then the final message, as SSE events or NDJSON lines; each carries its offset."""
    ndjson = request.accept_mimetypes.best == "application/x-ndjson"
    after = resume_offset(request.headers.get("Last-Event-ID"), request.args.get("after"))
    db.session.close()

    def events() -> Iterator[str]:
        for update in follow(message_id, after):
            if isinstance(update, Delta):
                data = {"message_id": message_id, "seq": update.end, "content": update.text}
                yield _line("delta", data) if ndjson else sse(json.dumps(data), "delta", update.end)
            elif isinstance(update, Done) and update.message is None:  # deleted while it was being written
                gone = {"code": "not_found", "message": conversations.NOT_FOUND}
                yield _line("error", gone) if ndjson else sse(json.dumps(gone), "error")
            elif isinstance(update, Done) and update.message is not None:
                message = message_json(update.message)
                kind = "error" if message["status"] == ERROR else "done"
                data = (
                    {"message": message}
                    if kind == "done"
                    else {"code": "generation_failed", "message": message["error"], "detail": message}
                )
                end = len(message["content"])  # the final offset: resuming from it just ends the stream
                yield _line(kind, data) if ndjson else sse(json.dumps(message if kind == "done" else data), kind, end)
            elif not ndjson:
                yield ": ping\n\n"

    headers = {**SSE_HEADERS, "Content-Type": "application/x-ndjson"} if ndjson else SSE_HEADERS
    return Response(stream_with_context(events()), headers=headers)


def _line(kind: str, data: dict) -> str:
    return json.dumps({"type": kind, **data}) + "\n"


# -- OpenAPI ---------------------------------------------------------------------------------------------
SSE_EVENT = {  # one event of a text/event-stream answer; ``data`` is JSON text
    "type": "object",
    "properties": {
        "event": {"enum": ["delta", "done", "error"]},
        "data": {"type": "string"},
        "id": {"type": "string"},
    },
    "required": ["event", "data"],
}


def openapi_document() -> dict:
    """OpenAPI 3.1, from the routes' own schemas."""
    models: set[type[BaseModel]] = {schemas.Error, export.ExportDocument}
    models |= {s for r in ROUTES for s in (r.body, r.response) if s}
    _, definitions = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    paths: dict = {}
    for r in ROUTES:
        operation: dict = {"summary": r.summary, "responses": {}}
        parameters = [p.strip("{}") for p in r.path.split("/") if p.startswith("{")]
        if parameters:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "integer"}} for p in parameters
            ]
        if r.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(r.body)}}}
        success: dict = {"description": "Success"}
        if r.response:
            success["content"] = {"application/json": {"schema": _ref(r.response)}}
        for media_type in r.files:  # an export: the JSON document, or the bytes of a file
            binary = {"type": "string", "format": "binary"}
            schema = _ref(export.ExportDocument) if media_type == "application/json" else binary
            success.setdefault("content", {})[media_type] = {"schema": schema}
        if r.streams:
            success.setdefault("content", {})
            success["content"]["text/event-stream"] = {"schema": SSE_EVENT}
            success["content"]["application/x-ndjson"] = {"schema": {"type": "string"}}
        operation["responses"][str(r.status)] = success
        operation["responses"]["default"] = {
            "description": "Error",
            "content": {"application/json": {"schema": _ref(schemas.Error)}},
        }
        if not r.public:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(f"/api/v1{r.path}", {})[r.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "chatapp API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}
