"""README claims, each shown through the real parts: health, recovery, Stop, Continue, direct streams,
the WebSocket's unsubscribe, pings and order, and the settings SYSTEM_PROMPT, AUTO_MIGRATE, MAX_FORM_BYTES."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from urllib.parse import urlencode

import psycopg
import pytest
from sqlalchemy import inspect

from chatapp.extensions import db
from chatapp.identity import SESSION_USER
from chatapp.models import Conversation, Message, utcnow
from tests.clients import ApiClient, WebSocket, ndjson, serve, stored, wait_until
from tests.conftest import POSTGRES_URL, Chat
from tests.fake_upstream import Reply
from tests.sse import Event, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = [f" w{i}" for i in range(20)]


def owner_of(chat: Chat) -> str:
    """The guest identity behind a page client's cookie (made by its first action that needs one)."""
    chat.post("/settings/tokens", {"name": "makes the guest"})
    with chat.client.session_transaction() as session:
        return session[SESSION_USER]


def dead_answer(app, user_id: str, content: str) -> int:  # noqa: ANN001
    """A question and an answer whose generator died five minutes ago (no heartbeat since), as stored."""
    with app.app_context():
        conversation = Conversation(user_id=user_id)
        db.session.add(conversation)
        db.session.flush()
        question = Message(conversation_id=conversation.id, role="user", content="tell me", status="complete")
        db.session.add(question)
        db.session.flush()
        answer = Message(
            conversation_id=conversation.id,
            parent_id=question.id,
            role="assistant",
            content=content,
            status="streaming",
            model="fake-model",
            provider="openai",
            updated_at=utcnow() - timedelta(minutes=5),
        )
        db.session.add(answer)
        db.session.flush()
        conversation.active_leaf_id = answer.id
        db.session.commit()
        return answer.id


# -- health and recovery ---------------------------------------------------------------------------------
@pytest.mark.postgres
def test_healthz_answers_503_while_the_database_is_unreachable(make_app, postgres_url: str) -> None:  # noqa: ANN001
    # A long flush interval keeps this process's flusher (and its sweep) from touching the dropped database.
    client = make_app(DATABASE_URL=postgres_url, FLUSH_INTERVAL=60.0).test_client()
    assert client.get("/healthz").status_code == 200
    admin_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # the app's connections are cut too

    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["database"]) == ("degraded", False)
    assert body["provider"] == "openai"  # the rest of the report is still there

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    assert client.get("/healthz").status_code == 200  # reachable again: healthy again, no restart


def test_recovery_sweep_marks_stale_answers_interrupted_without_a_restart(app, chat: Chat) -> None:  # noqa: ANN001
    user_id = owner_of(chat)  # the app's first request starts its flusher, which also sweeps
    first = dead_answer(app, user_id, "cut off by a dead worker")
    wait_until(lambda: stored(app, first).status == "interrupted", "a sweep marked the first answer interrupted")
    # Stored after that sweep: only a later one can find it, so the sweep repeats (every 5 s).
    second = dead_answer(app, user_id, "cut off later")
    message = wait_until(
        lambda: (m := stored(app, second)).status == "interrupted" and m, "a later sweep marked it too", timeout=15
    )
    assert message.content == "cut off later"
    assert "stopped while this answer was being written" in message.error


def test_stop_keeps_the_stored_text_when_the_generator_is_gone(make_app) -> None:  # noqa: ANN001
    # No sweep in this process during the test: only Stop can end the dead answer.
    app = make_app(FLUSH_INTERVAL=60.0)
    chat = Chat(app)
    answer_id = dead_answer(app, owner_of(chat), "half an ans")
    response = chat.post(f"/messages/{answer_id}/stop")
    assert response.status_code == 303
    message = stored(app, answer_id)
    assert (message.status, message.content, message.finish_reason) == ("stopped", "half an ans", "stopped")
    page = chat.get(response.headers["Location"]).get_data(as_text=True)
    assert "Stopped." in page and f"/messages/{answer_id}/continue" in page

    api_answer = dead_answer(app, owner_of(chat), "another half")
    token = re.search(r'id="new-token">([^<]+)<', chat.post("/settings/tokens", {}).get_data(as_text=True)).group(1)
    stopped = ApiClient(app, token).call("POST", f"/messages/{api_answer}/stop").get_json()
    assert (stopped["status"], stopped["content"]) == ("stopped", "another half")


