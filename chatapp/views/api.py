"""JSON API for programs, ``/api/v1``: bearer tokens, conversations, messages, streams as SSE or NDJSON.

Every route is declared with the pydantic schemas it validates and answers with; the OpenAPI
document at ``/api/v1/openapi.json`` is generated from those same declarations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context, url_for
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import HTTPException

from .. import (
    accounts,
    conversations,
    export,
    folders,
    importing,
    insight,
    notes,
    presets,
    rooms,
    schemas,
    search,
    sharing,
)
from ..errors import ChatError, api_error
from ..events import SSE_HEADERS, Delta, Done, NoteSaved, Status, follow, resume_offset, sse
from ..extensions import db
from ..generation import current_generator
from ..identity import bearer_token, require_bearer
from ..limits import uploads
from ..models import (
    DELETED_USER,
    ERROR,
    MEMBER,
    OWNER,
    VIEWER,
    ApiToken,
    Conversation,
    Folder,
    Message,
    Tree,
    User,
    siblings_of,
    siblings_of_each,
    user_stats,
)
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
    body_required: bool = True
    query: tuple[tuple[str, bool, str], ...] = ()  # documented query parameters: (name, required, description)
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
    body_required: bool = True,
    query: tuple[tuple[str, bool, str], ...] = (),
    files: tuple[str, ...] = (),
) -> Callable:
    """Register a view and its schemas (for validation and for the OpenAPI document)."""

    def register(view: Callable) -> Callable:
        summary = (view.__doc__ or "").strip()
        ROUTES.append(
            Route(path, method, summary, body, response, status, streams, public, body_required, query, files)
        )
        view.public = public  # type: ignore[attr-defined]  # read by _authenticate
        bp.add_url_rule(_rule(path), view_func=view, methods=[method])
        return view

    return register


STRING_PARAMETERS = {"token"}  # path parameters that are text (share link tokens); the others are ids


def _rule(path: str) -> str:
    """The URL rule for a documented path: ``{token}`` is text, every other ``{name}`` an id."""
    return re.sub(r"\{(\w+)\}", lambda m: f"<{m[1]}>" if m[1] in STRING_PARAMETERS else f"<int:{m[1]}>", path)


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


def own_conversation(conversation_id: int, need: str = VIEWER) -> Conversation:
    return conversations.conversation_access(g.api_user_id, conversation_id, need)


def own_message(message_id: int, need: str = VIEWER) -> Message:
    return conversations.message_access(g.api_user_id, message_id, need)


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


@route("/conversations", "POST", body=schemas.ConversationStart, response=schemas.ConversationOut, status=201)
def create_conversation():  # noqa: ANN201
    """Create an empty conversation, with a preset's settings (``preset_id``) or the defaults."""
    fields = parse(schemas.ConversationStart).model_dump(exclude_unset=True)
    user = db.session.get(User, g.api_user_id)
    preset_id = fields.pop("preset_id", None)
    preset = presets.owned_preset(g.api_user_id, preset_id) if preset_id else None
    folder = conversations.owned_folder(user.id, fields["folder_id"]) if fields.get("folder_id") else None
    start = conversations.starting_settings(user, preset, folder)  # the preset's, else the folder's, else none
    settings = {**start.pop("settings"), **(fields.pop("settings", None) or {})}
    conversation = conversations.create_conversation(user, {**start, **fields, "settings": settings})
    return jsonify(conversation_json(conversation)), 201


@route("/conversations/{conversation_id}", "GET", response=schemas.ConversationOut)
def get_conversation(conversation_id: int):  # noqa: ANN201
    """One conversation (opening another chat ends a temporary one)."""
    conversation = own_conversation(conversation_id)
    conversations.discard_temporary(db.session.get_one(User, g.api_user_id), keep=conversation.id)
    return jsonify(conversation_json(conversation))


@route("/conversations/{conversation_id}", "PATCH", body=schemas.ConversationUpdate, response=schemas.ConversationOut)
def update_conversation(conversation_id: int):  # noqa: ANN201
    """Change a conversation's title, model, system prompt or settings."""
    conversation = own_conversation(conversation_id, OWNER)
    fields = parse(schemas.ConversationUpdate).model_dump(exclude_unset=True)
    return jsonify(conversation_json(conversations.update_conversation(conversation, fields)))


