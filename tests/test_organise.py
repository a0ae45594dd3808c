"""Organising chats: pin, archive, folders (with their system prompt and model), temporary chats; page
forms without JavaScript and the same in the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from chatapp import conversations
from chatapp.extensions import db
from chatapp.models import Conversation, Folder, Image, utcnow
from tests.conftest import Chat
from tests.test_images import picture


@pytest.fixture(params=["sqlite", "postgresql"])
def chat_on(request, make_app) -> Chat:  # noqa: ANN001
    """A no-JS browser on an app backed by SQLite, then by PostgreSQL: every test runs on both."""
    if request.param == "postgresql":
        return Chat(make_app(DATABASE_URL=request.getfixturevalue("postgres_url")))
    return Chat(make_app())


def sidebar(chat: Chat) -> list[tuple[str, list[str]]]:
    """The sidebar's groups and their chat titles, in order."""
    page = chat.get("/settings").get_data(as_text=True)
    nav = page.split('<nav id="sidebar"', 1)[1].split("</nav>", 1)[0]
    groups = []
    for heading, body in re.findall(
        r'<h2 class="group-title"[^>]*>(.*?)</h2>(.*?)(?=<h2 class="group-title"|$)', nav, re.S
    ):
        titles = [
            re.sub(r"<[^>]+>|Pinned: ", "", t).strip()
            for t in re.findall(r'class="conversation-link"[^>]*>(.*?)</a>', body, re.S)
        ]
        groups.append((re.sub(r"<[^>]+>", "", heading).strip(), titles))
    return groups


def start(chat: Chat, content: str, **fields: str) -> int:
    response = chat.post("/conversations", {"content": content, **fields})
    assert response.status_code == 303, response.get_data(as_text=True)
    conversation_id, answer_id = re.search(r"/c/(\d+)#message-(\d+)$", response.headers["Location"]).groups()
    chat.wait(int(answer_id))
    return int(conversation_id)


def test_pinned_chats_come_first_and_unpin(chat_on: Chat) -> None:
    older = start(chat_on, "older chat")
    start(chat_on, "newer chat")
    assert sidebar(chat_on) == [("Today", ["newer chat", "older chat"])]
    response = chat_on.post(f"/c/{older}/pin", {"pinned": "1", "next": "/settings"})
    assert response.status_code == 303 and response.headers["Location"] == "/settings"
    assert sidebar(chat_on) == [("Pinned", ["older chat"]), ("Today", ["newer chat"])]
    chat_on.post(f"/c/{older}/pin", {"pinned": "0", "next": "https://evil.example/"})
    assert sidebar(chat_on) == [("Today", ["newer chat", "older chat"])]


def test_archive_leaves_the_sidebar_for_the_archive_page_and_restores(chat_on: Chat) -> None:
    kept = start(chat_on, "kept chat")
    response = chat_on.post(f"/c/{kept}/archive", {"archived": "1"})
    assert response.status_code == 303 and response.headers["Location"] == "/archive"
    assert sidebar(chat_on) == []
    archive = chat_on.get("/archive").get_data(as_text=True)
    assert f'href="/c/{kept}">kept chat</a>' in archive and "Restore" in archive
    assert '<span class="badge">Archived</span>' in chat_on.get(f"/c/{kept}").get_data(as_text=True)
    assert chat_on.post(f"/c/{kept}/archive", {"archived": "0", "next": "/archive"}).status_code == 303
    assert sidebar(chat_on) == [("Today", ["kept chat"])]
    assert "Nothing is archived" in chat_on.get("/archive").get_data(as_text=True)


def test_a_folder_gives_new_chats_its_system_prompt_and_model(chat_on: Chat, upstream) -> None:  # noqa: ANN001
    refused = chat_on.post("/folders", {"name": "  ", "system_prompt": "Answer like a pirate."})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "A folder needs a name." in page
    assert "Answer like a pirate." in page  # nothing typed is lost
    response = chat_on.post(
        "/folders", {"name": "Pirates", "system_prompt": "Answer like a pirate.", "model": "pirate-model"}
    )
    assert response.status_code == 303
    folder_id = int(response.headers["Location"].rsplit("/", 1)[1])

    new_chat = chat_on.get(f"/?folder={folder_id}").get_data(as_text=True)
    assert f'<input type="hidden" name="folder_id" value="{folder_id}">' in new_chat
    conversation_id = start(chat_on, "ahoy", folder_id=str(folder_id))
    sent = upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert sent["model"] == "pirate-model"
    with chat_on.app.app_context():
        assert db.session.get(Conversation, conversation_id).folder_id == folder_id
    assert sidebar(chat_on) == [("Pirates", ["ahoy"])]
    assert f'href="/c/{conversation_id}">ahoy</a>' in chat_on.get(f"/folders/{folder_id}").get_data(as_text=True)


