"""Providers that recover: retries before the first token, fallback models, the circuit breaker.

Every failure is the fake upstream's, in the real wire format (error statuses with or without
Retry-After, connections dropped before the headers, streams cut mid-answer), so the real openai
client and the app's own retry loop run.
"""

from __future__ import annotations

import io
import json
import logging
import time
from email.utils import formatdate

import pytest
from PIL import Image as PILImage

from chatapp.config import ConfigError
from chatapp.providers.openai_compat import retry_after_seconds
from tests.clients import ApiClient, WebSocket, chromium, ndjson, serve, stored, wait_until
from tests.conftest import Chat
from tests.fake_upstream import FakeUpstream, Reply
from tests.sse import collect, parse
from tests.test_page import check_accessible, send

FAST = {"UPSTREAM_RETRIES": 2, "UPSTREAM_RETRY_BACKOFF": 0.3}  # retries on, waits short enough for tests


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    """The app that ``live_server`` serves: retries on."""
    return make_app(**FAST)


@pytest.fixture(scope="module")
def other_server() -> FakeUpstream:
    """A second OpenAI-compatible server, for fallbacks on another server."""
    server = FakeUpstream(models=["other-model"]).start()
    yield server
    server.stop()


@pytest.fixture
def other(other_server: FakeUpstream) -> FakeUpstream:
    other_server.reset()
    return other_server


def failing_twice(upstream: FakeUpstream) -> None:
    """A 503, then a connection dropped before any header, then (by default) the echo."""
    upstream.script(Reply(status=503, error_message="overloaded"), Reply(drop_before_headers=True))