@route("/conversations/{conversation_id}", "DELETE", status=204)
def delete_conversation(conversation_id: int):  # noqa: ANN201
    """Delete a conversation with every message and branch in it."""
    conversations.delete(own_conversation(conversation_id, OWNER))
    return "", 204


# -- folders ---------------------------------------------------------------------------------------------
def own_folder(folder_id: int):  # noqa: ANN201
    return conversations.owned_folder(g.api_user_id, folder_id)


@route("/folders", "GET", response=schemas.FolderList)
def list_folders():  # noqa: ANN201
    """The identity's folders, by name."""
    return jsonify(items=[schemas.FolderOut.from_folder(f) for f in Folder.for_user(g.api_user_id)])


@route("/folders", "POST", body=schemas.FolderCreate, response=schemas.FolderOut, status=201)
def create_folder():  # noqa: ANN201
    """Make a folder; new chats in it start with its system prompt and model."""
    fields = parse(schemas.FolderCreate).model_dump(exclude_unset=True)
    folder = folders.create_folder(db.session.get_one(User, g.api_user_id), fields)
    return jsonify(schemas.FolderOut.from_folder(folder)), 201


@route("/folders/{folder_id}", "GET", response=schemas.FolderOut)
def get_folder(folder_id: int):  # noqa: ANN201
    """One folder."""
    return jsonify(schemas.FolderOut.from_folder(own_folder(folder_id)))


@route("/folders/{folder_id}", "PATCH", body=schemas.FolderUpdate, response=schemas.FolderOut)
def update_folder(folder_id: int):  # noqa: ANN201
    """Rename a folder or change its system prompt and model."""
    folder = own_folder(folder_id)
    fields = parse(schemas.FolderUpdate).model_dump(exclude_unset=True)
    return jsonify(schemas.FolderOut.from_folder(folders.update_folder(folder, fields)))


@route(
    "/folders/{folder_id}",
    "DELETE",
    status=204,
    query=(("chats", False, "keep (default): its chats move out of it; delete: they are deleted with it"),),
)
def delete_folder(folder_id: int):  # noqa: ANN201
    """Delete a folder; ``?chats=delete`` deletes its chats too, else they move out of it."""
    choice = request.args.get("chats", "keep")
    if choice not in ("keep", "delete"):
        raise ChatError("chats must be keep or delete.", 422, details={"fields": [{"field": "chats"}]})
    folders.delete_folder(own_folder(folder_id), with_chats=choice == "delete")
    return "", 204


# -- search ----------------------------------------------------------------------------------------------
@route(
    "/search",
    "GET",
    response=schemas.SearchPage,
    query=(
        ("q", True, 'words (each matches as a prefix) and "quoted phrases"; all must match'),
        ("limit", False, "results per page, 1 to 100 (default 20)"),
        ("cursor", False, "next_cursor of the previous page"),
        ("conversation", False, "only this conversation's messages"),
        ("role", False, "user, assistant or note"),
        ("from", False, "first day, YYYY-MM-DD, in the identity's time zone"),
        ("to", False, "last day, YYYY-MM-DD"),
        ("order", False, "newest (default) or relevance"),
    ),
)
def search_messages():  # noqa: ANN201
    """Search every message (all branches), note and title; archived chats included, temporary ones never."""
    if "q" not in request.args:
        raise ChatError("q is required: the words to search for.", 422, details={"fields": [{"field": "q"}]})
    filters = search.parse_filters(request.args)
    user = db.session.get_one(User, g.api_user_id)
    page = search.search(user, request.args.get("q", ""), filters, limit_arg(), request.args.get("cursor") or None)
    items = [
        {
            "conversation_id": r.conversation_id,
            "conversation_title": r.title,
            "message_id": r.message_id,
            "note_id": r.note_id,
            "role": r.role,
            "created_at": r.created_at,
            "snippet_html": str(r.snippet),
            "archived": r.archived,
        }
        for r in page.results
    ]
    out = schemas.SearchPage(items=items, next_cursor=page.next_cursor)
    return jsonify(out.model_dump(mode="json"))


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
    conversation = own_conversation(conversation_id, MEMBER)
    sent = conversations.send(conversation, data.content, images, parent_id=data.parent_id, by=g.api_user_id)
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
    message = own_message(message_id)
    return stream(message.id, message.conversation_id)


