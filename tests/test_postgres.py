"""The chat loop against PostgreSQL (runs when TEST_DATABASE_URL is set; CI sets it)."""

from __future__ import annotations

import pytest

from chatapp.extensions import db
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import collect

pytestmark = pytest.mark.postgres


def test_chat_loop_on_postgres(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    app = make_app(DATABASE_URL=postgres_url)
    with app.app_context():
        assert db.engine.dialect.name == "postgresql"
    chat = Chat(app)
    upstream.script(Reply(delay=0.05))
    conversation_id, answer_id = chat.start("hello postgres")
    page, _ = collect(chat.events(answer_id))
    assert page.text == "Echo: hello postgres"
    assert chat.wait(answer_id).status == "complete"

    upstream.script(Reply(tokens=[f" w{i}" for i in range(100)], delay=0.03))
    answer_id = chat.send(conversation_id, "long")
    stream = chat.events(answer_id)
    page, _ = collect(stream, stop_after=3)
    chat.post(f"/messages/{answer_id}/stop")
    page, _ = collect(stream, page=page)
    stopped = chat.wait(answer_id)
    assert stopped.status == "stopped" and page.text == " ".join(stopped.content.split())
    assert page.offset <= len(stopped.content)

    # A restarted app (same database) shows everything, and deleting removes every message.
    again = Chat(make_app(DATABASE_URL=postgres_url))
    again.client.set_cookie("session", chat.client.get_cookie("session").value)
    page = again.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Echo: hello postgres" in page and "Stopped." in page
    assert again.post(f"/c/{conversation_id}/delete").status_code == 303
    assert again.get(f"/c/{conversation_id}").status_code == 404


def test_postgres_url_from_platform_is_accepted(make_app, postgres_url: str) -> None:  # noqa: ANN001
    """Heroku and Render hand out postgres:// URLs."""
    app = make_app(DATABASE_URL=postgres_url.replace("postgresql://", "postgres://"))
    assert Chat(app).client.get("/healthz").get_json()["database"] is True


def test_api_pages_and_stats_on_postgres(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    from tests.test_api import Api

    api = Api(make_app(DATABASE_URL=postgres_url))
    ids = [api.call("POST", "/conversations", {"title": f"c{i}"}).get_json()["id"] for i in range(3)]
    page = api.call("GET", "/conversations?limit=2").get_json()
    rest = api.call("GET", f"/conversations?limit=2&cursor={page['next_cursor']}").get_json()
    assert [c["id"] for c in page["items"] + rest["items"]] == ids[::-1] and rest["next_cursor"] is None
    sent = api.call("POST", f"/conversations/{ids[0]}/messages", {"content": "hi"}).get_json()
    api.wait(sent["assistant_message"]["id"])
    stats = api.call("GET", "/stats").get_json()
    assert stats["conversations"] == 3 and stats["messages"] == 2 and stats["most_used_model"] == "fake-model"
