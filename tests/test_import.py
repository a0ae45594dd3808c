"""Import: chatapp's own export round-trips to the same tree, ChatGPT's export becomes branches, in the
background, with a report; bad files are refused clearly and nothing is half-imported."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from chatapp import images as images_module
from chatapp.extensions import db
from chatapp.models import Conversation, Image, ImportJob, Message, Tree, User, utcnow
from chatapp.notes import MAX_NOTE_CHARS
from tests.clients import ApiClient, chromium, wait_until
from tests.conftest import Chat
from tests.test_export import branched
from tests.test_page import axe_violations, open_context

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHATGPT = FIXTURES / "chatgpt" / "conversations.json"


# ---- helpers ------------------------------------------------------------------------------------------
def upload(chat: Chat, data: bytes, name: str = "export.json"):  # noqa: ANN201
    """Post a file to the import form, as a browser without JavaScript does."""
    return chat.post("/settings/data/import", {"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def imported(chat: Chat, data: bytes, name: str = "export.json") -> ImportJob:
    """Import a file and wait for the background job to end; the job as stored."""
    response = upload(chat, data, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    job_id = int(re.search(r"/imports/(\d+)$", response.headers["Location"]).group(1))
    return finished(chat.app, job_id)


def finished(app, job_id: int) -> ImportJob:  # noqa: ANN001
    def ended() -> ImportJob | None:
        with app.app_context():
            job = db.session.get(ImportJob, job_id)
            db.session.expunge_all()
            return job if job.status in ("done", "failed") else None

    return wait_until(ended, "the import ended")


def shape(app, conversation_id: int) -> dict:  # noqa: ANN001
    """The conversation as a user sees it, without ids: every message (in order, with its parent's
    position), the visible path as positions, the settings, the notes (with their message's position)."""
    with app.app_context():
        conversation = db.session.get(Conversation, conversation_id)
        tree = Tree(conversation_id)
        order = {message_id: index for index, message_id in enumerate(tree.by_id)}
        messages = [
            {
                "parent": order.get(m.parent_id) if m.parent_id else None,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "error": m.error,
                "model": m.model,
                "provider": m.provider,
                "token_count": m.token_count,
                "metrics": (m.ttft_ms, m.duration_ms, m.prompt_tokens, m.completion_tokens, m.finish_reason),
                "feedback": (m.feedback_rating, m.feedback_comment),
                "created_at": m.created_at.replace(microsecond=0),
                "images": [(i.mime, i.width, i.height, i.alt) for i in m.images],
            }
            for m in tree.by_id.values()
        ]
        return {
            "title": conversation.title,
            "settings": (
                conversation.model,
                conversation.system_prompt,
                conversation.temperature,
                conversation.max_tokens,
            ),
            "created_at": conversation.created_at.replace(microsecond=0),
            "messages": messages,
            "visible": [order[m.id] for m in tree.path(conversation.active_leaf_id)],
            "notes": [
                (
                    n.content,
                    n.source,
                    order.get(n.message_id),
                    n.tool_call_id,
                    n.answer_offset,
                    n.created_at,
                    n.updated_at,
                )
                for n in conversation.notes
            ],
        }


def conversation_ids(app) -> list[int]:  # noqa: ANN001
    with app.app_context():
        return list(db.session.scalars(select(Conversation.id).order_by(Conversation.id)))


def count(app, model) -> int:  # noqa: ANN001
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def report(job: ImportJob) -> list[dict]:
    return json.loads(job.report)


def export_file(chat: Chat, conversation: int | str = "all", fmt: str = "json") -> bytes:
    response = chat.client.get(f"/export?conversation={conversation}&format={fmt}")
    assert response.status_code == 200
    return response.get_data()


# ---- chatapp's own export ------------------------------------------------------------------------------
def round_trip(chat: Chat) -> None:
    original = branched(chat)
    data = export_file(chat, original)
    job = imported(chat, data)
    assert (job.status, job.kind, job.imported, job.skipped) == ("done", "chatapp", 1, 0)
    [entry] = report(job)
    copy = entry["conversation_id"]
    assert copy != original and conversation_ids(chat.app) == [original, copy]
    before, after = shape(chat.app, original), shape(chat.app, copy)
    # The JSON alone carries no image bytes: the images are left out, and the report says so.
    assert [m.pop("images") for m in before["messages"]] != [m.pop("images") for m in after["messages"]]
    assert after == before
    assert any("images left out" in note.lower() for note in entry["notes"])


def test_round_trip_gives_the_same_tree(chat: Chat) -> None:
    round_trip(chat)


def test_notes_are_imported_linked_cut_to_size_and_searchable(chat: Chat) -> None:
    original = branched(chat)
    data = json.loads(export_file(chat, original))
    [conversation] = data["conversations"]
    tool_note = next(n for n in conversation["notes"] if n["source"] == "assistant")
    tool_note["message_id"] = 999999  # a message that is not in the file
    written = tool_note["created_at"]
    conversation["notes"] += [
        {"content": "y" * (MAX_NOTE_CHARS + 5), "source": "user", "created_at": written},
        {"content": "  ", "source": "user", "created_at": written},
    ]
    job = imported(chat, json.dumps(data).encode())
    [entry] = report(job)
    assert entry["outcome"] == "imported"
    assert {
        "Notes kept without their message, which is not in the file",
        "Notes over 10,000 characters cut to that length",
        "Empty notes left out",
    } <= set(entry["notes"])
    copy = entry["conversation_id"]
    kept = {n[0][:10]: n for n in shape(chat.app, copy)["notes"]}
    assert kept["Keep it br"][:5] == ("Keep it brief", "assistant", None, "call_brief", 5)
    assert len(kept["y" * 10][0]) == MAX_NOTE_CHARS and len(kept) == 4
    assert kept["Echo: Firs"][2] is not None  # the others keep their message
    # Imported notes are searchable at once, in the copy as in the original.
    page = chat.get("/search", query_string={"q": "brief", "role": "note"}).get_data(as_text=True)
    assert page.count(">Note<") == 2 and f'href="/c/{copy}?notes=1#note-' in page


@pytest.mark.postgres
def test_round_trip_on_postgresql(make_app, postgres_url: str) -> None:  # noqa: ANN001
    round_trip(Chat(make_app(DATABASE_URL=postgres_url)))


def test_importing_the_same_file_twice_makes_no_duplicates(chat: Chat) -> None:
    no_duplicates(chat)


@pytest.mark.postgres
def test_no_duplicates_on_postgresql(make_app, postgres_url: str) -> None:  # noqa: ANN001
    no_duplicates(Chat(make_app(DATABASE_URL=postgres_url)))


def no_duplicates(chat: Chat) -> None:
    chat.wait(chat.start("Hello")[1])
    data = export_file(chat)
    first = imported(chat, data)
    assert (first.imported, first.skipped) == (1, 0)
    again = imported(chat, data)
    assert (again.status, again.imported, again.skipped) == ("done", 0, 1)
    assert "Already imported" in report(again)[0]["notes"][0]
    assert len(conversation_ids(chat.app)) == 2  # the original and one copy
    # Deleting the copy and importing again brings it back.
    copy = report(first)[0]["conversation_id"]
    assert chat.post(f"/c/{copy}/delete").status_code == 303
    assert imported(chat, data).imported == 1


def test_zip_round_trip_brings_the_images(chat: Chat) -> None:
    original = branched(chat)
    data = export_file(chat, original, "zip")
    job = imported(chat, data, "chatapp-export.zip")
    assert (job.status, job.imported) == ("done", 1)
    copy = report(job)[0]["conversation_id"]
    assert report(job)[0]["notes"] == []
    assert shape(chat.app, copy) == shape(chat.app, original)  # images included this time
    with chat.app.app_context():
        [first, *_] = db.session.scalars(
            select(Image).join(Message).where(Message.conversation_id == copy).order_by(Image.id)
        )
        assert PILImage.open(io.BytesIO(images_module.load(first))).size == (40, 30)
    assert count(chat.app, Image) == 4


# ---- ChatGPT's export ----------------------------------------------------------------------------------
def check_chatgpt(chat: Chat, job: ImportJob) -> None:
    assert (job.status, job.kind, job.imported, job.skipped) == ("done", "chatgpt", 2, 1)
    trip, pirate, broken = report(job)
    assert broken["outcome"] == "skipped" and "no mapping" in broken["notes"][0]

    conversation = shape(chat.app, trip["conversation_id"])
    assert conversation["title"] == "Planning a trip"
    assert conversation["created_at"].isoformat() == "2023-11-14T22:13:20"
    with chat.app.app_context():
        updated = db.session.get(Conversation, trip["conversation_id"]).updated_at
    assert updated.isoformat().startswith("2023-11-14T23:13:20")
    texts = [m["content"] for m in conversation["messages"]]
    assert texts == [
        "Where should I go in May?",
        "Lisbon is lovely in May.",
        "Where should I go in June?",
        "```python\nprint(weather('Oslo', 'June'))\n```",
        "Oslo will be sunny in June.",
        "What about this place?",
        "That looks like Bergen.",
        "Maybe Bergen, or Ålesund.",
    ]
    parents = [m["parent"] for m in conversation["messages"]]
    # Two versions of the first question (both under the hidden system root), and two answers to the last.
    assert parents == [None, 0, None, 2, 3, 4, 5, 5]
    # current_node (the first answer to the photo, not the newest) is the visible path.
    assert [texts[i] for i in conversation["visible"]][-1] == "That looks like Bergen."
    assert conversation["visible"] == [2, 3, 4, 5, 6]
    assert conversation["messages"][1]["model"] == "gpt-4o" and conversation["messages"][7]["model"] == "gpt-4o-mini"
    notes = " / ".join(trip["notes"]).lower()
    assert "system messages skipped" in notes
    assert "tool messages skipped" in notes
    assert "kept as a code block" in notes
    assert "images not imported" in notes

    second = shape(chat.app, pirate["conversation_id"])
    assert second["settings"][1] == "You are a pirate."
    assert [m["content"] for m in second["messages"]] == ["Hello!", "Ahoy, matey!"]
    assert second["visible"] == [0, 1]  # current_node was a skipped "thoughts" node: its nearest kept ancestor
    assert "thoughts content skipped" in " / ".join(pirate["notes"]).lower()
    assert "hidden messages skipped" in " / ".join(pirate["notes"]).lower()


def test_chatgpt_export_becomes_branches(chat: Chat) -> None:
    check_chatgpt(chat, imported(chat, CHATGPT.read_bytes(), "conversations.json"))
    page = chat.get("/c/" + str(conversation_ids(chat.app)[0])).get_data(as_text=True)
    assert "That looks like Bergen." in page and "Maybe Bergen" not in page
    assert "Where should I go in June?" in page and "Where should I go in May?" not in page


@pytest.mark.postgres
def test_chatgpt_zip_on_postgresql(make_app, postgres_url: str) -> None:  # noqa: ANN001
    chat = Chat(make_app(DATABASE_URL=postgres_url))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:  # as ChatGPT sends it: beside chat.html and the files
        archive.writestr("chat.html", "<html></html>")
        archive.writestr("conversations.json", CHATGPT.read_bytes())
        archive.writestr("file-abc123-fjord.png", b"not shown")
    check_chatgpt(chat, imported(chat, out.getvalue(), "chatgpt-export.zip"))


def test_chatgpt_zip_in_a_folder(chat: Chat) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("export-2026-11-01/conversations.json", CHATGPT.read_bytes())
    check_chatgpt(chat, imported(chat, out.getvalue(), "chatgpt-export.zip"))


# ---- limits and bad files ------------------------------------------------------------------------------
class Untouchable(io.RawIOBase):
    """A 200 kB request body that fails the test if anyone reads it (it can be measured, as a file can)."""

    size = 200_000

    def __init__(self) -> None:
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:  # noqa: ANN001
        raise AssertionError("the body was read")


def test_too_large_a_file_is_refused_before_it_is_read(make_app) -> None:  # noqa: ANN001
    app = make_app(MAX_IMPORT_BYTES=1000)
    chat = Chat(app)
    chat.get("/settings/data")
    response = chat.client.post(
        "/settings/data/import",
        input_stream=Untouchable(),
        content_type="multipart/form-data; boundary=xyz",
        headers={"X-CSRF-Token": chat.token},
    )
    assert response.status_code == 413 and "too large" in response.get_data(as_text=True)
    # Within the multipart allowance but over MAX_IMPORT_BYTES: refused as it is saved, nothing kept.
    big = b'{"format": "chatapp.export", "version": 1, "conversations": []}'.ljust(1200)
    response = upload(chat, big)
    assert response.status_code == 413 and "import limit of 1,000 bytes" in response.get_data(as_text=True)
    assert count(app, ImportJob) == 0
    api = ApiClient(app)
    refused = api.client.post(
        "/api/v1/imports", input_stream=Untouchable(),
        content_type="multipart/form-data; boundary=xyz", headers=api.headers,
    )  # fmt: skip
    assert refused.status_code == 413 and refused.get_json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    ("data", "name", "status", "says"),
    [
        (b"hello, this is text", "notes.txt", 415, "not one chatapp can import"),
        (b'{"some": "other", "app": 1}', "other.json", 415, "not one chatapp can import"),
        (b'[{"name": "a list, but not of ChatGPT conversations"}]', "list.json", 415, "no mapping"),
        (b'{"format": "chatapp.export", "version": 99, "conversations": []}', "new.json", 422, "version 99"),
        (b"", "empty.json", 422, "empty"),
        (b"PK\x03\x04 not really a zip", "broken.zip", 422, "damaged"),
        (b'{"format": "chatapp.export", "version": 1, "conversations": [{"id": 1, "title": ', "cut.json", None, ""),
    ],
)
def test_a_bad_file_gets_a_clear_error(chat: Chat, data: bytes, name: str, status: int | None, says: str) -> None:
    response = upload(chat, data, name)
    if status is None:  # recognised from its start, broken later: the job says so
        job = finished(chat.app, int(response.headers["Location"].rsplit("/", 1)[1]))
        assert job.status == "failed" and "stops being valid JSON after 0 conversations" in job.error
        page = chat.get(f"/imports/{job.id}").get_data(as_text=True)
        assert "stops being valid JSON" in page
        return
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert says in page and 'role="alert"' in page and "<h1>Your data</h1>" in page
    assert count(chat.app, ImportJob) == 0