@route("/messages/{message_id}/edit", "POST", body=schemas.MessageEdit, response=schemas.Sent, status=202, streams=True)
def edit_message(message_id: int):  # noqa: ANN201
    """A new version of a user message beside the original, and a new answer to it."""
    answer = conversations.edit(own_message(message_id, MEMBER), parse(schemas.MessageEdit).content, by=g.api_user_id)
    return started(answer)


@route(
    "/messages/{message_id}/retry",
    "POST",
    body=schemas.RetryOptions,
    response=schemas.Sent,
    status=202,
    streams=True,
    body_required=False,
)
def retry_message(message_id: int):  # noqa: ANN201
    """A new answer beside this one, from the same history; ``{"model": …}`` has another model write it."""
    options = parse(schemas.RetryOptions)
    return started(conversations.retry(own_message(message_id, MEMBER), options.model, by=g.api_user_id))


@route("/images/{image_id}", "GET")
def get_image(image_id: int):  # noqa: ANN201
    """An image attached to one of the identity's messages (its bytes; ``url`` in a message's ``images``)."""
    return image_response(conversations.owned_image(g.api_user_id, image_id))


@route("/messages/{message_id}/stop", "POST", response=schemas.MessageOut)
def stop_message(message_id: int):  # noqa: ANN201
    """Stop an answer; it keeps exactly the text streamed so far."""
    return jsonify(message_json(conversations.stop(own_message(message_id, MEMBER))))


@route("/messages/{message_id}/feedback", "POST", body=schemas.Feedback, response=schemas.MessageOut)
def feedback(message_id: int):  # noqa: ANN201
    """Rate an answer up or down (null clears), with an optional comment."""
    message = own_message(message_id, MEMBER)
    data = parse(schemas.Feedback)
    conversations.give_feedback(message, data.rating, data.comment)
    return jsonify(message_json(message))


@route("/conversations/{conversation_id}/meter", "POST", body=schemas.Draft, response=schemas.Meter)
def meter(conversation_id: int):  # noqa: ANN201
    """Tokens of a draft and how full the next request's context would be (what the page's meter shows)."""
    conversation = own_conversation(conversation_id)
    return jsonify(conversations.meter(conversation, parse(schemas.Draft).content).as_dict())


@route("/meter", "POST", body=schemas.NewChatDraft, response=schemas.Meter)
def new_chat_meter():  # noqa: ANN201
    """The meter for the first message of a new conversation (with ``preset_id``: started with that preset)."""
    data = parse(schemas.NewChatDraft)
    preset = presets.owned_preset(g.api_user_id, data.preset_id) if data.preset_id else None
    starting = conversations.starting_settings(db.session.get(User, g.api_user_id), preset) if preset else None
    return jsonify(conversations.meter(None, data.content, starting).as_dict())


# -- presets ---------------------------------------------------------------------------------------------
@route("/presets", "GET", response=schemas.PresetList)
def list_presets():  # noqa: ANN201
    """The identity's presets, by name."""
    return jsonify(items=[schemas.PresetOut.from_preset(p) for p in presets.list_presets(g.api_user_id)])


@route("/presets", "POST", body=schemas.PresetFields, response=schemas.PresetOut, status=201)
def create_preset():  # noqa: ANN201
    """Save named settings (and an opening prompt) to start conversations with."""
    preset = presets.create_preset(g.api_user_id, parse(schemas.PresetFields).model_dump(exclude_unset=True))
    return jsonify(schemas.PresetOut.from_preset(preset)), 201


@route("/presets/{preset_id}", "GET", response=schemas.PresetOut)
def get_preset(preset_id: int):  # noqa: ANN201
    """One preset."""
    return jsonify(schemas.PresetOut.from_preset(presets.owned_preset(g.api_user_id, preset_id)))


@route("/presets/{preset_id}", "PATCH", body=schemas.PresetUpdate, response=schemas.PresetOut)
def update_preset(preset_id: int):  # noqa: ANN201
    """Change a preset's fields; those left out stay."""
    preset = presets.owned_preset(g.api_user_id, preset_id)
    fields = parse(schemas.PresetUpdate).model_dump(exclude_unset=True)
    return jsonify(schemas.PresetOut.from_preset(presets.update_preset(preset, fields)))


@route("/presets/{preset_id}", "DELETE", status=204)
def delete_preset(preset_id: int):  # noqa: ANN201
    """Delete a preset."""
    presets.delete_preset(presets.owned_preset(g.api_user_id, preset_id))
    return "", 204


