"""Export: lossless JSON, readable Markdown, a self-contained HTML page, and a zip streamed with the images."""

from __future__ import annotations

import io
import json
import re
import types
import zipfile

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from chatapp import conversations, notes
from chatapp.extensions import db
from chatapp.models import Conversation, Image, Message
from tests.clients import ApiClient
from tests.conftest import Chat
from tests.fake_upstream import save_note


def png(width: int = 40, height: int = 30, colour: str = "teal") -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def branched(chat: Chat) -> int:
    """A conversation with every kind of thing an export keeps: two versions of the first question (the
    second visible), two answers to it, feedback, an image, its own settings, and notes: one the assistant's
    tool saved, one saved from an answer on the hidden branch, one of the user's own. Returns its id."""
    response = chat.post(
        "/conversations",
        {"content": "First question", "images": [(io.BytesIO(png()), "photo.png")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    conversation_id, answer_id = (
        int(n) for n in re.search(r"/c/(\d+)#message-(\d+)$", response.headers["Location"]).groups()
    )
    chat.wait(answer_id)
    chat.wait(chat.send(conversation_id, "Second question"))
    with chat.app.app_context():
        first = db.session.scalar(select(Message.id).where(Message.content == "First question"))
        conversation = db.session.get(Conversation, conversation_id)
        conversation.system_prompt, conversation.temperature = "Answer briefly.", 0.3
        db.session.commit()
    response = chat.post(f"/messages/{first}/edit", {"content": "First question, edited"})
    assert response.status_code == 303
    edited_answer = int(response.headers["Location"].rsplit("message-", 1)[1])
    chat.wait(edited_answer)
    response = chat.post(f"/messages/{edited_answer}/retry")
    assert response.status_code == 303
    retried = int(response.headers["Location"].rsplit("message-", 1)[1])
    chat.wait(retried)
    with chat.app.app_context():  # (the page has no feedback form; the API and the WebSocket do)
        conversations.give_feedback(db.session.get(Message, retried), "up", "Just right")
        # What a save_note tool call stores (tests/test_notes.py drives it through the fake model).
        notes.store_tool_call(conversation_id, retried, save_note("Keep it brief", "call_brief"), 5)
    assert chat.post(f"/messages/{edited_answer}/save-note").status_code == 303
    assert chat.post(f"/c/{conversation_id}/notes", {"content": "A note of my own"}).status_code == 303
    return conversation_id


def exported(chat: Chat, conversation_id: int | str, fmt: str):  # noqa: ANN201
    response = chat.client.get(f"/export?conversation={conversation_id}&format={fmt}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_json_export_keeps_every_branch_and_the_visible_path(chat: Chat) -> None:
    conversation_id = branched(chat)
    response = exported(chat, conversation_id, "json")
    assert response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data())
    assert (data["format"], data["version"]) == ("chatapp.export", 1)
    [conversation] = data["conversations"]

    with chat.app.app_context():
        stored = {
            m.id: m for m in db.session.scalars(select(Message).where(Message.conversation_id == conversation_id))
        }
        row = db.session.get(Conversation, conversation_id)
        path = [m.id for m in row.path()]
        title, leaf = row.title, row.active_leaf_id
    # Every message of every branch, with its parent: the same tree.
    assert {m["id"]: m["parent_id"] for m in conversation["messages"]} == {i: m.parent_id for i, m in stored.items()}
    assert len(conversation["messages"]) == 7  # 2 questions + 2 answers on the old branch, 1 edit + 2 answers
    assert conversation["visible_path"] == path and conversation["active_leaf_id"] == leaf
    assert conversation["title"] == title
    assert conversation["settings"]["system_prompt"] == "Answer briefly."
    assert conversation["settings"]["temperature"] == 0.3
    by_content = {m["content"]: m for m in conversation["messages"]}
    assert [m["content"] for m in conversation["messages"] if m["id"] in path][0] == "First question, edited"
    rated = [m for m in conversation["messages"] if m["feedback"]]
    assert [m["feedback"] for m in rated] == [{"rating": "up", "comment": "Just right"}]
    answer = rated[0]
    assert answer["model"] == "fake-model" and answer["status"] == "complete"
    assert answer["metrics"]["duration_ms"] is not None and answer["metrics"]["finish_reason"] == "stop"
    assert answer["created_at"].endswith("Z")
    saved = {n["content"]: n for n in conversation["notes"]}
    assert saved["Keep it brief"] | {"created_at": "", "updated_at": ""} == {
        "content": "Keep it brief",
        "source": "assistant",
        "message_id": answer["id"],
        "tool_call_id": "call_brief",
        "answer_offset": 5,
        "created_at": "",
        "updated_at": "",
    }
    from_answer = saved["Echo: First question, edited"]
    echoes = [m["id"] for m in conversation["messages"] if m["content"] == from_answer["content"]]
    assert from_answer["message_id"] in echoes and from_answer["message_id"] != answer["id"]  # the hidden one
    assert saved["A note of my own"]["message_id"] is None and saved["A note of my own"]["source"] == "user"
    assert saved["A note of my own"]["created_at"].endswith("Z")
    [image] = by_content["First question"]["images"]
    assert image["file"].startswith("images/") and (image["width"], image["height"], image["mime"]) == (
        40,
        30,
        "image/png",
    )


def test_markdown_export_is_the_visible_path(chat: Chat) -> None:
    conversation_id = branched(chat)
    text = exported(chat, conversation_id, "markdown").get_data(as_text=True)
    assert text.startswith("# First question\n")
    assert "## You\n" in text and "## Assistant (fake-model)\n" in text
    assert "First question, edited" in text and "Echo: First question, edited" in text
    assert "Second question" not in text  # it is on the other branch
    assert "> **System prompt:** Answer briefly." in text
    notes_part = text.split("\n## Notes\n", 1)[1]  # the notes come last, every one of them
    assert "*Saved by the assistant · " in notes_part and "\nKeep it brief\n" in notes_part
    assert "\nEcho: First question, edited\n" in notes_part and "\nA note of my own\n" in notes_part


def test_html_export_is_one_offline_page_with_other_versions_folded(chat: Chat) -> None:
    conversation_id = branched(chat)
    response = exported(chat, conversation_id, "html")
    page = response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert "<style>" in page
    main, folded = page.split("<details>", 1)[0], re.findall(r"<details>(.*?)</details>", page, re.S)
    assert "First question, edited" in main and "Second question" not in main
    # The other version of the question, with the answers that followed it, is folded away; so is the
    # other answer to the edited question.
    assert any("Second question" in block and "Echo: Second question" in block for block in folded)
    assert sum("other version" in block for block in folded) == 2
    # The image (kept by the edit, so on both versions) is in the page itself.
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_all_conversations_come_as_a_streamed_zip_with_the_images(chat: Chat) -> None:
    streamed_zip_with_images(chat)


@pytest.mark.postgres
def test_streamed_zip_with_images_on_postgresql(make_app, postgres_url: str) -> None:  # noqa: ANN001
    """On PostgreSQL the images' bytes live in the database (IMAGE_STORAGE's default there)."""
    streamed_zip_with_images(Chat(make_app(DATABASE_URL=postgres_url)))


def streamed_zip_with_images(chat: Chat) -> None:
    first = branched(chat)
    second, answer = chat.start("Another chat")
    chat.wait(answer)
    response = chat.client.get("/export?conversation=all&format=zip", buffered=False)
    assert response.status_code == 200 and response.mimetype == "application/zip"
    # Streamed: the body is a generator read piece by piece, never one bytes object built in memory.
    assert response.is_streamed
    pieces = list(response.response)
    assert len(pieces) > 3
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    names = archive.namelist()
    data = json.loads(archive.read("conversations.json"))
    assert {c["id"] for c in data["conversations"]} == {first, second}
    assert any(name.endswith(".md") and name.startswith(f"{second}-") for name in names)
    assert any(name.endswith(".html") and name.startswith(f"{first}-") for name in names)
    with chat.app.app_context():
        stored_names = list(db.session.scalars(select(Image.filename)))
    assert len(stored_names) == 2  # the image and its copy on the edited version
    assert sorted(n for n in names if n.startswith("images/")) == sorted(f"images/{n}" for n in stored_names)
    stored_name = stored_names[-1]
    assert PILImage.open(io.BytesIO(archive.read(f"images/{stored_name}"))).size == (40, 30)
    # In the zip the HTML and Markdown link the image file next to them.
    html_name = next(n for n in names if n.startswith(f"{first}-") and n.endswith(".html"))
    assert f'src="images/{stored_name}"' in archive.read(html_name).decode()


def test_zip_is_written_while_it_is_sent(chat: Chat) -> None:
    """The first bytes leave before the last conversation is read: a generator, not a built file."""
    for n in range(3):
        chat.wait(chat.start(f"Chat {n}")[1])
    response = chat.client.get("/export?conversation=all&format=zip", buffered=False)
    assert isinstance(response.response, types.GeneratorType) or not isinstance(response.response, list | bytes)
    first = next(iter(response.response))
    assert first.startswith(b"PK\x03\x04")  # the first member's header, sent before the rest is made
    response.close()


def test_all_conversations_as_markdown_are_a_zip(chat: Chat) -> None:
    chat.wait(chat.start("Hello")[1])
    response = exported(chat, "all", "markdown")
    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].endswith('.zip"')


def test_export_of_someone_elses_conversation_is_not_found(app, chat: Chat) -> None:  # noqa: ANN001
    conversation_id, answer = chat.start("Mine")
    chat.wait(answer)
    stranger = Chat(app)
    assert stranger.get(f"/export?conversation={conversation_id}&format=json").status_code == 404
    response = exported(stranger, "all", "json")
    assert json.loads(response.get_data())["conversations"] == []
    assert chat.get("/export?conversation=all&format=pdf").status_code == 422


def test_api_exports_one_conversation_or_all(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {"title": "From the API"}).get_json()
    response = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "Hi there"})
    assert response.status_code == 202
    from tests.conftest import wait_for_status

    wait_for_status(app, response.get_json()["assistant_message"]["id"])
    markdown = api.client.get(f"/api/v1/conversations/{conversation['id']}/export?format=markdown", headers=api.headers)
    assert markdown.status_code == 200 and "# From the API" in markdown.get_data(as_text=True)
    everything = api.client.get("/api/v1/export?format=json", headers=api.headers)
    assert [c["title"] for c in json.loads(everything.get_data())["conversations"]] == ["From the API"]
    other = ApiClient(app)
    assert (
        other.client.get(f"/api/v1/conversations/{conversation['id']}/export", headers=other.headers).status_code == 404
    )
    paths = api.client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/conversations/{conversation_id}/export" in paths and "/api/v1/export" in paths


def test_the_data_page_offers_export_and_import(chat: Chat) -> None:
    chat.wait(chat.start("Hello")[1])
    page = chat.get("/settings/data").get_data(as_text=True)
    assert '<form class="stack" method="get" action="/export"' in page
    assert 'enctype="multipart/form-data"' in page and 'name="file"' in page
    assert "Your data" in chat.get("/settings").get_data(as_text=True)


@pytest.mark.browser
def test_exported_html_page_passes_axe_offline(chat: Chat) -> None:
    from tests.clients import chromium
    from tests.test_page import axe_violations

    conversation_id = branched(chat)
    html = exported(chat, conversation_id, "html").get_data(as_text=True)
    with chromium() as browser:
        context = browser.new_context(bypass_csp=True, offline=True)  # it needs nothing from the network
        page = context.new_page()
        page.set_content(html)
        assert page.locator("details").count() == 2
        assert axe_violations(page) == []
        page.locator("details").first.locator("summary").click()
        page.emulate_media(color_scheme="dark")
        assert axe_violations(page) == []
        context.close()