def test_a_zip_without_conversations_is_refused(chat: Chat) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photos/cat.png", b"meow")
    response = upload(chat, out.getvalue(), "photos.zip")
    assert response.status_code == 422 and "no conversations.json" in response.get_data(as_text=True)


def test_nothing_is_half_imported(chat: Chat) -> None:
    """A broken conversation is skipped whole, with the reason; the ones around it are imported."""
    chat.wait(chat.start("Good one")[1])
    data = json.loads(export_file(chat))
    good = data["conversations"][0]
    broken = json.loads(json.dumps(good))
    broken["title"] = "Broken one"
    broken["messages"].append({**broken["messages"][-1], "id": 999, "parent_id": 998, "content": "orphan"})
    later = json.loads(json.dumps(good))
    later["title"] = "Later one"
    data["conversations"] = [broken, later, {"title": "No messages at all"}]
    messages_before = count(chat.app, Message)
    job = imported(chat, json.dumps(data).encode())
    assert (job.status, job.imported, job.skipped) == ("done", 1, 2)
    entries = {e["title"]: e for e in report(job)}
    assert "answers message 998, which is not an earlier message" in entries["Broken one"]["notes"][0]
    assert entries["No messages at all"]["notes"][0].startswith("Not a valid chatapp conversation")
    with chat.app.app_context():
        titles = list(db.session.scalars(select(Conversation.title).order_by(Conversation.id)))
    assert titles == ["Good one", "Later one"]
    assert count(chat.app, Message) == messages_before * 2  # the broken one left no messages behind

    # A file cut off in the middle: the conversations before the cut are in, the cut one is not at all.
    text = json.dumps({**data, "conversations": [later | {"title": "Before the cut"}, broken]})
    job = imported(chat, text[: text.index("Broken one") + 40].encode())
    assert (job.status, job.imported) == ("failed", 1)
    assert "after 1 conversation" in job.error
    with chat.app.app_context():
        assert db.session.scalar(select(Conversation.id).where(Conversation.title == "Broken one")) is None


