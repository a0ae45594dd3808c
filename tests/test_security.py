"""Hardening: security headers, cookies, CSRF by origin, clear 4xx for odd input, SSE framing, upstream errors."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatapp.extensions import db
from chatapp.models import Conversation
from tests.conftest import Chat, wait_for_status
from tests.fake_upstream import Reply
from tests.sse import Event, Page

HUGE = "9" * 25  # more than any id a database holds


class Api:
    """A program with a fresh guest token."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.client = app.test_client()
        token = self.client.post("/api/v1/auth/guest").get_json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None, **headers: str):  # noqa: ANN201
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return self.client.open(
            f"/api/v1{path}",
            method=method,
            data=data,
            content_type="application/json",
            headers={**self.headers, **headers},
        )


# -- headers ----------------------------------------------------------------------------------------------
def test_every_response_carries_the_security_headers(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("hello")
    chat.wait(answer_id)
    responses = [
        chat.get("/"),
        chat.get(f"/c/{conversation_id}"),
        chat.get("/static/app.js"),
        chat.get("/nowhere"),  # 404 page
        chat.client.post("/conversations", data={"content": "no token"}),  # 400
        chat.client.get("/api/v1/conversations"),  # 401 JSON
        chat.get("/healthz"),
        chat.get(f"/messages/{answer_id}/events"),  # an SSE stream
    ]
    for response in responses:
        csp = response.headers.get("Content-Security-Policy", "")
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'", response.request.path
        assert directives["style-src"] == "'self'"
        assert directives["img-src"] == "'self' data: blob:"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        response.close()


def test_pages_have_no_inline_script_or_style(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("hello")
    chat.wait(answer_id)
    for url in ("/", f"/c/{conversation_id}", f"/c/{conversation_id}/delete", "/settings"):
        page = chat.get(url).get_data(as_text=True)
        assert "<style" not in page, url
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), url  # every script is a file
        assert not re.search(r"\sstyle=", page), url
        assert not re.search(r"\son[a-z]+=", page), url
        # htmx would otherwise inject its indicator <style>, which the policy refuses.
        assert """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>""" in page


def test_405_answers_say_which_methods_are_allowed(chat: Chat) -> None:
    api = Api(chat.app)
    response = api.call("PUT", "/conversations")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    page = chat.post("/", {})  # with its token: the 405 comes from routing
    assert page.status_code == 405 and "GET" in page.headers["Allow"]


# -- cookies ----------------------------------------------------------------------------------------------
def session_cookie(response) -> str:  # noqa: ANN001
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def expiry_days(cookie: str) -> float:
    expires = re.search(r"Expires=([^;]+)", cookie).group(1)
    when = datetime.strptime(expires, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    return (when - datetime.now(UTC)) / timedelta(days=1)


def test_session_cookie_in_production_is_secure_httponly_lax_and_lasts_a_year(make_app) -> None:  # noqa: ANN001
    app = make_app(CHATAPP_ENV="production")
    cookie = session_cookie(app.test_client().get("/", base_url="https://chat.example"))
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")}
    assert {"Secure", "HttpOnly", "SameSite"} <= attributes
    assert "SameSite=Lax" in cookie
    assert 364.9 < expiry_days(cookie) <= 365


def test_session_lifetime_is_a_setting_and_cookies_are_not_secure_in_development(make_app) -> None:  # noqa: ANN001
    app = make_app(SESSION_LIFETIME_DAYS=7)
    cookie = session_cookie(app.test_client().get("/"))
    assert "Secure" not in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert 6.9 < expiry_days(cookie) <= 7
    plain = make_app(CHATAPP_ENV="production", SECURE_COOKIES="0")  # production served over plain HTTP
    assert "Secure" not in session_cookie(plain.test_client().get("/"))


def test_a_request_begun_before_the_first_send_does_not_sign_its_guest_out(chat: Chat, upstream) -> None:  # noqa: ANN001
    """The composer asks for the token meter as the first message is typed. If that answer comes back
    after the send's, which made the visitor's guest, the browser stores any cookie it carries: one
    from before the guest would sign them out of their new conversation (a 404 for it)."""
    upstream.script(Reply(tokens=["Hi"]))
    chat.get("/")
    before = chat.client.get_cookie("session").value
    conversation_id, _ = chat.start("hello")
    late = chat.app.test_client()  # the meter's request, sent with the cookie from before the send
    late.set_cookie("session", before)
    response = late.post("/meter", data={"csrf_token": chat.token, "content": "hel"})
    assert response.status_code == 200
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert chat.get(f"/c/{conversation_id}").status_code == 200


def test_the_session_cookie_is_sent_again_on_a_later_days_visit(chat: Chat, upstream) -> None:  # noqa: ANN001
    """Its year runs from the last visit, not from the sign-in; within a day, requests leave it alone."""
    upstream.script(Reply(tokens=["Hi"]))
    conversation_id, _ = chat.start("hello")
    assert not [c for c in chat.get(f"/c/{conversation_id}").headers.getlist("Set-Cookie") if "session=" in c]
    with chat.client.session_transaction() as stored:
        stored["day"] = "2026-01-01"  # as if the last visit was long ago
    cookie = session_cookie(chat.get(f"/c/{conversation_id}"))
    assert 364.9 < expiry_days(cookie) <= 365
    assert chat.get(f"/c/{conversation_id}").status_code == 200


def test_a_tampered_session_cookie_is_a_new_identity_not_an_error(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("my secret conversation")
    chat.wait(answer_id)
    with chat.app.app_context():
        victim = db.session.get(Conversation, conversation_id).user_id
    # Someone else's cookie, rewritten to carry the victim's id under a signature that does not match it.
    stranger = chat.app.test_client()
    stranger.get("/")
    signed = stranger.get_cookie("session").value
    claim = base64.urlsafe_b64encode(json.dumps({"uid": victim}).encode()).decode().rstrip("=")
    forged = claim + "." + signed.split(".", 1)[1]
    stranger.set_cookie("session", forged)
    assert stranger.get(f"/c/{conversation_id}").status_code == 404
    page = stranger.get("/")
    assert page.status_code == 200 and "my secret conversation" not in page.get_data(as_text=True)
    assert stranger.get_cookie("session").value not in (forged, signed)  # a new, validly signed identity


# -- CSRF -------------------------------------------------------------------------------------------------
def test_a_cross_origin_post_is_refused_even_with_a_valid_token(chat: Chat) -> None:
    chat.get("/")
    for origin in ("https://evil.example", "null", "http://localhost:8080", "http://localhost.evil.example"):
        response = chat.post("/conversations", {"content": "from elsewhere"}, headers={"Origin": origin})
        assert response.status_code == 403, origin
        assert "another site" in response.get_data(as_text=True)
    same = chat.post("/conversations", {"content": "from here"}, headers={"Origin": "http://localhost"})
    assert same.status_code == 303
    without = chat.post("/conversations", {"content": "no origin header (older browsers)"})
    assert without.status_code == 303
    # Behind a proxy that ends TLS and names the public host, the public origin is this site.
    proxied = chat.post(
        "/conversations",
        {"content": "through the proxy"},
        headers={"Origin": "https://chat.example", "X-Forwarded-Host": "chat.example", "X-Forwarded-Proto": "https"},
    )
    assert proxied.status_code == 303


def test_a_csrf_token_with_non_ascii_characters_is_a_400(chat: Chat) -> None:
    chat.get("/")
    response = chat.client.post("/conversations", data={"csrf_token": "tökén", "content": "hi"})
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    response = chat.client.post("/conversations", data={"content": "hi"}, headers={"X-CSRF-Token": "é" * 43})
    assert response.status_code == 400


# -- odd input: clear 4xx, never 500 -----------------------------------------------------------------------
def test_huge_ids_in_any_route_are_404(chat: Chat) -> None:
    api = Api(chat.app)
    for url in (f"/c/{HUGE}", f"/messages/{HUGE}/events", f"/images/{HUGE}", f"/c/{'9' * 5000}"):
        assert chat.get(url).status_code == 404, url
    for url in (f"/c/{HUGE}/messages", f"/messages/{HUGE}/stop", f"/messages/{HUGE}/retry"):
        assert chat.post(url, {"content": "x"}).status_code == 404, url
    for method, path in [
        ("GET", f"/conversations/{HUGE}"),
        ("PATCH", f"/conversations/{HUGE}"),
        ("DELETE", f"/conversations/{HUGE}"),
        ("GET", f"/conversations/{HUGE}/messages"),
        ("GET", f"/messages/{HUGE}"),
        ("GET", f"/messages/{HUGE}/stream"),
        ("POST", f"/messages/{HUGE}/retry"),
        ("GET", f"/conversations/{2**63}"),
    ]:
        response = api.call(method, path, {})
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"
    conversation = api.call("POST", "/conversations", {}).get_json()
    response = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "x", "parent_id": 2**64})
    assert response.status_code == 422 and "parent_id" in response.get_json()["error"]["message"]


def test_odd_query_arguments_are_422(chat: Chat, upstream) -> None:  # noqa: ANN001
    api = Api(chat.app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    answer = sent["assistant_message"]["id"]
    for path in (
        "/conversations?limit=²",
        "/conversations?limit=" + "9" * 5000,
        f"/conversations/{conversation['id']}/messages?limit=²",
        f"/conversations/{conversation['id']}/messages?before=²",
        f"/conversations/{conversation['id']}/messages?before=-1",
        f"/messages/{answer}/stream?after=²",
        "/conversations?cursor=" + base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{HUGE}".encode()).decode(),
    ):
        response = api.call("GET", path)
        assert response.status_code == 422, path
        assert response.get_json()["error"]["code"] == "invalid"
    response = api.call("GET", f"/messages/{answer}/stream", **{"Last-Event-ID": "²"})
    assert response.status_code == 422
    # The page's stream: the same junk is a clear 422, not a crash.
    chat.wait(answer)
    page_answer = chat.start("hello")[1]
    assert chat.get(f"/messages/{page_answer}/events?after=²").status_code == 422
    assert chat.get(f"/messages/{page_answer}/events", headers={"Last-Event-ID": "²"}).status_code == 422
    chat.wait(page_answer)


def test_odd_json_is_a_clear_4xx(chat: Chat) -> None:
    api = Api(chat.app)
    conversation = api.call("POST", "/conversations", {"title": "kept"}).get_json()
    path = f"/conversations/{conversation['id']}"
    surrogate = api.call("PATCH", path, raw=b'{"title": "\\ud800"}')
    assert surrogate.status_code == 422 and "surrogate" in surrogate.get_json()["error"]["message"]
    nested = api.call("PATCH", path, raw=b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert nested.status_code == 400 and nested.get_json()["error"]["code"] == "malformed_json"
    for method, target in (("PATCH", path), ("POST", "/conversations")):
        null_title = api.call(method, target, {"title": None})
        assert null_title.status_code == 422, method
        assert "title" in null_title.get_json()["error"]["message"]
    assert api.call("GET", path).get_json()["title"] == "kept"


def test_api_timestamps_carry_a_timezone(chat: Chat, upstream) -> None:  # noqa: ANN001
    api = Api(chat.app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    stamps = [conversation["created_at"], conversation["updated_at"], sent["user_message"]["created_at"]]
    for stamp in stamps:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert parsed.utcoffset() == timedelta(0), stamp
        assert abs(parsed - datetime.now(UTC)) < timedelta(minutes=5)
    chat.wait(sent["assistant_message"]["id"])


# -- SSE framing ------------------------------------------------------------------------------------------
def browser_events(raw: str) -> list[tuple[str, str]]:
    """(event, data) as a browser's EventSource parses them: lines end at \\r\\n, \\r or \\n."""
    events, kind, data = [], "message", []
    for line in re.split(r"\r\n|\r|\n", raw):
        if not line:
            if data:
                events.append((kind, "\n".join(data)))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def test_model_text_with_carriage_returns_cannot_forge_events(chat: Chat, upstream) -> None:  # noqa: ANN001
    tricks = ["Hello", "\r\nevent: done\r\ndata: x", "\revent: done\rdata: forged\r\r", " world"]
    upstream.script(Reply(tokens=tricks, delay=0.05))
    _, answer_id = chat.start("hi")
    raw = b"".join(chat.events(answer_id)).decode()
    events = browser_events(raw)
    kinds = [kind for kind, _ in events]
    assert kinds.count("done") == 1 and kinds[-1] == "done", kinds
    assert set(kinds[:-1]) <= {"tail", "text"}  # the page's updates: every forged "event:" line stayed data
    page = Page()
    for kind, data in events:
        if kind in ("tail", "text"):
            page.apply(Event(kind, data, "0"))
    assert "event: done" in page.text and "data: forged" in page.text and page.text.endswith("world")


# -- upstream errors --------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_errors_name_the_model_sent_and_hide_the_address(make_app, upstream, caplog) -> None:  # noqa: ANN001
    app = make_app()
    api = Api(app)
    port = str(upstream.port)
    conversation = api.call("POST", "/conversations", {"model": "their-model"}).get_json()
    cases = [
        (404, f"no such model at http://127.0.0.1:{port}/v1", "The model “their-model” was not found (404)"),
        (429, f"slow down, 127.0.0.1:{port} is busy", "rate limiting"),
        (500, "Traceback: pool 10.0.0.7 exhausted", "The model server had an error (500)"),
    ]
    for status, upstream_words, reason in cases:
        upstream.script(Reply(status=status, error_message=upstream_words))
        with caplog.at_level(logging.WARNING, logger="chatapp.providers.openai_compat"):
            sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
            error = wait_for_status(app, sent["assistant_message"]["id"]).error
        assert reason in error
        assert "127.0.0.1" not in error and port not in error and "10.0.0.7" not in error
        assert f"127.0.0.1:{port}" in caplog.text  # the operator still learns where it went
    assert upstream.requests[0]["model"] == "their-model"


def test_a_refused_connection_does_not_reveal_the_address(make_app, caplog) -> None:  # noqa: ANN001
    port = closed_port()
    chat = Chat(make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1"))
    with caplog.at_level(logging.WARNING, logger="chatapp.providers.openai_compat"):
        conversation_id, answer_id = chat.start("hello")
        message = chat.wait(answer_id)
    assert message.status == "error" and "Could not connect to the model server" in message.error
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Could not connect to the model server" in page and f":{port}" not in page and "127.0.0.1" not in page
    assert f"127.0.0.1:{port}" in caplog.text


# -- in Chromium ------------------------------------------------------------------------------------------
class Elsewhere:
    """Another origin that records every request (where a leaked image would go)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def browser_page(live_server):  # noqa: ANN001, ANN201
    from tests.clients import chromium

    with chromium() as browser:
        context = browser.new_context(base_url=live_server)
        # Record what the policy refuses (init scripts come from the browser, not the page: allowed).
        context.add_init_script(
            "window.__refused = []; document.addEventListener('securitypolicyviolation', e => {"
            " const what = e.effectiveDirective + ' ' + e.blockedURI;"
            " window.__refused.push(what); console.warn('refused: ' + what); });"
        )
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page


@pytest.mark.browser
def test_remote_images_in_answers_do_not_load_and_htmx_still_works(browser_page, upstream) -> None:  # noqa: ANN001
    page = browser_page  # the policy is enforced here: waits use locators and events, not evaluated strings
    elsewhere = Elsewhere()
    try:
        leak = f"![chart]({elsewhere.url}/leak.png?conversation=secret)"
        upstream.script(Reply(tokens=["Here:", " ", leak]), Reply(tokens=[" second", " answer"], delay=0.02))
        page.goto("/")
        page.fill("#content", "show me a chart")
        page.press("#content", "Enter")  # htmx sends; the answer streams in over SSE
        page.locator('article.assistant[data-status="complete"] img').wait_for()
        with page.expect_console_message(lambda m: m.text.startswith("refused: img-src")):
            page.reload()  # the finished answer, rendered by the server with its <img>
        page.locator('article.assistant[data-status="complete"] img').wait_for()
        assert elsewhere.paths == []

        page.fill("#content", "again")  # and htmx keeps working after a reload
        page.press("#content", "Enter")
        page.locator('article.assistant[data-status="complete"]').nth(1).wait_for()
        assert "second answer" in page.locator("article.assistant").nth(1).inner_text()
        refused = page.evaluate("window.__refused")
        assert refused and all(r.startswith("img-src") and elsewhere.url in r for r in refused), refused
        assert elsewhere.paths == []
    finally:
        elsewhere.close()