def test_move_between_folders_and_delete_a_folder_keeping_or_deleting_its_chats(chat_on: Chat) -> None:
    work = int(chat_on.post("/folders", {"name": "Work"}).headers["Location"].rsplit("/", 1)[1])
    home = int(chat_on.post("/folders", {"name": "Home"}).headers["Location"].rsplit("/", 1)[1])
    first, second = start(chat_on, "first"), start(chat_on, "second")
    assert "Work" in chat_on.get(f"/c/{first}/move").get_data(as_text=True)
    chat_on.post(f"/c/{first}/move", {"folder_id": str(work)})
    chat_on.post(f"/c/{second}/move", {"folder_id": str(work)})
    assert sidebar(chat_on) == [("Home", []), ("Work", ["second", "first"])]
    chat_on.post(f"/c/{second}/move", {"folder_id": str(home)})
    chat_on.post(f"/c/{first}/move", {"folder_id": ""})
    assert sidebar(chat_on) == [("Home", ["second"]), ("Work", []), ("Today", ["first"])]

    confirm = chat_on.get(f"/folders/{home}/delete").get_data(as_text=True)
    assert "It holds 1 chat." in confirm and "Delete the folder and its 1 chat" in confirm
    assert chat_on.post(f"/folders/{home}/delete", {"chats": "keep"}).status_code == 303
    assert sidebar(chat_on) == [("Work", []), ("Today", ["second", "first"])]

    chat_on.post(f"/c/{first}/move", {"folder_id": str(work)})
    assert chat_on.post(f"/folders/{work}/delete", {"chats": "maybe"}).status_code == 422
    assert chat_on.post(f"/folders/{work}/delete", {"chats": "delete"}).status_code == 303
    assert sidebar(chat_on) == [("Today", ["second"])]
    assert chat_on.get(f"/c/{first}").status_code == 404


def test_folders_and_chats_of_others_are_out_of_reach(chat_on: Chat) -> None:
    mine = int(chat_on.post("/folders", {"name": "Mine"}).headers["Location"].rsplit("/", 1)[1])
    stranger = Chat(chat_on.app)
    theirs = start(stranger, "their chat")
    assert stranger.get(f"/folders/{mine}").status_code == 404
    assert stranger.post(f"/c/{theirs}/move", {"folder_id": str(mine)}).status_code == 404
    assert stranger.post(f"/folders/{mine}/delete", {"chats": "delete"}).status_code == 404
    assert stranger.post("/conversations", {"content": "x", "folder_id": str(mine)}).status_code == 404


def test_a_temporary_chat_is_unlisted_and_deleted_with_its_images_when_the_user_moves_on(chat_on: Chat) -> None:
    kept = start(chat_on, "a kept chat")
    assert '<input type="hidden" name="temporary" value="1">' in chat_on.get("/?temporary=1").get_data(as_text=True)
    response = chat_on.post(
        "/conversations",
        {"content": "off the record", "temporary": "1", "images": (io.BytesIO(picture()), "p.png")},
        content_type="multipart/form-data",
    )
    temporary = int(re.search(r"/c/(\d+)#", response.headers["Location"]).group(1))
    chat_on.wait(int(response.headers["Location"].rsplit("message-", 1)[1]))
    page = chat_on.get(f"/c/{temporary}").get_data(as_text=True)
    assert "Temporary chat: it is not listed or searchable" in page  # it opens, again and again
    assert chat_on.get(f"/c/{temporary}").status_code == 200
    assert sidebar(chat_on) == [("Today", ["a kept chat"])]
    with chat_on.app.app_context():
        image = db.session.scalars(select(Image)).one()
        image_url, on_disk = f"/images/{image.id}", db.engine.dialect.name == "sqlite"  # PostgreSQL: in the database
    upload = os.path.join(chat_on.app.config["UPLOAD_FOLDER"], image.filename)
    assert chat_on.client.get(image_url).status_code == 200 and os.path.exists(upload) == on_disk

    chat_on.get(f"/c/{kept}")  # opening another chat ends it, images and all
    assert chat_on.get(f"/c/{temporary}").status_code == 404
    assert chat_on.client.get(image_url).status_code == 404 and not os.path.exists(upload)
    with chat_on.app.app_context():
        assert db.session.scalars(select(Image)).all() == []

    second = start(chat_on, "another secret", temporary="1")
    chat_on.get("/")  # so does starting a new one
    assert chat_on.get(f"/c/{second}").status_code == 404


def test_temporary_chats_are_swept_after_temporary_chat_hours(chat_on: Chat) -> None:
    start(chat_on, "swept away", temporary="1")
    recent = start(chat_on, "not yet", temporary="1")  # starting it ended the first one
    app = chat_on.app
    with app.app_context():
        assert db.session.scalars(select(Conversation.title)).all() == ["not yet"]
        hours = app.config["TEMPORARY_CHAT_HOURS"]
        assert conversations.purge_temporary() == 0
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == recent)
            .values(updated_at=utcnow() - timedelta(hours=hours, minutes=1))
        )
        db.session.commit()
        assert conversations.purge_temporary() == 1
        assert db.session.get(Conversation, recent) is None


