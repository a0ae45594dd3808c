"""The server log: JSON lines with request ids and the ids of what they concern; no message text unless asked."""

from __future__ import annotations

import json
import os
import re
import subprocess

import httpx
import pytest

from chatapp.config import ConfigError
from tests.clients import ApiClient, wait_until
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import collect
from tests.test_gunicorn import ROOT, free_port, procfile_command

SECRET = "my secret plans for tuesday"


def json_lines(err: str) -> list[dict]:
    """Every line of the captured stderr, parsed (each must be JSON)."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_and_ids_but_no_text(make_app, upstream, capsys) -> None:  # noqa: ANN001
    app = make_app(LOG_FORMAT="json")
    chat = Chat(app)
    chat.get("/")
    capsys.readouterr()
    upstream.script(Reply(tokens=["Noted", ": ", SECRET], delay=0.01))
    response = chat.post("/conversations", {"content": SECRET}, headers={"X-Request-ID": "req-42.a"})
    assert response.headers["X-Request-ID"] == "req-42.a"
    conversation_id, answer_id = (int(n) for n in re.search(r"/c/(\d+)#message-(\d+)", response.location).groups())
    chat.wait(answer_id)
    err = capsys.readouterr().err
    assert SECRET not in err
    lines = json_lines(err)

    request = next(line for line in lines if line["logger"] == "chatapp.requests")
    assert request["request_id"] == "req-42.a" and request["route"] == "/conversations" and request["status"] == 303
    assert request["method"] == "POST" and request["duration_ms"] >= 0 and request["level"] == "INFO"
    user_id = request["user_id"]
    assert user_id and "time" in request

    answers = [line for line in lines if line["logger"] == "chatapp.answers" and line.get("message_id") == answer_id]
    assert [line["event"] for line in answers] == ["answer.started", "answer.first_token", "answer.complete"]
    for line in answers:  # logged from the request and from the answer's own thread alike
        assert line["request_id"] == "req-42.a"
        assert line["user_id"] == user_id and line["conversation_id"] == conversation_id
    started, first, finished = answers
    assert started["model"] == "fake-model" and started["prompt_tokens"] > 0
    assert 0 <= first["ttft_ms"] <= finished["duration_ms"]
    assert finished["status"] == "complete" and finished["reason"] == "stop"
    assert finished["characters"] == len("Noted: " + SECRET) and finished["completion_tokens"] > 0


def test_stops_and_errors_are_logged_once_with_their_reason(make_app, upstream, capsys) -> None:  # noqa: ANN001
    app = make_app(LOG_FORMAT="json")
    chat = Chat(app)
    upstream.script(Reply(tokens=[f" w{i}" for i in range(200)], delay=0.02))
    conversation_id, answer_id = chat.start("long one")
    collect(chat.events(answer_id), stop_after=2)
    chat.post(f"/messages/{answer_id}/stop")
    chat.wait(answer_id)
    upstream.script(Reply(status=500))
    failed_id = chat.send(conversation_id, "fail")
    chat.wait(failed_id)
    lines = json_lines(capsys.readouterr().err)

    ends = [line for line in lines if line["logger"] == "chatapp.answers" and line["event"] not in ANSWER_STEPS]
    assert [(line["message_id"], line["event"]) for line in ends] == [
        (answer_id, "answer.stopped"),
        (failed_id, "answer.error"),
    ]
    stopped, failed = ends
    assert stopped["reason"] == "stopped" and stopped["level"] == "INFO" and stopped["ttft_ms"] is not None
    assert (
        failed["level"] == "WARNING" and failed["reason"] == "The model server had an error (500). Retry in a moment."
    )
    assert failed["ttft_ms"] is None
    # What the provider logs from the answer's thread carries the answer's ids too.
    upstream_line = next(
        line for line in lines if line["logger"] == "chatapp.providers.openai_compat" and "500" in line["message"]
    )
    assert upstream_line["message_id"] == failed_id and upstream_line["conversation_id"] == conversation_id
    assert upstream_line["request_id"] == failed["request_id"]


ANSWER_STEPS = {"answer.started", "answer.first_token"}


def test_request_ids_are_made_when_missing_or_unusable(make_app, capsys) -> None:  # noqa: ANN001
    client = make_app(LOG_FORMAT="json").test_client()
    made = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    for bad in ("semi;colon", "x" * 200, "spaces are not ids"):
        returned = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert returned != bad and re.fullmatch(r"[0-9a-f]{32}", returned)
    ids = [line["request_id"] for line in json_lines(capsys.readouterr().err) if line["logger"] == "chatapp.requests"]
    assert ids[0] == made and len(set(ids)) == 4


def test_api_requests_carry_the_tokens_identity(make_app, upstream, capsys) -> None:  # noqa: ANN001
    app = make_app(LOG_FORMAT="json")
    api = ApiClient(app)
    capsys.readouterr()
    created = api.call("POST", "/conversations", {"title": "x"}).get_json()
    api.call("GET", f"/conversations/{created['id']}")
    lines = [line for line in json_lines(capsys.readouterr().err) if line["logger"] == "chatapp.requests"]
    assert len({line["user_id"] for line in lines}) == 1 and lines[0]["user_id"]
    assert (
        lines[1]["conversation_id"] == created["id"]
        and lines[1]["route"] == "/api/v1/conversations/<int:conversation_id>"
    )


def test_message_text_is_logged_only_when_asked(make_app, upstream, capsys) -> None:  # noqa: ANN001
    app = make_app(LOG_FORMAT="text", LOG_CONTENT=True)
    chat = Chat(app)
    chat.get("/")
    capsys.readouterr()
    upstream.script(Reply(tokens=["Sure: ", SECRET]))
    _, answer_id = chat.start(SECRET)
    chat.wait(answer_id)
    lines = [line for line in capsys.readouterr().err.splitlines() if "chatapp.answers" in line]
    started = next(line for line in lines if "answer started" in line)
    finished = next(line for line in lines if "answer complete" in line)
    assert f"prompt='{SECRET}'" in started
    assert f"content='Sure: {SECRET}'" in finished
    assert f"message_id={answer_id}" in finished and "request_id='" in finished


@pytest.mark.parametrize("log_content", [False, True])
def test_database_errors_do_not_quote_message_text(make_app, log_content) -> None:  # noqa: ANN001
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from chatapp.extensions import db

    app = make_app(LOG_CONTENT=log_content)
    with app.app_context(), pytest.raises(OperationalError) as failed:
        db.session.execute(text("UPDATE no_such_table SET content = :content"), {"content": SECRET})
    assert (SECRET in str(failed.value)) is log_content


def test_json_by_default_in_production(make_app, capsys) -> None:  # noqa: ANN001
    make_app(CHATAPP_ENV="production").test_client().get("/healthz")
    lines = json_lines(capsys.readouterr().err)
    assert any(line["logger"] == "chatapp.requests" and line["route"] == "/healthz" for line in lines)


def test_text_by_default_in_development(make_app, capsys) -> None:  # noqa: ANN001
    make_app().test_client().get("/healthz")
    line = next(line for line in capsys.readouterr().err.splitlines() if "chatapp.requests" in line)
    assert " INFO chatapp.requests: GET /healthz 200 " in line and "route='/healthz'" in line


def test_an_unknown_log_format_stops_start_up(make_app) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="LOG_FORMAT must be json or text"):
        make_app(LOG_FORMAT="xml")


def test_every_line_is_json_under_the_procfile(tmp_path, upstream) -> None:  # noqa: ANN001
    """The production command (gunicorn's own lines included) writes nothing but JSON lines to stderr."""
    port = free_port()
    env = {
        **os.environ,
        "SECRET_KEY": "gunicorn-test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite3'}",
        "PYTHONPATH": str(ROOT),
        "SECURE_COOKIES": "0",
        "WEB_CONCURRENCY": "1",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "k",
    }
    env.pop("LOG_FORMAT", None)
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen(procfile_command(port), cwd=ROOT, env=env, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"

        def served() -> bool:
            try:
                return httpx.get(f"{url}/healthz", headers={"X-Request-ID": "from-the-proxy"}).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(served, "gunicorn serves", timeout=30)
    finally:
        process.terminate()
        process.wait(20)
    lines = json_lines(log_path.read_text())
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    assert any(line["logger"] == "chatapp.requests" and line["request_id"] == "from-the-proxy" for line in lines)