# -- rooms -----------------------------------------------------------------------------------------------
def _members_json(conversation: Conversation) -> dict:
    items = [schemas.MemberOut.from_member(m) for m in rooms.members(conversation)]
    present = rooms.here(conversation.id)
    for item in items:
        item["present"] = item["user_id"] in present
    return {"items": items, "invite": _invite_json(conversation)}


def _invite_json(conversation: Conversation) -> dict | None:
    if not conversation.invite_token or conversation.user_id != g.api_user_id:
        return None
    url = url_for("rooms.join", token=conversation.invite_token, _external=True)
    return {"token": conversation.invite_token, "url": url, "role": conversation.invite_role}


@route("/conversations/{conversation_id}/members", "GET", response=schemas.MemberList)
def list_members(conversation_id: int):  # noqa: ANN201
    """Who is in the room: the owner and members, with role, last seen and whether they are here now."""
    return jsonify(_members_json(own_conversation(conversation_id)))


@route(
    "/conversations/{conversation_id}/invite", "POST", body=schemas.InviteCreate, response=schemas.Invite, status=201
)
def create_invite(conversation_id: int):  # noqa: ANN201
    """A new invite link (the owner only; an earlier link stops working): whoever opens it joins with ``role``."""
    conversation = own_conversation(conversation_id, OWNER)
    rooms.create_invite(conversation, parse(schemas.InviteCreate).role)
    return jsonify(_invite_json(conversation)), 201


@route("/conversations/{conversation_id}/invite", "DELETE", status=204)
def end_invite(conversation_id: int):  # noqa: ANN201
    """End the invite link (the owner only); members stay."""
    rooms.end_invite(own_conversation(conversation_id, OWNER))
    return "", 204


@route("/conversations/{conversation_id}/members/{member_id}", "DELETE", status=204)
def remove_member(conversation_id: int, member_id: int):  # noqa: ANN201
    """Remove a member (the owner; or members themselves, to leave): their streams and sockets close."""
    conversation = own_conversation(conversation_id)
    member = rooms.member_row(conversation, member_id)
    if member.user_id != g.api_user_id:
        own_conversation(conversation_id, OWNER)
    rooms.remove(conversation, member)
    return "", 204


@route("/join", "POST", body=schemas.Join, response=schemas.ConversationOut)
def join_room():  # noqa: ANN201
    """Join a room with an invite token; the conversation is then readable (and writable for members)."""
    user = db.session.get(User, g.api_user_id)
    conversation = rooms.join(parse(schemas.Join).token, user)
    return jsonify(conversation_json(conversation))


# -- notes -----------------------------------------------------------------------------------------------
@route("/conversations/{conversation_id}/notes", "GET", response=schemas.NoteList)
def list_notes(conversation_id: int):  # noqa: ANN201
    """The conversation's notes, oldest first: the assistant's (``save_note`` tool) and the user's."""
    return jsonify(items=[notes.note_json(n) for n in notes.list_notes(own_conversation(conversation_id))])


@route("/conversations/{conversation_id}/notes", "POST", body=schemas.NoteCreate, response=schemas.NoteOut, status=201)
def add_note(conversation_id: int):  # noqa: ANN201
    """Add a note; with ``message_id`` and no ``content``, that message's text ("Save to notes")."""
    conversation = own_conversation(conversation_id)
    data = parse(schemas.NoteCreate)
    return jsonify(notes.note_json(notes.add_note(conversation, data.content, data.message_id))), 201


@route("/notes/{note_id}", "PATCH", body=schemas.NoteUpdate, response=schemas.NoteOut)
def edit_note(note_id: int):  # noqa: ANN201
    """Change a note's text."""
    note = notes.owned_note(g.api_user_id, note_id)
    return jsonify(notes.note_json(notes.edit_note(note, parse(schemas.NoteUpdate).content)))


@route("/notes/{note_id}", "DELETE", status=204)
def delete_note(note_id: int):  # noqa: ANN201
    """Delete a note."""
    notes.delete_note(notes.owned_note(g.api_user_id, note_id))
    return "", 204


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
    """The models a conversation may choose: the upstream's list (limited by ALLOWED_MODELS), or the configured one."""
    provider = current_generator().provider
    return jsonify(items=[{"id": name, "provider": provider.name} for name in conversations.available_models()])