def test_the_api_pins_archives_moves_and_manages_folders(chat_on: Chat, upstream) -> None:  # noqa: ANN001
    client = chat_on.app.test_client()
    headers = {"Authorization": f"Bearer {client.post('/api/v1/auth/guest').get_json()['token']}"}
    made = client.post("/api/v1/folders", json={"name": "Research", "system_prompt": "Cite sources."}, headers=headers)
    assert made.status_code == 201
    folder = made.get_json()
    assert folder["name"] == "Research" and folder["system_prompt"] == "Cite sources." and folder["model"] is None
    assert client.post("/api/v1/folders", json={"name": ""}, headers=headers).status_code == 422
    renamed = client.patch(f"/api/v1/folders/{folder['id']}", json={"name": "Reading"}, headers=headers).get_json()
    assert renamed["name"] == "Reading" and renamed["system_prompt"] == "Cite sources."
    assert [f["name"] for f in client.get("/api/v1/folders", headers=headers).get_json()["items"]] == ["Reading"]

    chat = client.post("/api/v1/conversations", json={"folder_id": folder["id"]}, headers=headers).get_json()
    assert chat["folder_id"] == folder["id"] and chat["system_prompt"] == "Cite sources."
    assert chat["pinned"] is False and chat["archived"] is False and chat["temporary"] is False
    url = f"/api/v1/conversations/{chat['id']}"
    changed = client.patch(url, json={"pinned": True, "archived": True, "folder_id": None}, headers=headers).get_json()
    assert changed["pinned"] and changed["archived"] and changed["folder_id"] is None
    assert client.patch(url, json={"pinned": None}, headers=headers).status_code == 422

    temporary = client.post("/api/v1/conversations", json={"temporary": True}, headers=headers).get_json()
    assert temporary["temporary"] is True
    listed = [c["id"] for c in client.get("/api/v1/conversations", headers=headers).get_json()["items"]]
    assert listed == [chat["id"]]  # archived chats are listed (marked), temporary ones not
    client.get(url, headers=headers)  # opening another chat ends the temporary one
    assert client.get(f"/api/v1/conversations/{temporary['id']}", headers=headers).status_code == 404

    client.patch(url, json={"folder_id": folder["id"]}, headers=headers)
    assert client.delete(f"/api/v1/folders/{folder['id']}?chats=sometimes", headers=headers).status_code == 422
    assert client.delete(f"/api/v1/folders/{folder['id']}?chats=delete", headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    with chat_on.app.app_context():
        assert db.session.scalars(select(Folder)).all() == []

    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/folders"]) and {"get", "patch", "delete"} <= set(
        paths["/api/v1/folders/{folder_id}"]
    )
    assert (
        "pinned"
        in client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["ConversationUpdate"]["properties"]
    )


def test_a_guest_signing_in_brings_folders_along_and_deleting_an_identity_takes_every_chat(app, upstream) -> None:  # noqa: ANN001
    from chatapp.accounts import delete_user
    from chatapp.models import User
    from tests.auth import sign_in, sign_up

    home = Chat(app)
    sign_up(home, "alice")
    cafe = Chat(app)  # another browser, chatting as a guest first, with a folder
    folder = int(cafe.post("/folders", {"name": "Cafe"}).headers["Location"].rsplit("/", 1)[1])
    start(cafe, "filed as a guest", folder_id=str(folder))
    assert sign_in(cafe, "alice").status_code == 303
    assert sidebar(home) == [("Cafe", ["filed as a guest"])]  # the folder came along, not lost
    assert home.get(f"/folders/{folder}").status_code == 200

    leaving = Chat(app)  # a guest with an archived chat (with an image) and a temporary one
    archived = int(
        re.search(
            r"/c/(\d+)#",
            leaving.post(
                "/conversations",
                {"content": "archived", "images": (io.BytesIO(picture()), "p.png")},
                content_type="multipart/form-data",
            ).headers["Location"],
        ).group(1)
    )
    leaving.post(f"/c/{archived}/archive", {"archived": "1"})
    start(leaving, "temporary", temporary="1")
    with app.app_context():
        files = [os.path.join(app.config["UPLOAD_FOLDER"], f) for f in db.session.scalars(select(Image.filename))]
        assert len(files) == 1 and all(os.path.exists(f) for f in files)
        guest = db.session.scalars(select(User).where(User.username.is_(None))).one()
        delete_user(guest)
        assert not any(os.path.exists(f) for f in files)  # the archived chat's image went too
        assert db.session.scalars(select(Conversation.title)).all() == ["filed as a guest"]
