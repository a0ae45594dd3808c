"""Your data: export conversations (JSON, Markdown, HTML, zip) and import exports, with the import's status page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from .. import importing
from ..errors import ChatError, wants_fragment
from ..identity import current_user
from ..limits import uploads
from ..models import Conversation
from .responses import export_download

bp = Blueprint("data", __name__)


@bp.after_request
def _vary(response: Response) -> Response:
    response.vary.add("HX-Request")
    return response


def render_data(status: int = 200, error: ChatError | None = None) -> tuple[str, int]:
    """The "Your data" page: export forms, the import form, the latest imports."""
    user = current_user()
    mine = Conversation.for_user(user.id) if user.id else []
    selected = request.args.get("conversation", "")
    html = render_template(
        "data.html",
        conversations=mine,
        conversation=None,
        selected=selected,
        jobs=importing.jobs_for(user.id),
        state=importing.state,
        error=error,
        max_bytes=current_app.config["MAX_IMPORT_BYTES"],
    )
    return html, status


@bp.get("/settings/data")
def page():  # noqa: ANN201
    """Export and import."""
    return render_data()


@bp.get("/export")
def download():  # noqa: ANN201
    """Download one conversation (``?conversation=<id>``) or all of them (``all``) in ``?format=``."""
    choice = request.args.get("conversation", "all")
    if choice != "all" and not (choice.isascii() and choice.isdigit() and len(choice) <= 18):
        raise ChatError("Choose a conversation, or all of them.", 422)
    conversation_id = None if choice == "all" else int(choice)
    return export_download(current_user().id, conversation_id, request.args.get("format", "json"))


@bp.post("/settings/data/import")
@uploads("import")
def upload():  # noqa: ANN201
    """Receive an export file and start importing it; then its status page."""
    file = request.files.get("file")
    if file is None or not file.filename:
        return render_data(422, ChatError("Choose a file to import.", 422))
    try:
        with file.stream:
            job = importing.receive(current_user(), file.stream, file.filename)
    except ChatError as exc:
        return render_data(exc.status, exc)
    return redirect(url_for(".status", job_id=job.id), 303)


@bp.get("/imports/<int:job_id>")
def status(job_id: int):  # noqa: ANN201
    """An import's progress and report: refreshes itself while it runs (meta refresh, or HTMX)."""
    job = importing.owned_job(current_user().id, job_id)
    context = {"job": job, "state": importing.state(job), "percent": importing.percent(job)}
    context["entries"] = list(importing.iter_entries(job))
    context["conversations"] = Conversation.for_user(job.user_id)
    if wants_fragment():
        return render_template("partials/import_status.html", fragment=True, **context)
    return render_template("import_status.html", conversation=None, **context)
