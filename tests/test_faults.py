"""Faults of the parts chatapp depends on, with servers this test starts and restarts itself.

Never the shared Redis or PostgreSQL: a ``redis-server`` on a free port, and a PostgreSQL cluster made
with ``initdb`` in a temporary folder (run as the ``postgres`` user when the tests run as root, since
PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.clients import ApiClient, serve, stored, wait_until
from tests.conftest import skip_or_fail
from tests.fake_upstream import Reply
from tests.sse import Event, parse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` of this test's own, without persistence: a restart loses everything it held."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server") or skip_or_fail("no redis-server on PATH (apt-get install redis)")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start and wait until it answers."""
        import redis

        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen([*command, "--dir", str(self.folder)], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), "redis-server answers", timeout=10)
        client.close()

    def stop(self) -> None:
        """Stop it (its data is gone)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _pings(client) -> bool:  # noqa: ANN001
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:  # noqa: ANN001
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Answer:
    """One API client's answer, read from its SSE stream over real HTTP (and resumed by Last-Event-ID)."""

    def __init__(self, base_url: str, token: str, answer_id: int) -> None:
        self.url = f"{base_url}/api/v1/messages/{answer_id}/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.id, self.text, self.last_id, self.final, self.connections = answer_id, "", None, None, 0
        self.left = False

    def read(self, leave: threading.Event | None = None) -> None:
        """Read until the end, or until a delta comes after ``leave`` is set (then disconnect)."""
        headers = {**self.headers, **({"Last-Event-ID": self.last_id} if self.last_id else {})}
        self.connections += 1
        with httpx.stream("GET", self.url, headers=headers, timeout=30) as response:
            assert response.status_code == 200
            for event in parse(response.iter_bytes()):
                if not isinstance(event, Event):
                    continue
                if event.event == "delta":
                    self.text += json.loads(event.data)["content"]
                    self.last_id = event.id
                    if leave is not None and leave.is_set():
                        return
                elif event.event in ("done", "error"):
                    self.final = json.loads(event.data)
                    return


def send(base_url: str, token: str, content: str) -> int:
    """A new conversation with ``content`` sent through the API; the answer's id."""
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{base_url}/api/v1/conversations", json={}, headers=headers, timeout=10).json()
    sent = httpx.post(
        f"{base_url}/api/v1/conversations/{conversation['id']}/messages",
        json={"content": content},
        headers=headers,
        timeout=10,
    )
    assert sent.status_code == 202, sent.text
    return sent.json()["assistant_message"]["id"]


def test_redis_restarted_while_50_answers_stream(own_redis: RedisServer, make_app, upstream) -> None:  # noqa: ANN001
    """Answers go on, every viewer resumes (staying, or reconnecting during or after the outage), nothing lost."""
    import redis

    prefix = "chatapp-faults"
    app = make_app(
        REDIS_URL=own_redis.url,
        REDIS_PREFIX=prefix,
        ANSWER_LIMITS="off",
        GUEST_LIMIT_PER_IP="off",
        UPSTREAM_TIMEOUT=60.0,  # the answers are held (below) until every one is being watched
    )
    streams = 50
    go = threading.Event()  # every answer holds after its first words until all 50 are being watched
    upstream.script(*[Reply(delay=0.03, pause_after=4, resume=go) for _ in range(streams)])  # echoes: 100 words
    contents = [" ".join(f"q{i}w{j}" for j in range(100)) for i in range(streams)]
    leave, down, back = threading.Event(), threading.Event(), threading.Event()

    with serve(app) as base_url:
        token = httpx.post(f"{base_url}/api/v1/auth/guest", timeout=10).json()["token"]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # several senders at once, as 50 people would
            answers = list(pool.map(lambda content: Answer(base_url, token, send(base_url, token, content)), contents))
        sending = time.monotonic() - started

        def viewer(i: int, answer: Answer) -> None:
            group = i % 3  # 0: stays connected; 1: leaves, reconnects while Redis is down; 2: once it is back
            if group == 0:
                answer.read()
                return
            answer.read(leave)
            answer.left = True
            (down if group == 1 else back).wait(20)
            if answer.final is None:
                answer.read()

        threads = [threading.Thread(target=viewer, args=(i, a)) for i, a in enumerate(answers)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: all(a.text for a in answers), f"every answer is streaming (sent in {sending:.1f} s)", timeout=15
        )

        go.set()  # about 3 s of words to go
        leave.set()
        wait_until(lambda: all(a.left for i, a in enumerate(answers) if i % 3), "two viewers in three have left")
        own_redis.stop()
        down.set()
        time.sleep(1.0)  # answers go on meanwhile: their deltas wait in the app
        own_redis.start()
        back.set()
        still = sum(stored(app, a.id).status == "streaming" for a in answers)
        assert still >= streams // 2, f"only {still} answers were still being written when Redis came back"
        for thread in threads:
            thread.join(30)

        for i, (answer, content) in enumerate(zip(answers, contents, strict=True)):
            assert answer.connections == (1 if i % 3 == 0 else 2), answer.url
            assert answer.final is not None, f"{answer.url} did not end"
            assert answer.final["status"] == "complete"
            assert answer.final["content"] == f"Echo: {content}"
            n = len(os.path.commonprefix([answer.text, answer.final["content"]]))
            assert answer.text == answer.final["content"], (
                i,
                answer.text[n - 50 : n + 80],
                answer.final["content"][n - 50 : n + 80],
            )

        # Stop works again once the app listens for stops on the new Redis.
        client = redis.Redis.from_url(own_redis.url)
        wait_until(lambda: client.pubsub_numsub(f"{prefix}:stop")[0][1] >= 1, "the app listens for stops again")
        client.close()
        upstream.script(Reply(delay=0.02))
        answer = Answer(base_url, token, send(base_url, token, " ".join(f"long{j}" for j in range(400))))
        stop_now = threading.Event()
        stop_now.set()
        answer.read(stop_now)  # the first delta has come
        stopped = httpx.post(f"{answer.url.rsplit('/', 1)[0]}/stop", headers=answer.headers, timeout=10)
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        assert answer.text in stopped.json()["content"] and "long399" not in stopped.json()["content"]


