"""Share links on the pages: the owner's Share page (create, copy, revoke) and the read-only viewer.

Every action is a plain form answered with a 303; the viewer works without JavaScript (a live link's
page refreshes itself while an answer is written) and, with it, a live link's page holds one event stream
(``watch``) that brings new messages and the answer being written.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from flask import Blueprint, Response, current_app, redirect, render_template, request, stream_with_context, url_for

from .. import conversations, sharing
from ..errors import ChatError, error_response, wants_fragment
from ..events import SSE_HEADERS, Ping, sse
from ..extensions import db
from ..identity import current_user, session_user
from ..models import DELETED_USER, Conversation, Message, ShareLink, User, utcnow
from ..streaming_markdown import AnswerDone, AnswerText, AnswerUpdate
from .responses import answer_fragment, image_response

bp = Blueprint("share", __name__)

EXPIRIES: dict[str, tuple[str, timedelta | None]] = {  # the form's choices: value → (label, lifetime)
    "": ("Never", None),
    "1h": ("In 1 hour", timedelta(hours=1)),
    "1d": ("In 1 day", timedelta(days=1)),
    "7d": ("In 7 days", timedelta(days=7)),
    "30d": ("In 30 days", timedelta(days=30)),
}
VIEWER_PAGES = {"share.view", "share.fork"}
RENDERED_KEPT = 256  # message lists kept for live watchers (one per link and state)


@bp.errorhandler(ChatError)
def _refused(exc: ChatError):  # noqa: ANN202
    """On the viewer's page: why the link shows nothing, with a way to sign in when that helps; noindex."""
    if request.endpoint not in VIEWER_PAGES or wants_fragment():
        response = current_app.make_response(error_response(exc.message, exc.status, exc.code, exc.details))
    else:
        sign_in = url_for("auth.sign_in", next=request.full_path.rstrip("?") if request.method == "GET" else None)
        html = render_template("share_refused.html", message=exc.message, status=exc.status, sign_in=sign_in)
        response = current_app.make_response((html, exc.status))
    response.headers.update({"X-Robots-Tag": "noindex", **exc.headers})
    return response


# -- the owner's Share page ------------------------------------------------------------------------------
def _own(conversation_id: int) -> Conversation:
    return conversations.owned_conversation(current_user().id, conversation_id)


@bp.get("/c/<int:conversation_id>/share")
def manage(conversation_id: int):  # noqa: ANN201
    """The Share page: the conversation's links (to copy or turn off) and a form for a new one."""
    return _render_manage(_own(conversation_id))


def _render_manage(conversation: Conversation, status: int = 200, **context: object) -> tuple[str, int]:
    html = render_template(
        "share.html",
        conversation=conversation,
        conversations=Conversation.for_user(current_user().id),
        links=sharing.links(conversation),
        expiries={value: label for value, (label, _) in EXPIRIES.items()},
        is_expired=sharing.is_expired,
        created=request.args.get("created"),
        **context,
    )
    return html, status


@bp.post("/c/<int:conversation_id>/share")
def create(conversation_id: int):  # noqa: ANN201
    """Make a link (live or snapshot, who may open it, expiry, indexing), then back to the Share page."""
    conversation = _own(conversation_id)
    form = request.form
    choice = form.get("expires", "")
    try:
        if choice not in EXPIRIES:
            raise ChatError(
                "Choose when the link expires from the list.", 422, "invalid", {"fields": [{"field": "expires"}]}
            )
        delay = EXPIRIES[choice][1]
        link = sharing.create(
            conversation,
            kind=form.get("kind", sharing.LIVE),
            visibility=form.get("visibility", sharing.ANYONE),
            expires_at=utcnow() + delay if delay else None,
            allow_indexing=form.get("allow_indexing") == "on",
        )
    except ChatError as exc:
        if exc.status not in (409, 422):
            raise
        return _render_manage(conversation, exc.status, error=exc.message, form=form)
    return redirect(
        url_for(".manage", conversation_id=conversation.id, created=link.id, _anchor=f"link-{link.id}"), 303
    )


@bp.post("/share/<token>/revoke")
def revoke(token: str):  # noqa: ANN201
    """Turn one link off; the others keep working."""
    link = sharing.owned_link(current_user().id, token)
    sharing.revoke(link)
    return redirect(url_for(".manage", conversation_id=link.conversation_id), 303)


# -- the viewer ------------------------------------------------------------------------------------------
def _resolve(token: str) -> ShareLink:
    return sharing.resolve(token, session_user())