def test_continue_an_interrupted_answer_after_a_restart(make_app, upstream) -> None:  # noqa: ANN001
    before = Chat(make_app())
    reply = Reply(tokens=WORDS, pause_after=4)
    upstream.script(reply)
    conversation_id, answer_id = before.start("tell me")
    partial = "".join(WORDS[:4])
    wait_until(lambda: stored(before.app, answer_id).content == partial, "the first words were flushed")
    before.app.extensions["chatapp.generator"].close()  # the server goes down mid-answer
    reply.resume.set()
    assert stored(before.app, answer_id).status == "interrupted"

    after = Chat(make_app())  # started again on the same database, the same visitor
    after.client.set_cookie("session", before.client.get_cookie("session").value)
    page = after.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Interrupted." in page and f"/messages/{answer_id}/continue" in page
    upstream.script(Reply(tokens=[" and", " the", " rest."]))
    response = after.post(f"/messages/{answer_id}/continue")
    assert response.headers["Location"].endswith(f"#message-{answer_id}")  # the same message goes on
    message = after.wait(answer_id)
    assert (message.status, message.content) == ("complete", partial + " and the rest.")
    sent = upstream.requests[-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": partial}
    assert sent[-1]["role"] == "user" and "Continue" in sent[-1]["content"]


# -- streaming straight from send, edit and retry ---------------------------------------------------------
def read_direct(stream, kind: str, reply: Reply) -> tuple[str, dict]:  # noqa: ANN001
    """Read a direct stream to its end, letting the paused answer go on at its first delta: (text, final message)."""
    if kind == "ndjson":
        assert stream.headers["Content-Type"].startswith("application/x-ndjson")
        items = ((line["type"], line) for line in ndjson(stream))
    else:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        items = ((e.event, json.loads(e.data)) for e in parse(stream) if isinstance(e, Event))
    text, kinds, final = "", [], None
    for kind_of, data in items:
        kinds.append(kind_of)
        if kind_of == "delta":
            text += data["content"]
            reply.resume.set()
        elif kind_of == "done":
            final = data["message"] if kind == "ndjson" else data
    assert kinds[0] == "delta" and kinds[-1] == "done", kinds
    return text, final


def test_send_edit_and_retry_stream_directly_as_sse_or_ndjson(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation_id = api.call("POST", "/conversations", {}).get_json()["id"]
    accept = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}

    def direct(kind: str, path: str, body: dict | None) -> tuple[str, dict]:
        # Paused after a word: the stream must be live (deltas, then done), not just the finished answer.
        reply = Reply(pause_after=1)
        upstream.script(reply)
        return read_direct(api.stream("POST", path, body, Accept=accept[kind]), kind, reply)

    text, final = direct("ndjson", f"/conversations/{conversation_id}/messages", {"content": "first question"})
    assert text == final["content"] == "Echo: first question" and final["status"] == "complete"
    question_id = final["parent_id"]
    for kind in ("sse", "ndjson"):
        text, final = direct(kind, f"/messages/{question_id}/edit", {"content": f"edited for {kind}"})
        assert text == final["content"] == f"Echo: edited for {kind}" and final["status"] == "complete"
        edited_answer = final["id"]
        text, final = direct(kind, f"/messages/{edited_answer}/retry", None)
        assert text == final["content"] == f"Echo: edited for {kind}"
        assert final["id"] != edited_answer and final["sibling_count"] == 2


# -- WebSocket ---------------------------------------------------------------------------------------------
def page_token(chat: Chat) -> str:
    """An API token for the page visitor's identity, made on Settings."""
    created = chat.post("/settings/tokens", {"name": "socket"}).get_data(as_text=True)
    return re.search(r'id="new-token">([^<]+)<', created).group(1)


def test_websocket_send_announces_the_user_message_before_the_answer(app, upstream) -> None:  # noqa: ANN001
    reply = Reply(pause_after=1)
    upstream.script(reply)
    with serve(app) as base:
        ws = WebSocket(base, ApiClient(app).token)
        ws.send(type="send_message", request_id="q", conversation_id=None, content="order please")
        ws.until(lambda m: m["type"] == "chunk")
        reply.resume.set()
        ws.until(lambda m: m["type"] == "done")
        ws.close()
    mine = [m for m in ws.received if m.get("request_id") == "q"]
    user, answer = mine[0], mine[1]
    assert (user["type"], user["message"]["role"], user["message"]["content"]) == (
        "message_created",
        "user",
        "order please",
    )
    assert (answer["type"], answer["message"]["role"]) == ("message_created", "assistant")
    assert answer["message"]["parent_id"] == user["message"]["id"]
    rest = [m["type"] for m in mine[2:]]
    assert rest[-1] == "done" and set(rest[:-1]) == {"chunk"}


def test_websocket_unsubscribe_ends_the_chunks(app, upstream) -> None:  # noqa: ANN001
    page = Chat(app)
    conversation_id, first = page.start("hello")
    page.wait(first)
    token = page_token(page)
    with serve(app) as base:
        leaving, staying = WebSocket(base, token), WebSocket(base, token)
        for ws in (leaving, staying):
            ws.send(type="subscribe", conversation_id=conversation_id)
            ws.send(type="ping", request_id="subscribed")  # answered after the subscribe was handled
            ws.until(lambda m: m["type"] == "pong")

        reply = Reply(tokens=WORDS, pause_after=3, delay=0.01)
        upstream.script(reply)
        answer_id = page.send(conversation_id, "go on")
        for ws in (leaving, staying):
            ws.until(lambda m: m["type"] == "chunk" and m["message_id"] == answer_id)
        leaving.send(type="unsubscribe", conversation_id=conversation_id)
        leaving.send(type="ping", request_id="unsubscribed")
        leaving.until(lambda m: m["type"] == "pong")
        seen = len(leaving.received)

        reply.resume.set()
        done = staying.until(lambda m: m["type"] == "done")
        assert done["message"]["content"] == "".join(WORDS)
        # Everything the server sent the leaving socket before answering this ping has arrived.
        leaving.send(type="ping", request_id="after")
        leaving.until(lambda m: m["type"] == "pong" and m["request_id"] == "after")
        leaving.close()
        staying.close()
    assert [m["type"] for m in leaving.received[seen:]] == ["pong"]  # no chunk, no done after unsubscribe


def test_server_pings_and_drops_a_socket_that_stops_answering(make_app) -> None:  # noqa: ANN001
    assert make_app().config["SOCK_SERVER_OPTIONS"]["ping_interval"] == 25  # the README's 25 s by default
    # Shortened for the test; 1 s leaves a loaded machine time to answer each ping before the next.
    app = make_app(SOCK_SERVER_OPTIONS={"ping_interval": 1.0})
    token = ApiClient(app).token
    with serve(app) as base:
        silent = WebSocket(base, token, answer_pings=False)
        with pytest.raises(ConnectionError):
            silent.until(lambda m: False, timeout=30)
        assert silent.pings >= 1 and silent.closed is not None and silent.closed.code == 1008

        alive = WebSocket(base, token)  # answers every ping (as browsers do): kept open

        def pinged(times: int) -> bool:
            alive.receive(0.2)  # answers a ping that arrives
            return alive.pings >= times

        # A second ping comes only if the first was answered (else the server closes): pings repeat and
        # answering them keeps the socket open.
        wait_until(lambda: pinged(2), "two pings arrived", timeout=30)
        alive.send(type="ping", request_id="still-open")
        assert alive.until(lambda m: m["type"] == "pong")["request_id"] == "still-open"
        alive.close()


# -- configuration ----------------------------------------------------------------------------------------
def test_empty_system_prompt_sends_no_system_message(make_app, upstream, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SYSTEM_PROMPT", "")  # as an operator sets it: SYSTEM_PROMPT= in the environment
    chat = Chat(make_app())
    _, answer_id = chat.start("no system here")
    assert chat.wait(answer_id).status == "complete"
    assert upstream.requests[-1]["messages"] == [{"role": "user", "content": "no system here"}]


def test_auto_migrate_off_leaves_the_schema_to_the_documented_command(  # noqa: ANN001
    make_app, upstream, tmp_path, monkeypatch
) -> None:
    url = f"sqlite:///{tmp_path / 'manual.sqlite3'}"
    monkeypatch.setenv("AUTO_MIGRATE", "0")
    app = make_app(DATABASE_URL=url)
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []

    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "x", "OPENAI_BASE_URL": upstream.base_url}
    env["PYTHONPATH"] = ROOT
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"]  # `flask --app wsgi db upgrade`
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with app.app_context():
        assert {"conversation", "message", "alembic_version"} <= set(inspect(db.engine).get_table_names())

    chat = Chat(make_app(DATABASE_URL=url))
    _, answer_id = chat.start("works now")
    assert chat.wait(answer_id).content == "Echo: works now"


def test_max_form_bytes_is_the_largest_body_accepted(make_app, upstream) -> None:  # noqa: ANN001
    limit = 2000
    app = make_app(MAX_FORM_BYTES=limit)
    chat = Chat(app)
    _, answer_id = chat.start("to be edited")
    question_id = chat.wait(answer_id).parent_id

    prefix = urlencode({"csrf_token": chat.token}) + "&content="

    def edit(size: int):  # noqa: ANN202
        body = (prefix + "x" * (size - len(prefix))).encode()
        assert len(body) == size
        return chat.client.post(
            f"/messages/{question_id}/edit", data=body, content_type="application/x-www-form-urlencoded"
        )

    assert edit(limit + 1).status_code == 413
    accepted = edit(limit)
    assert accepted.status_code == 303
    new_answer = int(accepted.headers["Location"].rsplit("message-", 1)[1])
    assert len(stored(app, stored(app, new_answer).parent_id).content) == limit - len(prefix)
    chat.wait(new_answer)

    api = ApiClient(app)
    conversation_id = api.call("POST", "/conversations", {}).get_json()["id"]

    def patch(size: int):  # noqa: ANN202
        body = json.dumps({"title": "renamed"})
        body += " " * (size - len(body))  # whitespace after the JSON value: valid, and counted
        return api.client.patch(
            f"/api/v1/conversations/{conversation_id}", data=body, content_type="application/json", headers=api.headers
        )

    over = patch(limit + 1)
    assert over.status_code == 413 and over.get_json()["error"]["code"] == "too_large"
    at_limit = patch(limit)
    assert at_limit.status_code == 200 and at_limit.get_json()["title"] == "renamed"
