"""Monitoring: /metrics (scraped and parsed with prometheus-client's parser), /healthz totals, /readyz, workers."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import ApiClient, wait_until
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import collect
from tests.test_gunicorn import free_port, open_chat, procfile_command

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-secret"

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= sample_labels)


def scrape(client) -> Samples:  # noqa: ANN001
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse(response.get_data(as_text=True) if hasattr(response, "get_data") else response.text)


# -- the endpoint ---------------------------------------------------------------------------------------
def test_metrics_are_off_without_a_token(make_app) -> None:  # noqa: ANN001
    assert make_app().test_client().get("/metrics").status_code == 404


def test_metrics_need_the_token(make_app) -> None:  # noqa: ANN001
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "chatapp_" not in response.get_data(as_text=True)
    assert "chatapp_http_requests_total" in client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text


def test_answers_show_in_the_metrics(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(METRICS_TOKEN=TOKEN, MAX_CONCURRENT_ANSWERS=1)
    chat = Chat(app)
    before = scrape(app.test_client())

    # One complete answer, followed live (broker lag) from its events stream.
    upstream.script(Reply(tokens=["one", " two", " three"], delay=0.05, first_delay=0.1))
    conversation_id, answer_id = chat.start("count to three")
    page, _ = collect(chat.events(answer_id))
    assert page.text == "one two three"
    # One stopped, and a refused send while it runs (one answer at a time here).
    upstream.script(Reply(tokens=[f" w{i}" for i in range(100)], delay=0.05))
    stopped_id = chat.send(conversation_id, "go on")
    ttft = "chatapp_answer_time_to_first_token_seconds_count"
    wait_until(lambda: value(scrape(app.test_client()), ttft) == value(before, ttft) + 2, "the second answer's text")
    refused = chat.post("/conversations", {"content": "and another"})
    assert refused.status_code == 429
    chat.post(f"/messages/{stopped_id}/stop")
    assert chat.wait(stopped_id).status == "stopped"
    # One failed: the model server errs.
    upstream.script(Reply(status=500))
    failed_id = chat.send(conversation_id, "fail please")
    assert chat.wait(failed_id).status == "error"

    after = scrape(app.test_client())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("chatapp_http_requests_total", route="/conversations", method="POST", status="303") == 1
    assert delta("chatapp_http_requests_total", route="/conversations", status="429") == 1
    assert delta("chatapp_http_requests_total", route="/messages/<int:message_id>/events", status="200") == 1
    assert delta("chatapp_answers_started_total", model="fake-model") == 3
    for status in ("complete", "stopped", "error"):
        assert delta("chatapp_answers_finished_total", model="fake-model", status=status) == 1
        assert delta("chatapp_answer_duration_seconds_count", status=status) == 1
    assert delta("chatapp_answer_time_to_first_token_seconds_count", model="fake-model") == 2  # the error had none
    assert delta("chatapp_answer_time_to_first_token_seconds_sum", model="fake-model") >= 0.15  # 0.1 + 0.05 s
    assert delta("chatapp_tokens_total", model="fake-model", kind="completion") >= 3 + 1
    assert delta("chatapp_tokens_total", model="fake-model", kind="prompt") > 0
    assert delta("chatapp_upstream_errors_total", kind="server_error") == 1
    assert delta("chatapp_upstream_errors_total") == 1  # stopping an answer is not the upstream's failure
    assert delta("chatapp_limit_refusals_total", limit="concurrent_answers") == 1
    assert delta("chatapp_broker_lag_seconds_count", broker="memory") >= 1  # deltas received live
    # This test's lags, all under a second (the counts are the process's: earlier tests' slow readers too).
    assert delta("chatapp_broker_lag_seconds_bucket", broker="memory", le="1.0") == delta(
        "chatapp_broker_lag_seconds_count", broker="memory"
    )
    wait_until(lambda: value(scrape(app.test_client()), "chatapp_streams_open") == 0, "the stream is closed")
    assert value(after, "chatapp_answers_running") == 0


@pytest.mark.redis
def test_broker_lag_through_redis(make_app, upstream, redis_url, redis_prefix) -> None:  # noqa: ANN001
    app = make_app(METRICS_TOKEN=TOKEN, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    chat = Chat(app)
    before = scrape(app.test_client())
    upstream.script(Reply(tokens=[f" r{i}" for i in range(20)], delay=0.03, first_delay=0.2))
    _, answer_id = chat.start("through redis")
    page, _ = collect(chat.events(answer_id))
    assert page.text == "".join(f" r{i}" for i in range(20)).strip()
    after = scrape(app.test_client())
    count = "chatapp_broker_lag_seconds_count"
    received = value(after, count, broker="redis") - value(before, count, broker="redis")
    within_a_second = value(after, "chatapp_broker_lag_seconds_bucket", broker="redis", le="1.0") - value(
        before, "chatapp_broker_lag_seconds_bucket", broker="redis", le="1.0"
    )
    assert received >= 1 and within_a_second == received


def test_open_streams_are_counted_while_open(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(METRICS_TOKEN=TOKEN)
    chat = Chat(app)
    upstream.script(Reply(tokens=[f" w{i}" for i in range(200)], delay=0.02))
    _, answer_id = chat.start("long")
    before = value(scrape(app.test_client()), "chatapp_streams_open")
    stream = chat.events(answer_id)
    next(iter(stream))
    assert value(scrape(app.test_client()), "chatapp_streams_open") == before + 1
    health = app.test_client().get("/healthz").get_json()
    assert health["generations_running"] == 1 and health["streams_open"] == before + 1
    chat.post(f"/messages/{answer_id}/stop")
    collect(stream)  # the stream ends with the answer
    wait_until(lambda: value(scrape(app.test_client()), "chatapp_streams_open") == before, "the stream is closed")


def test_rate_limit_refusals_are_counted(make_app) -> None:  # noqa: ANN001
    app = make_app(METRICS_TOKEN=TOKEN, SIGNIN_LIMIT_PER_IP="2 per minute")
    chat = Chat(app)
    before = value(scrape(app.test_client()), "chatapp_limit_refusals_total", limit="http:auth.sign_in")
    statuses = [
        chat.post("/sign-in", {"username": "nobody", "password": "wrong-password"}).status_code for _ in range(3)
    ]
    assert statuses[-1] == 429
    after = value(scrape(app.test_client()), "chatapp_limit_refusals_total", limit="http:auth.sign_in")
    assert after == before + 1


def test_unlisted_models_share_one_label(make_app, upstream) -> None:  # noqa: ANN001
    """A conversation may name any model when ALLOWED_MODELS is empty: that must not make a label per name."""
    app = make_app(METRICS_TOKEN=TOKEN)
    api = ApiClient(app)
    before = value(scrape(app.test_client()), "chatapp_answers_finished_total", model="other")
    created = api.call("POST", "/conversations", {"model": "made-up-model-123"}).get_json()
    sent = api.call("POST", f"/conversations/{created['id']}/messages", {"content": "hi"})
    assert sent.status_code == 202, sent.get_data(as_text=True)
    wait_until(
        lambda: value(scrape(app.test_client()), "chatapp_answers_finished_total", model="other") == before + 1,
        "the answer is counted under 'other'",
    )
    assert not any("made-up-model-123" in str(labels) for _, labels in scrape(app.test_client()))


def test_the_grafana_dashboard_queries_real_metrics(make_app, upstream) -> None:  # noqa: ANN001
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(queries) >= 8
    app = make_app(METRICS_TOKEN=TOKEN)
    chat = Chat(app)
    _, answer_id = chat.start("something to count")
    collect(chat.events(answer_id))
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    exposed = set()  # every name a query may use, of every family (some have no samples yet, e.g. retries)
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exposed |= {family.name + suffix for suffix in suffixes}
    used = {name for query in queries for name in re.findall(r"\bchatapp_\w+", query)}
    assert used and used <= exposed, used - exposed


# -- /readyz --------------------------------------------------------------------------------------------
def test_ready_when_the_database_answers(make_app, upstream) -> None:  # noqa: ANN001
    response = make_app().test_client().get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready" and body["database"] is True and body["redis"] is None
    assert body["upstream"]["reachable"] is True and body["upstream"]["model"] == "fake-model"


def test_not_ready_when_the_database_is_gone(make_app, tmp_path) -> None:  # noqa: ANN001
    folder = tmp_path
    app = make_app()
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    (folder / "chat.sqlite3").write_bytes(b"not a database" * 1000)  # the file is ruined
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable" and response.get_json()["database"] is False


@pytest.mark.postgres
def test_not_ready_when_postgres_is_gone(make_app, postgres_url) -> None:  # noqa: ANN001
    import psycopg

    app = make_app(DATABASE_URL=postgres_url)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    admin_url, name = postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["database"] is False


def test_ready_but_saying_so_when_the_upstream_is_down(make_app) -> None:  # noqa: ANN001
    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    upstream = response.get_json()["upstream"]
    assert upstream["reachable"] is False
    assert upstream["error"] == "Could not connect to the model server."
    assert "127.0.0.1" not in response.get_data(as_text=True)


@pytest.fixture(scope="session")
def own_redis(tmp_path_factory) -> Iterator:  # noqa: ANN001
    """A redis-server of our own on a free port, for tests that stop it; yields (url, start, stop).

    It lives until the session ends (a test leaves it running), so the apps built on it do not
    complain about a lost Redis through the rest of the run.
    """
    tmp_path = tmp_path_factory.mktemp("redis")
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    processes: list[subprocess.Popen] = []

    def start() -> None:
        command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        wait_until(lambda: _answers(port), "redis-server listens")

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_not_ready_while_redis_is_down(make_app, own_redis) -> None:  # noqa: ANN001
    url, start, stop = own_redis
    client = make_app(REDIS_URL=url).test_client()
    assert client.get("/readyz").get_json()["redis"] is True
    stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["redis"] is False and response.get_json()["database"] is True
    start()
    assert client.get("/readyz").status_code == 200


@pytest.mark.redis
def test_ready_with_redis(make_app, redis_url, redis_prefix) -> None:  # noqa: ANN001
    response = make_app(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix).test_client().get("/readyz")
    assert response.status_code == 200 and response.get_json()["redis"] is True


# -- gunicorn: several workers, one set of metrics ------------------------------------------------------
@pytest.fixture
def gunicorn(tmp_path) -> Iterator:  # noqa: ANN001
    """Start the Procfile's server with some environment; yields a starter returning (base URL, metrics dir)."""
    processes = []

    def start(**env: str) -> tuple[str, Path]:
        port = free_port()
        metrics_dir = tmp_path / "metrics"
        full_env = {
            **os.environ,
            "SECRET_KEY": "gunicorn-test",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite3'}",
            "PYTHONPATH": str(ROOT),
            "SECURE_COOKIES": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "METRICS_TOKEN": TOKEN,
            **env,
        }
        process = subprocess.Popen(procfile_command(port), cwd=ROOT, env=full_env, stderr=subprocess.DEVNULL)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz").json()["workers"] == int(env.get("WEB_CONCURRENCY", "1"))
            except (httpx.TransportError, ValueError):
                return False

        wait_until(up, "gunicorn serves with every worker", timeout=30)
        return url, metrics_dir

    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