@route("/stats", "GET", response=schemas.Stats)
def stats():  # noqa: ANN201
    """The identity's totals, and its answers of the last 30 days by day (in its time zone) and by model:
    tokens, timings, feedback and tone. ``?scope=all``: everyone's series, for an administrator."""
    user = db.session.get(User, g.api_user_id)
    series = insight.stats_of(user, request.args.get("scope") or "mine").as_dict()
    return jsonify(user_stats(g.api_user_id) | series)


# -- share links -----------------------------------------------------------------------------------------
def share_json(link) -> dict:  # noqa: ANN001
    url = url_for("share.view", token=link.token, _external=True)
    return schemas.ShareOut.from_link(link, url, sharing.is_expired(link))


@route(
    "/conversations/{conversation_id}/shares", "POST", body=schemas.ShareCreate, response=schemas.ShareOut, status=201
)
def create_share(conversation_id: int):  # noqa: ANN201
    """Make a read-only link to the conversation: snapshot or live, for anyone or signed-in users only."""
    conversation = own_conversation(conversation_id, OWNER)
    data = parse(schemas.ShareCreate)
    link = sharing.create(conversation, data.kind, data.visibility, data.expires_at, data.allow_indexing)
    return jsonify(share_json(link)), 201


@route("/conversations/{conversation_id}/shares", "GET", response=schemas.ShareList)
def list_shares(conversation_id: int):  # noqa: ANN201
    """The conversation's links that are not turned off (expired ones too, marked so), newest first."""
    return jsonify(items=[share_json(link) for link in sharing.links(own_conversation(conversation_id, OWNER))])


@route("/shares/{token}", "DELETE", status=204)
def revoke_share(token: str):  # noqa: ANN201
    """Turn one of your links off; it then answers 404 saying so. The others keep working."""
    sharing.revoke(sharing.owned_link(g.api_user_id, token))
    return "", 204


@route("/shared/{token}", "GET", response=schemas.SharedConversation, public=True)
def shared(token: str):  # noqa: ANN201
    """A shared conversation's visible path (``?leaf=<message id>``: another version); a bearer token for
    signed-in-only links."""
    link = sharing.resolve(token, _optional_user())
    leaf_arg = request.args.get("leaf", "")
    if leaf_arg and not (leaf_arg.isascii() and leaf_arg.isdigit() and len(leaf_arg) <= 19):
        raise ChatError("leaf must be a message id.", 422, details={"fields": [{"field": "leaf"}]})
    shown = sharing.view(link, int(leaf_arg) if leaf_arg else None)
    owner = db.session.get(User, shown.conversation.user_id)
    messages = [schemas.SharedMessageOut.from_message(m, position, token) for m, position in shown.visible]
    body = schemas.SharedConversation.model_validate(
        {
            "title": shown.conversation.title,
            "shared_by": owner.name if owner else DELETED_USER,
            "kind": link.kind,
            "visibility": link.visibility,
            "created_at": link.created_at,
            "messages": messages,
        }
    )
    return jsonify(body.model_dump(mode="json"))


@route("/shared/{token}/messages/{message_id}/stream", "GET", public=True, streams=True)
def shared_stream(token: str, message_id: int):  # noqa: ANN201
    """A live link's answer as it is written: SSE (default) or NDJSON, as ``/messages/{id}/stream``."""
    answer = sharing.answer(sharing.resolve(token, _optional_user()), message_id)
    return stream(answer.id, to_json=lambda m: schemas.SharedMessageOut.from_message(m, siblings_of(m), token))


@route("/shared/{token}/images/{image_id}", "GET", public=True)
def shared_image(token: str, image_id: int):  # noqa: ANN201
    """An image of a shared conversation, for whoever may open the link."""
    return image_response(sharing.image(sharing.resolve(token, _optional_user()), image_id))


def _optional_user() -> User | None:
    """The bearer token's identity, if one was sent and is valid (public routes work without one)."""
    token = bearer_token()
    return ApiToken.owner(token) if token else None


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
        return stream(answer.id, answer.conversation_id)
    stream_url = url_for(".stream_message", message_id=answer.id)
    question = question or db.session.get(Message, answer.parent_id)
    assert question is not None  # an answer always answers a stored question
    asked, answered = siblings_of_each([question, answer])  # both positions in one query
    body = {
        "user_message": message_json(question, position=asked),
        "assistant_message": message_json(answer, position=answered),
        "stream_url": stream_url,
    }
    return jsonify(body), 202