@bp.get("/s/<token>")
def view(token: str):  # noqa: ANN201
    """The shared conversation, read-only; ``?leaf=<message id>`` shows another version (only here)."""
    link = _resolve(token)
    leaf = request.args.get("leaf", type=int)
    # What the page shows, for its live stream; looked at first, so a change meanwhile is sent again, not missed.
    live_state = sharing.state_key(sharing.changes(link.id)) if link.kind == sharing.LIVE and leaf is None else None
    shown = sharing.view(link, leaf)
    title, description = sharing.description(link, shown)
    owner = db.session.get(User, shown.conversation.user_id)
    html = render_template(
        "shared.html",
        share=link,
        shown=shown,
        conversation=shown.conversation,
        visible=shown.visible,
        earlier=0,
        later=0,
        streaming=shown.streaming,
        leaf=leaf,
        owner=owner.name if owner else DELETED_USER,
        og_title=title,
        og_description=description,
        refresh=max(request.args.get("refresh", 0, type=int), 0),
        live_state=live_state,
    )
    # Not kept by shared caches, and checked again on every visit: a link turned off stops showing at once.
    headers = {"Cache-Control": "private, no-cache"}
    if not link.allow_indexing:
        headers["X-Robots-Tag"] = "noindex"
    return html, 200, headers


@bp.get("/s/<token>/watch")
def watch(token: str):  # noqa: ANN201
    """A live link's page with JavaScript: its one event stream. ``changed``: the messages again whenever
    the owner's path changes; ``answer``: the answer being written, as out-of-band fragments (as on a
    room's page); ``gone``: the link stopped working."""
    link = _resolve(token)
    if link.kind != sharing.LIVE:
        raise ChatError("Only live links change: this one is a snapshot.", 404, "not_found")
    link_id, shown = link.id, request.args.get("shown")
    db.session.close()

    def stream():  # noqa: ANN202
        for update in sharing.follow_live(link_id, shown):
            if isinstance(update, Ping):
                yield ": ping\n\n"
                continue
            event, html = _live_event(link_id, update)
            db.session.close()  # hand the connection back: the stream stays open for minutes
            if html:
                yield sse(html, event)

    return Response(stream_with_context(stream()), headers=SSE_HEADERS)


def _live_event(link_id: int, update: sharing.LiveUpdate) -> tuple[str, str]:
    """The SSE event (its name and HTML) that shows ``update`` on a live link's page."""
    if isinstance(update, sharing.Changed):
        return "changed", _changed_html(link_id, update.state)
    if isinstance(update, sharing.Gone):  # the messages give way to a notice
        return "gone", render_template("partials/share_gone.html")
    if isinstance(update, AnswerDone):  # the finished message, as a reload shows it
        message, link = db.session.get(Message, update.message_id), db.session.get(ShareLink, link_id)
        if message is None or link is None:  # deleted meanwhile: the next look says so
            return "answer", ""
        return "answer", render_template("partials/message.html", message=message, share=link, swap_oob=True)
    if isinstance(update, AnswerUpdate | AnswerText):
        return "answer", answer_fragment(update)
    return "", ""


_rendering = threading.Lock()
_rendered: dict[tuple, str] = {}  # (link id, its state) → the message list: rendered once for all its watchers


def _changed_html(link_id: int, state: tuple) -> str:
    """The live link's message list in this state; rendered once per process, however many watch it."""
    key = (link_id, *state)
    with _rendering:  # one render per state, even when many watchers see the change at once
        return _rendered.get(key) or _render_changed(key, link_id)


def _render_changed(key: tuple, link_id: int) -> str:
    link = db.session.get(ShareLink, link_id)
    shown = sharing.view(link) if link is not None else None
    html = render_template(
        "partials/messages.html",
        share=link,
        conversation=shown.conversation if shown else None,
        visible=shown.visible if shown else [],
        earlier=0,
        later=0,
    )
    if len(_rendered) >= RENDERED_KEPT:
        _rendered.pop(next(iter(_rendered)))  # the oldest
    _rendered[key] = html
    return html


@bp.get("/s/<token>/images/<int:image_id>")
def image(token: str, image_id: int):  # noqa: ANN201
    """An image of the shared conversation, for whoever may open the link (and nobody else)."""
    link = _resolve(token)
    response = image_response(sharing.image(link, image_id))
    if not link.allow_indexing:
        response.headers["X-Robots-Tag"] = "noindex"
    return response


@bp.post("/s/<token>/fork")
def fork(token: str):  # noqa: ANN201
    """Continue in my chats: copy the path shown into a new conversation of the viewer's, and open it."""
    link = _resolve(token)
    leaf = request.form.get("leaf", type=int)
    copy = sharing.fork(link, current_user(), leaf)
    return redirect(url_for("chat.conversation", conversation_id=copy.id, _anchor="latest"), 303)
