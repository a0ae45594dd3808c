"""Fixtures: a fresh database per test, a fake OpenAI-compatible upstream over real HTTP, clients."""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from chatapp import create_app
from chatapp.extensions import db
from chatapp.models import Message
from tests.fake_upstream import FakeUpstream
from tests.sse import Stream

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
REDIS_URL = os.environ.get("TEST_REDIS_URL")
REQUIRE_ALL = bool(os.environ.get("CHATAPP_REQUIRE_ALL_TESTS"))


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is not configured; in CI (CHATAPP_REQUIRE_ALL_TESTS) fail instead."""
    if REQUIRE_ALL:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake model server, with an empty script and no recorded requests."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def make_app(tmp_path, upstream):  # noqa: ANN001, ANN201
    """Build apps on this test's database (call twice for two processes' worth of app)."""
    apps = []
    database_url = f"sqlite:///{tmp_path / 'chat.sqlite3'}"

    def build(**overrides):  # noqa: ANN202
        config = {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "DATABASE_URL": database_url,
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "test-key",
            "CHAT_MODEL": "fake-model",
            "REDIS_URL": None,
            "UPSTREAM_TIMEOUT": 5.0,
            "UPSTREAM_RETRIES": 0,  # one scripted error is one failed answer; tests/test_resilience.py retries
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
        }
        config.update(overrides)
        app = create_app(config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["chatapp.generator"].close()
        with app.app_context():
            db.engine.dispose()  # close pooled connections now, not at interpreter exit


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    return make_app()


class Chat:
    """A browser without JavaScript: a test client that keeps cookies and knows the CSRF token."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.client = app.test_client()
        self.token = ""

    def get(self, url: str, **kwargs):  # noqa: ANN003, ANN201
        response = self.client.get(url, **kwargs)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return response

    def post(self, url: str, data: dict | None = None, **kwargs):  # noqa: ANN003, ANN201
        if not self.token:
            self.get("/")
        return self.client.post(url, data={"csrf_token": self.token, **(data or {})}, **kwargs)

    def start(self, content: str) -> tuple[int, int]:
        """Open a conversation with ``content``; returns (conversation id, answer id)."""
        response = self.post("/conversations", {"content": content})
        assert response.status_code == 303, response.get_data(as_text=True)
        found = re.search(r"/c/(\d+)#message-(\d+)$", response.headers["Location"])
        return int(found.group(1)), int(found.group(2))

    def send(self, conversation_id: int, content: str) -> int:
        """Send into a conversation; returns the answer's id."""
        response = self.post(f"/c/{conversation_id}/messages", {"content": content})
        assert response.status_code == 303, response.get_data(as_text=True)
        return int(response.headers["Location"].rsplit("message-", 1)[1])

    def events(self, message_id: int, query: str = "", **headers: str) -> Stream:
        """Open the answer's SSE stream (read in its own thread, like a browser's connection)."""
        url = f"/messages/{message_id}/events{query}"
        return Stream(lambda: self.client.get(url, headers=headers, buffered=False))

    def latest_answer(self, conversation_id: int) -> int:
        page = self.get(f"/c/{conversation_id}").get_data(as_text=True)
        return int(re.findall(r'id="message-(\d+)" class="message assistant"', page)[-1])

    def wait(self, message_id: int, timeout: float = 10.0) -> Message:
        """Wait until the answer has ended; returns it as stored."""
        return wait_for_status(self.app, message_id, timeout=timeout)


def wait_for_status(app, message_id: int, statuses=None, timeout: float = 10.0) -> Message:  # noqa: ANN001
    """Poll the database until the message leaves ``streaming`` (or reaches one of ``statuses``)."""
    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            message = db.session.get(Message, message_id)
            db.session.expunge_all()
        done = message.status in statuses if statuses else message.status != "streaming"
        if done or time.monotonic() > deadline:
            return message
        time.sleep(0.02)


@pytest.fixture
def chat(app) -> Chat:  # noqa: ANN001
    return Chat(app)


@pytest.fixture
def live_server(app):  # noqa: ANN001, ANN201
    """The app served over real HTTP on 127.0.0.1 (threaded, like a gthread worker)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A real OpenID Connect provider process (oidc-provider-mock) on 127.0.0.1; its issuer URL."""
    from tests.auth import oidc_provider

    with oidc_provider() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        skip_or_fail("set TEST_REDIS_URL to run the Redis tests")
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"chatapp-test-{secrets.token_hex(4)}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    if not POSTGRES_URL:
        skip_or_fail("set TEST_DATABASE_URL to run the PostgreSQL tests")
    import psycopg

    name = f"chatapp_test_{secrets.token_hex(4)}"
    admin_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