# ---- the API -------------------------------------------------------------------------------------------
def test_api_import_and_status(app) -> None:  # noqa: ANN001
    api = ApiClient(app)
    files = {"file": (io.BytesIO(CHATGPT.read_bytes()), "conversations.json")}
    response = api.client.post("/api/v1/imports", data=files, headers=api.headers, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["kind"] == "chatgpt" and response.headers["Location"] == f"/api/v1/imports/{body['id']}"
    finished(app, body["id"])
    status = api.call("GET", f"/imports/{body['id']}").get_json()
    assert (status["status"], status["imported"], status["skipped"], status["percent"]) == ("done", 2, 1, 100)
    assert [e["outcome"] for e in status["report"]] == ["imported", "imported", "skipped"]
    assert ApiClient(app).call("GET", f"/imports/{body['id']}").status_code == 404  # someone else's
    bad = api.client.post(
        "/api/v1/imports", data={"file": (io.BytesIO(b"nope"), "x.txt")}, headers=api.headers,
        content_type="multipart/form-data",
    )  # fmt: skip
    assert bad.status_code == 415 and "not one chatapp can import" in bad.get_json()["error"]["message"]


def test_an_import_belongs_to_its_importer(app, chat: Chat) -> None:  # noqa: ANN001
    job = imported(chat, CHATGPT.read_bytes())
    assert Chat(app).get(f"/imports/{job.id}").status_code == 404
    with app.app_context():
        owner = db.session.get(User, job.user_id)
        assert owner is not None and {c.user_id for c in db.session.scalars(select(Conversation))} == {owner.id}


# ---- the pages in a browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


@pytest.mark.browser
def test_import_with_javascript_off_refreshes_until_done(browser, live_server: str, tmp_path: Path) -> None:  # noqa: ANN001
    context = open_context(browser, live_server, java_script_enabled=False, viewport={"width": 390, "height": 700})
    page = context.new_page()
    page.goto("/settings/data")
    page.set_input_files("#import-file", str(CHATGPT))
    page.click("button:has-text('Import')")
    page.wait_for_url(re.compile(r"/imports/\d+$"))
    # The page reloads itself (meta refresh) until the report is there.
    page.get_by_text("Done: 2 conversations imported, 1 skipped.").wait_for(timeout=15_000)
    assert page.locator(".import-report > li").count() == 3
    assert "no mapping" in page.locator(".import-report li.skipped").inner_text()
    page.click(".import-report a:has-text('Planning a trip')")
    page.wait_for_url(re.compile(r"/c/\d+$"))
    assert page.get_by_text("That looks like Bergen.").is_visible()
    context.close()


@pytest.mark.browser
def test_data_and_status_pages_are_accessible_with_javascript(browser, live_server: str) -> None:  # noqa: ANN001
    context = open_context(browser, live_server)
    page = context.new_page()
    page.goto("/settings/data")
    page.set_input_files("#import-file", str(CHATGPT))
    page.click("button:has-text('Import')")
    page.wait_for_url(re.compile(r"/imports/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    page.get_by_text("Done: 2 conversations imported").wait_for(timeout=15_000)
    assert axe_violations(page) == []
    page.goto("/settings/data")
    assert page.locator(".imports td").first.inner_text() == "conversations.json"
    assert axe_violations(page) == []
    page.emulate_media(color_scheme="dark")
    assert axe_violations(page) == []
    page.set_viewport_size({"width": 390, "height": 700})
    assert axe_violations(page) == []
    page.goto(f"/imports/{job_id}")
    assert axe_violations(page) == []
    context.close()


def running_job(app, **fields) -> int:  # noqa: ANN001, ANN003
    """An import job as it stands mid-way (a real one ends too fast to watch), owned by a new guest."""
    with app.app_context():
        user = User()
        db.session.add(user)
        db.session.flush()
        job = ImportJob(user_id=user.id, filename="big.json", size=1000, kind="chatapp", status="running", **fields)
        db.session.add(job)
        db.session.commit()
        return job.id


def test_status_page_refreshes_itself_while_the_import_runs(app) -> None:  # noqa: ANN001
    job_id = running_job(app, bytes_read=420, imported=3)
    with app.app_context():
        user_id = db.session.get(ImportJob, job_id).user_id
    chat = Chat(app)
    with chat.client.session_transaction() as session:
        session["uid"], session["gen"] = user_id, 0
    page = chat.get(f"/imports/{job_id}").get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page  # JS off: the page reloads
    assert "Importing: 42% read, 3 imported, 0 skipped so far." in page
    fragment = chat.get(f"/imports/{job_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and 'id="import-status"' in fragment
    assert 'hx-trigger="every 1s"' in fragment  # JS on: HTMX fetches this fragment again
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        job.status, job.imported = "done", 5
        db.session.commit()
    done = chat.get(f"/imports/{job_id}").get_data(as_text=True)
    assert "Done: 5 conversations imported" in done and "http-equiv" not in done and 'hx-trigger="every' not in done
    # The poll that finds it done also refreshes the sidebar (out of band), where the new conversations are.
    last = chat.get(f"/imports/{job_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<nav id="sidebar" class="sidebar" aria-label="Conversations" hx-swap-oob="true">' in last
    # A job whose server stopped (no heartbeat for a minute) says so instead of "running" forever.
    stale = running_job(app, updated_at=datetime(2020, 1, 1))
    with app.app_context():
        owner = db.session.get(ImportJob, stale).user_id
    with chat.client.session_transaction() as session:
        session["uid"] = owner
    assert "Interrupted: the server stopped" in chat.get(f"/imports/{stale}").get_data(as_text=True)


@pytest.mark.browser
def test_status_updates_in_place_with_javascript(browser, app, live_server: str) -> None:  # noqa: ANN001
    context = open_context(browser, live_server)
    page = context.new_page()
    page.goto("/settings/data")
    page.set_input_files("#import-file", str(CHATGPT))
    page.click("button:has-text('Import')")
    page.wait_for_url(re.compile(r"/imports/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    page.get_by_text("Done: 2 conversations imported").wait_for()
    # Set the job back to running: the page polls (HTMX) and shows each change without reloading.
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        job.status, job.imported, job.skipped, job.bytes_read, job.updated_at = "running", 0, 0, 0, utcnow()
        db.session.commit()
    page.reload()
    page.evaluate("window.notReloaded = true")
    page.get_by_text("Importing: 0% read").wait_for()
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        job.status, job.imported, job.skipped, job.bytes_read = "done", 2, 1, job.size
        db.session.commit()
    page.get_by_text("Done: 2 conversations imported, 1 skipped.").wait_for()
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#sidebar .conversation-link", has_text="Planning a trip").count() == 1
    assert axe_violations(page) == []
    context.close()


def test_a_zip_that_unpacks_too_large_is_refused(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_IMPORT_BYTES=2000))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", "[" + " " * 30_000 + "]")
    assert len(out.getvalue()) < 2000
    response = upload(chat, out.getvalue(), "bomb.zip")
    assert response.status_code == 413 and "30,002 bytes unpacked" in response.get_data(as_text=True)


def test_one_import_at_a_time(app) -> None:  # noqa: ANN001
    api = ApiClient(app)
    with app.app_context():
        user_id = db.session.scalar(select(User.id))
        db.session.add(ImportJob(user_id=user_id, filename="big.json", size=10, kind="chatgpt", status="running"))
        db.session.commit()
    files = {"file": (io.BytesIO(CHATGPT.read_bytes()), "conversations.json")}
    response = api.client.post("/api/v1/imports", data=files, headers=api.headers, content_type="multipart/form-data")
    assert response.status_code == 409 and "still running" in response.get_json()["error"]["message"]
