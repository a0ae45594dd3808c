"""Answers whose process died are marked interrupted, keeping their text; shutdown does the same."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta

import httpx

from chatapp.extensions import db
from chatapp.models import Conversation, Message, User, utcnow
from tests.clients import wait_until
from tests.conftest import Chat, wait_for_status
from tests.fake_upstream import Reply
from tests.sse import Event, Page, collect, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stored_text(path) -> str:  # noqa: ANN001
    """The crashing process's answer as its database file holds it (read-only, beside the live writer)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT content FROM message WHERE id = 2").fetchone()
    return row[0] if row else ""


def test_startup_marks_stale_answers_interrupted(make_app) -> None:  # noqa: ANN001
    app = make_app()
    with app.app_context():
        user = User()
        db.session.add(user)
        db.session.flush()
        conversation = Conversation(user_id=user.id)
        db.session.add(conversation)
        db.session.flush()
        answer = Message(
            conversation_id=conversation.id,
            role="assistant",
            content="half an ans",
            status="streaming",
            updated_at=utcnow() - timedelta(minutes=5),
        )
        db.session.add(answer)
        db.session.commit()
        answer_id = answer.id

    restarted = make_app()
    message = wait_for_status(restarted, answer_id, timeout=0)
    assert message.status == "interrupted"
    assert message.content == "half an ans"


def test_killed_process_loses_at_most_a_flush(tmp_path, upstream) -> None:  # noqa: ANN001
    """A real crash: SIGKILL the serving process mid-answer, then start again on the same database."""
    upstream.script(Reply(tokens=[f" t{i}" for i in range(200)], delay=0.02))
    path = tmp_path / "crash.sqlite3"
    database = f"sqlite:///{path}"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "k",
        "CHAT_MODEL": "fake-model",
        "SECRET_KEY": "crash-test",
        "PYTHONPATH": ROOT,
    }
    script = textwrap.dedent(
        """
        import sys
        from werkzeug.serving import make_server
        from chatapp import create_app
        server = make_server("127.0.0.1", 0, create_app(), threaded=True)
        print(server.server_port, flush=True)
        server.serve_forever()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = int(process.stdout.readline())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
            response = client.post("/conversations", data={"csrf_token": token, "content": "go"})
            assert response.status_code == 303
            with client.stream("GET", "/messages/2/events") as stream:
                page = Page()
                for event in parse(stream.iter_bytes()):
                    if isinstance(event, Event):
                        page.apply(event)
                    if page.offset > 150:
                        break
        flushed = wait_until(lambda: len(text := stored_text(path)) >= page.offset and text, "a flush stored it")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    from chatapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database,
            "SECRET_KEY": "x",
            "STALE_AFTER": 0.001,  # the process is dead: its last heartbeat is already too old
            "OPENAI_BASE_URL": upstream.base_url,
        }
    )
    try:
        message = wait_for_status(app, 2, timeout=0)
        assert message.status == "interrupted"
        # Everything flushed before the kill (all the viewer saw, at least) survived it.
        assert message.content.startswith(flushed) and len(flushed) >= page.offset
        assert " ".join(message.content.split()).startswith(page.text)
    finally:
        app.extensions["chatapp.generator"].close()


def test_shutdown_marks_running_answers_interrupted(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=[f" t{i}" for i in range(100)], delay=0.02))
    conversation_id, answer_id = chat.start("go")
    collect(chat.events(answer_id), stop_after=1)  # the answer has begun
    chat.app.extensions["chatapp.generator"].close()
    message = chat.wait(answer_id)
    assert message.status == "interrupted"
    assert message.content.startswith(" t0")
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Interrupted." in page and f"/messages/{answer_id}/retry" in page