# -- PostgreSQL ---------------------------------------------------------------------------------------------
class PostgresCluster:
    """A PostgreSQL cluster of this test's own, made with ``initdb`` in a temporary folder."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if not initdb:
            skip_or_fail("no initdb (apt-get install postgresql)")
        self.bin = Path(initdb).parent
        self.as_user: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="chatapp-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            if not shutil.which("runuser"):
                skip_or_fail("running as root without runuser: cannot start PostgreSQL as the postgres user")
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.data = str(self.folder / "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.bin / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{program} failed: {result.stdout}{result.stderr}"

    def start(self) -> None:
        """Start it on 127.0.0.1 and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", str(self.folder / "log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: open connections are cut)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except AssertionError:  # not running, or pg_ctl failed: make sure no postmaster outlives the test
            with contextlib.suppress(OSError, ValueError):
                pid = int((Path(cluster.data) / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(cluster.folder, ignore_errors=True)


def test_postgres_restarted_while_answers_stream(own_postgres: PostgresCluster, make_app, upstream, caplog) -> None:  # noqa: ANN001
    """Flushes and answers' ends fail while it is down and are retried; every answer ends complete, whole."""
    app = make_app(DATABASE_URL=own_postgres.url, FLUSH_INTERVAL=0.2, ANSWER_LIMITS="off", UPSTREAM_TIMEOUT=30.0)
    api = ApiClient(app)
    go = threading.Event()  # every answer holds after its first words until the database is down
    upstream.script(*[Reply(delay=0.02, pause_after=3, resume=go) for _ in range(8)])
    # Echoed: four long answers stream through the outage and beyond, four short ones end during it.
    contents = [" ".join(f"p{i}w{j}" for j in range(150 if i < 4 else 10)) for i in range(8)]
    answers = []
    for content in contents:
        conversation = api.call("POST", "/conversations", {}).get_json()
        sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": content})
        assert sent.status_code == 202, sent.get_data(as_text=True)
        answers.append(sent.get_json()["assistant_message"]["id"])
    wait_until(lambda: all(stored(app, a).content for a in answers), "every answer has been flushed once")

    own_postgres.stop()
    go.set()
    time.sleep(1.0)  # flushes fail meanwhile; the answers go on, the short ones end
    assert "flush failed" in caplog.text and "could not store the end of message" in caplog.text
    own_postgres.start()
    wait_until(
        lambda: any(m.status == "streaming" and len(m.content) > 200 for a in answers[:4] if (m := stored(app, a))),
        "flushes resume after the restart",
    )
    deadline = time.monotonic() + 20
    for answer_id, content in zip(answers, contents, strict=True):
        message = wait_until(
            lambda a=answer_id: (m := stored(app, a)).status != "streaming" and m,
            f"answer {answer_id} ends",
            timeout=max(0.1, deadline - time.monotonic()),
        )
        assert (message.status, message.content) == ("complete", f"Echo: {content}")