def stream(
    message_id: int, conversation_id: int | None = None, to_json: Callable[[Message], dict] = message_json
) -> Response:
    """Deltas then the final message (as ``to_json`` gives it), as SSE events or NDJSON lines; each carries
    its offset.

    With ``conversation_id``, a reader removed from the room meanwhile is cut off within
    ``rooms.HEARTBEAT`` seconds (a share link's reader is checked by the link instead).
    """
    ndjson = request.accept_mimetypes.best == "application/x-ndjson"
    after = resume_offset(request.headers.get("Last-Event-ID"), request.args.get("after"))
    user_id = g.get("api_user_id")  # none for a share link's public stream
    db.session.close()

    def events() -> Iterator[str]:
        access = rooms.AccessCheck(conversation_id, user_id) if conversation_id is not None else None
        for update in follow(message_id, after, tick=rooms.HEARTBEAT):  # ticks: the access check runs when quiet
            # Not on the final message: closing the session would detach it before it is sent.
            if access and not isinstance(update, Done) and access.lost():
                gone = {"code": "not_found", "message": conversations.NOT_FOUND}
                yield _line("error", gone) if ndjson else sse(json.dumps(gone), "error")
                return
            if isinstance(update, Delta):
                data = {"message_id": message_id, "seq": update.end, "content": update.text}
                yield _line("delta", data) if ndjson else sse(json.dumps(data), "delta", update.end)
            elif isinstance(update, Status):
                data = schemas.StreamStatus(message_id=message_id, **update.state).model_dump(mode="json")
                yield _line("status", data) if ndjson else sse(json.dumps(data), "status")
            elif isinstance(update, NoteSaved):  # its own channel: never part of the answer's text
                if conversation_id is None:  # a share link's reader: the notes are the owner's
                    continue
                data = {
                    "message_id": message_id,
                    "conversation_id": update.note["conversation_id"],
                    "note": update.note,
                }
                yield _line("note", data) if ndjson else sse(json.dumps(data), "note")
            elif isinstance(update, Done) and update.message is None:  # deleted while it was being written
                gone = {"code": "not_found", "message": conversations.NOT_FOUND}
                yield _line("error", gone) if ndjson else sse(json.dumps(gone), "error")
            elif isinstance(update, Done) and update.message is not None:
                message = to_json(update.message)
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
    "description": (
        "delta: {message_id, seq, content}; status: a StreamStatus (e.g. retrying the model server, before "
        "the first delta); note: a StreamNote (the assistant saved a note with its save_note tool: a channel "
        "of its own, never in the text); done: the MessageOut; error: {code, message, detail}. NDJSON lines "
        'carry the same objects with a "type" field naming the event.'
    ),
    "properties": {
        "event": {"enum": ["delta", "status", "note", "done", "error"]},
        "data": {"type": "string"},
        "id": {"type": "string"},
    },
    "required": ["event", "data"],
}


def openapi_document() -> dict:
    """OpenAPI 3.1, from the routes' own schemas."""
    # StreamStatus and StreamNote: the stream's status and note events; ExportDocument: the export format
    models: set[type[BaseModel]] = {schemas.Error, schemas.StreamStatus, schemas.StreamNote, export.ExportDocument}
    models |= {s for r in ROUTES for s in (r.body, r.response) if s}
    _, definitions = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    paths: dict = {}
    for r in ROUTES:
        operation: dict = {"summary": r.summary, "responses": {}}
        parameters = [p.strip("{}") for p in r.path.split("/") if p.startswith("{")]
        if parameters or r.query:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": _parameter_schema(p)} for p in parameters
            ] + [
                {"name": name, "in": "query", "required": required, "description": about, "schema": {"type": "string"}}
                for name, required, about in r.query
            ]
        if r.body:
            operation["requestBody"] = {
                "required": r.body_required,
                "content": {"application/json": {"schema": _ref(r.body)}},
            }
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


def _parameter_schema(name: str) -> dict:
    if name in STRING_PARAMETERS:
        return {"type": "string", "minLength": 1, "maxLength": sharing.TOKEN_LENGTH}
    return {"type": "integer"}


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}