def per_worker(metrics_dir: Path, name: str, kind: str) -> dict[str, float]:
    """Each worker's own value of ``name``, from its file alone (``kind``: counter, gauge_livesum)."""
    values = {}
    for path in metrics_dir.glob(f"{kind}_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        families = MultiProcessCollector.merge([str(path)])
        values[pid] = sum(s.value for f in families for s in f.samples if s.name == name)
    return values


def test_two_workers_report_together(gunicorn, upstream) -> None:  # noqa: ANN001
    url, metrics_dir = gunicorn(
        WEB_CONCURRENCY="2",
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_API_KEY="k",
        CHAT_MODEL="fake-model",
        GUEST_LIMIT_PER_IP="off",
        ANSWER_LIMITS="off",
    )
    upstream.set_default(Reply(tokens=[f" w{i}" for i in range(2000)], delay=0.05))  # outlasts the test
    started = 0

    def running_everywhere() -> bool:
        nonlocal started
        with httpx.Client(base_url=url, timeout=10) as client:  # a new connection: any worker may take it
            open_chat(client, f"question {started}")
            started += 1
        running = per_worker(metrics_dir, "chatapp_answers_running", "gauge_livesum")
        return len([count for count in running.values() if count > 0]) == 2

    wait_until(running_everywhere, "both workers generate an answer", timeout=30)
    for _ in range(6):  # whichever worker answers, it reports every worker's answers
        with httpx.Client(base_url=url) as client:
            health = client.get("/healthz").json()
        assert health["generations_running"] == started and health["workers"] == 2

    served = per_worker(metrics_dir, "chatapp_http_requests_total", "counter")
    assert len([count for count in served.values() if count > 0]) == 2
    with httpx.Client(base_url=url) as client:
        samples = parse(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
    assert value(samples, "chatapp_answers_started_total") == started
    assert value(samples, "chatapp_answers_running") == started
    assert value(samples, "chatapp_workers") == 2
    # Every request either worker counted, up to this scrape (which counts itself after answering).
    assert value(samples, "chatapp_http_requests_total") == sum(served.values())


# -- the number of workers ------------------------------------------------------------------------------
def load_gunicorn_conf(monkeypatch, tmp_path, **env: str | None) -> dict:  # noqa: ANN001
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # nothing made in /tmp by the import
    for name, setting in env.items():
        if setting is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, setting)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_cpus_are_the_affinity_or_the_cgroup_quota(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    available_cpus = load_gunicorn_conf(monkeypatch, tmp_path)["available_cpus"]
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert available_cpus(str(tmp_path / "missing")) == cores
    for content, expected in [
        ("max 100000\n", cores),
        ("50000 100000\n", 1),  # half a core: one worker
        ("100000 100000\n", 1),
        ("150000 100000\n", min(2, cores)),
        ("6400000 100000\n", cores),  # a quota above the cores this process may use
        ("garbage\n", cores),
    ]:
        cpu_max.write_text(content)
        assert available_cpus(str(cpu_max)) == expected, content


def test_one_worker_per_core_only_with_redis_and_no_platform_value(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    with_redis = load_gunicorn_conf(monkeypatch, tmp_path, REDIS_URL="redis://x", WEB_CONCURRENCY=None)
    assert with_redis["workers"] == with_redis["available_cpus"]()
    platform = load_gunicorn_conf(monkeypatch, tmp_path, REDIS_URL="redis://x", WEB_CONCURRENCY="3")
    assert "workers" not in platform  # gunicorn takes WEB_CONCURRENCY itself
    without_redis = load_gunicorn_conf(monkeypatch, tmp_path, REDIS_URL=None, WEB_CONCURRENCY=None)
    assert "workers" not in without_redis  # one worker: streams and stops need Redis across workers


def test_gunicorn_sets_up_the_metrics_directory(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    script = (
        "import os, runpy; ns = runpy.run_path('gunicorn.conf.py'); d = os.environ['PROMETHEUS_MULTIPROC_DIR'];"
        "print(d, os.path.isdir(d)); ns['on_exit'](None); print(os.path.exists(d))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    made, existed = out.stdout.split()[:2]
    assert existed == "True" and "chatapp-metrics-" in made
    assert out.stdout.split()[2] == "False"  # removed when gunicorn exits