def test_retries_then_success_with_status_events_over_sse(make_app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(make_app(**FAST))
    conversation = api.call("POST", "/conversations", {}).get_json()
    failing_twice(upstream)
    stream = api.stream(
        "POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}, Accept="text/event-stream"
    )
    _, events = collect(stream)
    kinds = [e.event for e in events]
    statuses = [json.loads(e.data) for e in events if e.event == "status"]
    assert statuses and all(s["state"] == "retrying" and s["model"] == "fake-model" for s in statuses)
    assert statuses[-1]["attempt"] == 3 and 0 < statuses[-1]["in_ms"] <= 1200  # 0.3 s doubled, with jitter
    assert kinds.index("delta") > max(i for i, kind in enumerate(kinds) if kind == "status")  # before the text
    assert kinds[-1] == "done" and json.loads(events[-1].data)["content"] == "Echo: hi"
    assert len(upstream.requests) == 3


def test_retries_show_status_over_ndjson(make_app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(make_app(**FAST))
    conversation = api.call("POST", "/conversations", {}).get_json()
    failing_twice(upstream)
    lines = list(
        ndjson(
            api.stream(
                "POST",
                f"/conversations/{conversation['id']}/messages",
                {"content": "hi"},
                Accept="application/x-ndjson",
            )
        )
    )
    statuses = [line for line in lines if line["type"] == "status"]
    assert statuses and statuses[-1]["state"] == "retrying" and statuses[-1]["attempt"] == 3
    assert statuses[-1]["message_id"] == lines[-1]["message"]["id"]
    assert lines[-1]["type"] == "done" and lines[-1]["message"]["content"] == "Echo: hi"


def test_retries_show_status_over_the_websocket(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(**FAST)
    token = ApiClient(app).token
    failing_twice(upstream)
    with serve(app) as base_url:
        socket = WebSocket(base_url, token)
        try:
            socket.send(type="send_message", request_id="r1", conversation_id=None, content="hi")
            done = socket.until(lambda m: m["type"] == "done")
        finally:
            socket.close()
    statuses = [m for m in socket.received if m["type"] == "status"]
    assert statuses and statuses[-1]["request_id"] == "r1" and statuses[-1]["attempt"] == 3
    assert statuses[-1]["state"] == "retrying" and statuses[-1]["in_ms"] > 0
    assert done["message"]["content"] == "Echo: hi" and done["message"]["status"] == "complete"


def test_status_event_is_in_the_openapi_document(make_app) -> None:  # noqa: ANN001
    document = ApiClient(make_app()).call("GET", "/openapi.json").get_json()
    status = document["components"]["schemas"]["StreamStatus"]
    assert set(status["properties"]) >= {"state", "attempt", "in_ms", "model", "message_id"}
    stream = document["paths"]["/api/v1/messages/{message_id}/stream"]["get"]["responses"]["200"]
    assert "status" in stream["content"]["text/event-stream"]["schema"]["properties"]["event"]["enum"]


def test_retry_after_is_honoured(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(Reply(status=429, error_message="slow down", retry_after="1"))
    _, answer_id = chat.start("hi")
    message = chat.wait(answer_id)
    assert message.status == "complete" and message.content == "Echo: hi"
    waited = upstream.arrivals[1] - upstream.arrivals[0]
    assert 0.95 <= waited < 1.5, waited  # the server's second, not the 0.3 s backoff


def test_retry_after_beyond_the_cap_is_not_waited_for(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST, UPSTREAM_RETRY_MAX_WAIT=2.0))
    upstream.script(Reply(status=429, error_message="quota", retry_after="3600"))
    chat.get("/")  # the page first: its first render (4 s once under CI's load) is not the answer's time
    started = time.monotonic()
    _, answer_id = chat.start("hi")
    message = chat.wait(answer_id)
    assert message.status == "error" and "rate limiting" in message.error
    assert time.monotonic() - started < 2 and len(upstream.requests) == 1


def test_retry_after_forms() -> None:
    now = time.time()
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert 9 <= retry_after_seconds({"retry-after": formatdate(now + 10, usegmt=True)}, now=now) <= 10
    assert retry_after_seconds({"retry-after": formatdate(now - 10, usegmt=True)}, now=now) == 0
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_retries_exhausted_end_in_an_error_with_retry(make_app, upstream, caplog) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(*[Reply(status=502, error_message="bad gateway")] * 3)
    with caplog.at_level(logging.INFO, logger="chatapp.answers"):
        conversation_id, answer_id = chat.start("hello")
        message = chat.wait(answer_id)
    retries = [r for r in caplog.records if r.name == "chatapp.answers" and hasattr(r, "attempt")]
    assert [(r.attempt, r.model, r.message_id) for r in retries] == [
        (2, "fake-model", answer_id),
        (3, "fake-model", answer_id),
    ]
    assert all(r.in_ms > 0 for r in retries)  # one line per retry, with its fields for structured logs
    assert message.status == "error" and "had an error (502)" in message.error
    assert len(upstream.requests) == 3  # the first try and UPSTREAM_RETRIES more
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "had an error (502)" in page and f'action="/messages/{answer_id}/retry"' in page
    response = chat.post(f"/messages/{answer_id}/retry")
    assert response.status_code == 303
    assert chat.wait(chat.latest_answer(conversation_id)).content == "Echo: hello"


def test_stop_during_a_backoff_ends_promptly(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(Reply(status=503, error_message="down", retry_after="2"))
    conversation_id, answer_id = chat.start("hello")
    wait_until(lambda: "Retrying" in chat.get(f"/c/{conversation_id}").get_data(as_text=True), "it waits to retry")
    started = time.monotonic()
    response = chat.post(f"/messages/{answer_id}/stop")
    assert response.status_code == 303 and time.monotonic() - started < 1.0  # not after the 2 s wait
    assert stored(chat.app, answer_id).status == "stopped"
    time.sleep(2.0)  # past the moment the retry was due
    assert len(upstream.requests) == 1  # the waiting retry was cancelled, not sent later


def test_failure_after_the_first_token_keeps_the_partial_and_offers_continue(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(Reply(tokens=["a", "b", "c", "d", "e"], drop_after=3, delay=0.01))
    conversation_id, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "error" and message.content == "abc" and "dropped" in message.error
    assert len(upstream.requests) == 1  # text was shown: not retried behind the user's back
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert f'action="/messages/{answer_id}/continue"' in page
    upstream.script(Reply(tokens=["d", "e"]))
    assert chat.post(f"/messages/{answer_id}/continue").status_code == 303
    assert chat.wait(answer_id).content == "abcde"


def test_fallback_to_another_model_on_the_same_server(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(**FAST, FALLBACK_MODELS="backup-model", ALLOWED_MODELS="fake-model,backup-model")
    api = ApiClient(app)
    upstream.script_for("fake-model", *[Reply(status=500, error_message="boom")] * 3)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    message = wait_until(
        lambda: (m := stored(app, sent["assistant_message"]["id"])).status != "streaming" and m, "the answer ends"
    )
    assert message.status == "complete" and message.content == "Echo: hi" and message.model == "backup-model"
    assert [r["model"] for r in upstream.requests] == ["fake-model"] * 3 + ["backup-model"]
    shown = api.call("GET", f"/messages/{message.id}").get_json()
    assert shown["model"] == "backup-model"


def test_fallback_to_a_model_on_another_server(make_app, upstream, other, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("OTHER_SERVER_KEY", "other-secret")
    chat = Chat(make_app(**FAST, FALLBACK_MODELS=f"other-model@{other.base_url} key=OTHER_SERVER_KEY"))
    upstream.script(*[Reply(drop_before_headers=True)] * 3)
    conversation_id, answer_id = chat.start("hello there")
    message = chat.wait(answer_id)
    assert message.status == "complete" and message.content == "Echo: hello there"
    assert message.model == "other-model" and len(upstream.requests) == 3
    assert other.requests[0]["model"] == "other-model"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "other-model · openai" in page  # the answer says which model wrote it


def test_an_image_skips_a_text_only_fallback(make_app, upstream, other) -> None:  # noqa: ANN001
    fallbacks = f"text-model text-only, vision-model@{other.base_url}"
    chat = Chat(make_app(UPSTREAM_RETRIES=0, FALLBACK_MODELS=fallbacks))
    upstream.script(Reply(status=503, error_message="down"))
    image = (io.BytesIO(_png()), "dot.png")
    response = chat.post(
        "/conversations", {"content": "what is this?", "images": [image]}, content_type="multipart/form-data"
    )
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    message = chat.wait(answer_id)
    assert message.status == "complete" and message.model == "vision-model"
    assert [r["model"] for r in upstream.requests] == ["fake-model"]  # text-model was never asked
    assert other.requests[0]["messages"][-1]["content"][1]["type"] == "image_url"


def test_a_timeout_before_the_headers_is_retried(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST, UPSTREAM_TIMEOUT=0.3))
    upstream.script(Reply(headers_delay=1.0), Reply(hang=True))  # silent before the headers, then after them
    _, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "complete" and message.content == "Echo: hello"
    assert len(upstream.requests) == 3


@pytest.mark.slow
def test_the_local_model_as_fallback_answers_text_and_is_skipped_for_images(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(UPSTREAM_RETRIES=0, FALLBACK_MODELS="local", MAX_RESPONSE_TOKENS=8))
    upstream.script(Reply(status=503, error_message="down"))
    conversation_id, answer_id = chat.start("Say hello.")
    message = chat.wait(answer_id, timeout=120)
    assert message.status == "complete" and message.content.strip()
    assert (message.model, message.provider) == ("SmolLM2-135M-Instruct.Q4_1", "local")

    upstream.script(Reply(status=503, error_message="down"))
    image = (io.BytesIO(_png()), "dot.png")
    response = chat.post(
        f"/c/{conversation_id}/messages",
        {"content": "and this?", "images": [image]},
        content_type="multipart/form-data",
    )
    message = chat.wait(int(response.headers["Location"].rsplit("message-", 1)[1]))
    assert message.status == "error" and "had an error (503)" in message.error  # local never saw the image
    assert message.model == "fake-model"


def test_the_breaker_opens_after_n_failures_and_recovers_after_the_cooldown(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(UPSTREAM_RETRIES=0, BREAKER_FAILURES=3, BREAKER_COOLDOWN=1.0)
    chat = Chat(app)
    key = f"http://127.0.0.1:{upstream.port}"
    upstream.script(*[Reply(status=503, error_message="down")] * 3)
    conversation_id, answer_id = chat.start("one")
    assert chat.wait(answer_id).status == "error"
    for _ in range(2):
        assert chat.wait(chat.send(conversation_id, "again")).status == "error"
    assert chat.client.get("/healthz").get_json()["upstreams"] == {key: "open"}

    answer_id = chat.send(conversation_id, "while open")  # fails at once, without asking the server
    message = chat.wait(answer_id)
    assert message.status == "error" and "given 1 seconds to recover" in message.error
    assert len(upstream.requests) == 3
    health = chat.client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"

    wait_until(lambda: chat.client.get("/healthz").get_json()["upstreams"][key] == "half-open", "the cooldown ends")
    answer_id = chat.send(conversation_id, "after")
    assert chat.wait(answer_id).content == "Echo: after"
    assert chat.client.get("/healthz").get_json()["upstreams"] == {key: "closed"}


def test_an_open_breaker_sends_answers_to_the_fallback(make_app, upstream, other) -> None:  # noqa: ANN001
    fallback = f"other-model@{other.base_url}"
    app = make_app(UPSTREAM_RETRIES=0, BREAKER_FAILURES=1, BREAKER_COOLDOWN=60.0, FALLBACK_MODELS=fallback)
    chat = Chat(app)
    upstream.script(Reply(status=500, error_message="boom"))
    conversation_id, answer_id = chat.start("one")
    assert chat.wait(answer_id).model == "other-model"
    answer_id = chat.send(conversation_id, "two")  # the breaker is open: straight to the fallback
    message = chat.wait(answer_id)
    assert message.model == "other-model" and message.content == "Echo: two"
    assert len(upstream.requests) == 1 and len(other.requests) == 2
    upstreams = chat.client.get("/healthz").get_json()["upstreams"]
    assert upstreams == {f"http://127.0.0.1:{upstream.port}": "open", f"http://127.0.0.1:{other.port}": "closed"}


def test_javascript_off_page_shows_retrying(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(Reply(status=503, error_message="down", retry_after="2"))
    conversation_id, answer_id = chat.start("hello")
    page = wait_until(
        lambda: (html := chat.get(f"/c/{conversation_id}").get_data(as_text=True)) and "Retrying" in html and html,
        "the page says it is retrying",
    )
    assert "Retrying (attempt 2)" in page and 'http-equiv="refresh"' in page  # and it refreshes until done
    assert chat.wait(answer_id).content == "Echo: hello"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Retrying" not in page and "Echo: hello" in page


@pytest.mark.browser
def test_the_page_with_javascript_shows_retrying_then_the_answer(live_server, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(status=503, error_message="down", retry_after="2"))
    with chromium() as browser:
        context = browser.new_context(base_url=live_server, bypass_csp=True, reduced_motion="reduce")
        page = context.new_page()
        page.goto("/")
        send(page, "hello")
        state = page.locator("article.assistant .state.writing")
        state.filter(has_text="Retrying (attempt 2)").wait_for(timeout=5000)
        page.wait_for_function("document.getElementById('announcer').textContent.includes('Retrying (attempt 2)')")
        check_accessible(page, "retrying")
        page.locator('article.assistant[data-status="complete"]', has_text="Echo: hello").wait_for(timeout=10000)
        assert "Retrying" not in page.inner_text("#messages")
        context.close()


def test_the_page_stream_sends_the_status_then_writing_again(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(**FAST))
    upstream.script(Reply(status=503, error_message="down", retry_after="1"))
    _, answer_id = chat.start("hello")
    _, events = collect(chat.events(answer_id))
    status = next(e for e in events if e.event == "status")
    assert "Retrying (attempt 2)" in status.text
    first_tail = next(e for e in events if e.event == "tail")
    assert f'hx-swap-oob="innerHTML:#state-{answer_id}"' in first_tail.data and "Writing" in first_tail.text


def test_bad_fallback_entries_stop_start_up_with_a_reason(make_app) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="not in ALLOWED_MODELS"):
        make_app(FALLBACK_MODELS="other", ALLOWED_MODELS="fake-model")
    with pytest.raises(ConfigError, match="NO_SUCH_VARIABLE"):
        make_app(FALLBACK_MODELS="m@http://127.0.0.1:9/v1 key=NO_SUCH_VARIABLE")
    with pytest.raises(ConfigError, match="unknown option"):
        make_app(FALLBACK_MODELS="m vision")


def test_events_of_another_worker_carry_the_status(make_app, upstream, redis_url, redis_prefix) -> None:  # noqa: ANN001
    """With Redis, a follower in another process sees "retrying" too (two apps stand for two workers)."""
    config = {**FAST, "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    writer, reader = make_app(**config), make_app(**config)
    # The second try's words come seconds after the "retrying" status, so the follower reads the status on
    # its own even when a loaded machine is slow to open its stream (a replay of status and text together
    # shows only the text, by design).
    slow = Reply(tokens=["Echo", ":", " hello"], first_delay=3.0)
    upstream.script(Reply(status=503, error_message="down", retry_after="1"), slow)
    chat = Chat(writer)
    _, answer_id = chat.start("hello")
    follower = Chat(reader)
    follower.client.set_cookie("session", chat.client.get_cookie("session").value)
    lines = [item for item in parse(follower.events(answer_id)) if not isinstance(item, str)]
    assert any(e.event == "status" and "Retrying (attempt 2)" in e.text for e in lines)
    assert lines[-1].event == "done" and "Echo: hello" in lines[-1].text


def _png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), "teal").save(out, "PNG")
    return out.getvalue()
