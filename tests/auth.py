"""Helpers for the account tests: sign up and in through the real forms, read users back."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx

from chatapp.extensions import db
from chatapp.models import User
from tests.clients import serve  # noqa: F401 - re-exported for the account tests
from tests.conftest import Chat, skip_or_fail

PASSWORD = "correct horse battery"


def sign_up(chat: Chat, username: str, password: str = PASSWORD, **fields: str):  # noqa: ANN201
    """Submit the sign-up form (as a browser without JavaScript would)."""
    chat.get("/sign-up" + (f"?invite={fields['invite']}" if "invite" in fields else ""))
    return chat.post("/sign-up", {"username": username, "password": password, **fields})


def sign_in(chat: Chat, username: str, password: str = PASSWORD, **fields: str):  # noqa: ANN201
    """Submit the sign-in form."""
    chat.get("/sign-in")
    return chat.post("/sign-in", {"username": username, "password": password, **fields})


def text(response) -> str:  # noqa: ANN001
    """The page's text, tags removed and spaces collapsed (what a reader sees)."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def signed_in_as(chat: Chat) -> str | None:
    """The name the sidebar shows as signed in, or None."""
    found = re.search(r'class="account-name">Signed in as <strong>(.+?)</strong>', chat.get("/").get_data(as_text=True))
    return found.group(1) if found else None


def sidebar_titles(chat: Chat) -> list[str]:
    """The conversation titles listed in the sidebar of the new-chat page."""
    html = chat.get("/").get_data(as_text=True)
    sidebar = html.split('id="sidebar"', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'<a class="conversation-link" href="/c/\d+(?:#latest)?"[^>]*>([^<]*)</a>', sidebar)


def all_users(app) -> list[User]:  # noqa: ANN001
    """Every user row, detached."""
    with app.app_context():
        users = list(db.session.scalars(db.select(User).order_by(User.created_at)))
        db.session.expunge_all()
        return users


def user_named(app, username: str) -> User | None:  # noqa: ANN001
    """The account with this username, detached."""
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username=username))
        db.session.expunge_all()
        return user


def update_user(app, user_id: str, **values: object) -> None:  # noqa: ANN001
    """Change a user row directly (e.g. to make a guest look idle for weeks)."""
    with app.app_context():
        db.session.execute(db.update(User).where(User.id == user_id).values(**values))
        db.session.commit()


def api_token(chat: Chat, name: str = "script") -> str:
    """Create an API token on the settings page; returns it."""
    chat.get("/settings")
    response = chat.post("/settings/tokens", {"name": name})
    assert response.status_code == 201, response.get_data(as_text=True)
    return re.search(r'<code id="new-token">([^<]+)</code>', response.get_data(as_text=True)).group(1)


@contextlib.contextmanager
def oidc_provider() -> Iterator[str]:
    """A real OpenID Connect provider (``oidc-provider-mock``) in its own process on 127.0.0.1."""
    if importlib.util.find_spec("oidc_provider_mock") is None:  # not imported here: it runs in its own process
        skip_or_fail("pip install oidc-provider-mock (the test extra) to run the single sign-on tests")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/.well-known/openid-configuration", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the OIDC provider did not start: " + process.stderr.read().decode()[-2000:])
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def oidc_user(provider: str, sub: str, **claims: object) -> None:
    """Tell the provider who ``sub`` is (the claims it will hand out)."""
    response = httpx.put(f"{provider}/users/{quote(sub, safe='')}", json=claims)
    assert response.status_code == 204, response.text


def api_status(app, token: str) -> int:  # noqa: ANN001
    """The status the API answers a listing with this bearer token (200, or 401 when refused)."""
    return app.test_client().get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"}).status_code


def image_files(app) -> list[str]:  # noqa: ANN001
    """The paths of every stored image file."""
    from chatapp.models import Image

    with app.app_context():
        return [os.path.join(app.config["UPLOAD_FOLDER"], f) for f in db.session.scalars(db.select(Image.filename))]
