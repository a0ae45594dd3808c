"""The JSON API: tokens, conversations, messages, streams (SSE and NDJSON), errors, OpenAPI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from tests.clients import ndjson
from tests.fake_upstream import Reply
from tests.sse import Stream, collect, parse

WORDS = [f" w{i}" for i in range(40)]


class Api:
    """A program using the API with its bearer token."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.client = app.test_client()
        response = self.client.post("/api/v1/auth/guest")
        assert response.status_code == 201
        self.token = response.get_json()["token"]
        self.user_id = response.get_json()["user_id"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, body: object = None, **headers: str):  # noqa: ANN201
        data = json.dumps(body) if body is not None else None
        return self.client.open(
            f"/api/v1{path}",
            method=method,
            data=data,
            content_type="application/json",
            headers={**self.headers, **headers},
        )

    def stream(self, path: str, **headers: str) -> Stream:
        return Stream(lambda: self.client.get(f"/api/v1{path}", headers={**self.headers, **headers}, buffered=False))

    def wait(self, message_id: int) -> dict:
        from tests.conftest import wait_for_status

        wait_for_status(self.app, message_id)
        return self.call("GET", f"/messages/{message_id}").get_json()


@pytest.fixture
def api(app) -> Api:  # noqa: ANN001
    return Api(app)


def test_tokens_are_required_and_stored_hashed(app, api: Api) -> None:  # noqa: ANN001
    assert api.client.get("/api/v1/conversations").status_code == 401
    response = api.client.get("/api/v1/conversations", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert api.call("GET", "/conversations").status_code == 200
    from chatapp.extensions import db
    from chatapp.models import ApiToken

    with app.app_context():
        stored = db.session.scalars(db.select(ApiToken.token_hash)).all()
    assert api.token not in stored and len(stored[0]) == 64


def test_browser_cookies_do_not_authorize_the_api(chat) -> None:  # noqa: ANN001
    chat.get("/")
    assert chat.client.get("/api/v1/conversations").status_code == 401


def test_conversation_crud_and_cursor_pagination(api: Api) -> None:
    ids = [api.call("POST", "/conversations", {"title": f"c{i}"}).get_json()["id"] for i in range(5)]
    page = api.call("GET", "/conversations?limit=2").get_json()
    assert [c["title"] for c in page["items"]] == ["c4", "c3"]
    seen = [c["id"] for c in page["items"]]
    while page["next_cursor"]:
        page = api.call("GET", f"/conversations?limit=2&cursor={page['next_cursor']}").get_json()
        seen += [c["id"] for c in page["items"]]
    assert seen == ids[::-1]
    assert api.call("PATCH", f"/conversations/{ids[0]}", {"title": "renamed"}).get_json()["title"] == "renamed"
    assert api.call("DELETE", f"/conversations/{ids[0]}").status_code == 204
    assert api.call("GET", f"/conversations/{ids[0]}").status_code == 404


def test_send_stream_and_read_back(api: Api, upstream) -> None:  # noqa: ANN001
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(Reply(tokens=WORDS[:10], delay=0.03))
    response = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hello api"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["user_message"]["content"] == "hello api" and body["assistant_message"]["status"] == "streaming"
    _, events = collect(api.stream(body["stream_url"].removeprefix("/api/v1")))
    deltas = [json.loads(e.data) for e in events if e.event == "delta"]
    assert "".join(d["content"] for d in deltas) == "".join(WORDS[:10])
    assert all(str(d["seq"]) == e.id for d, e in zip(deltas, [e for e in events if e.event == "delta"], strict=True))
    done = json.loads(events[-1].data)
    assert events[-1].event == "done" and done["status"] == "complete" and done["content"] == "".join(WORDS[:10])
    listed = api.call("GET", f"/conversations/{conversation['id']}/messages").get_json()
    assert [m["role"] for m in listed["items"]] == ["user", "assistant"]
    assert listed["items"][1]["sibling_count"] == 1


def test_what_a_send_retry_and_edit_answer_with_is_what_was_stored(api: Api, upstream) -> None:  # noqa: ANN001
    """The 202's messages are shown from the objects the send just wrote (not read back): they must
    be what a later read of the same messages gives, positions among their siblings included."""
    from PIL import Image as PILImage

    conversation = api.call("POST", "/conversations", {}).get_json()
    lasting = ("id", "role", "parent_id", "created_at", "sibling_index", "sibling_count", "images", "model")
    lasting += ("author_id", "author_name", "feedback")

    def check(sent: dict) -> None:
        question, answer = sent["user_message"], sent["assistant_message"]
        assert api.call("GET", f"/messages/{question['id']}").get_json() == question
        stored = api.wait(answer["id"])  # the answer goes on after the 202: its lasting fields cannot change
        assert {k: answer[k] for k in lasting} == {k: stored[k] for k in lasting}
        assert answer["status"] == "streaming" and stored["status"] == "complete"

    first = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "one"}).get_json()
    check(first)
    png = io.BytesIO()
    PILImage.new("RGB", (8, 6)).save(png, format="PNG")
    second = api.client.post(  # with an image: stored with the message, shown in the 202
        f"/api/v1/conversations/{conversation['id']}/messages",
        data={"content": "two", "images": [(io.BytesIO(png.getvalue()), "a.png")]},
        headers=api.headers,
        content_type="multipart/form-data",
    ).get_json()
    check(second)
    assert second["user_message"]["parent_id"] == first["assistant_message"]["id"]
    assert [(i["width"], i["height"]) for i in second["user_message"]["images"]] == [(8, 6)]
    retried = api.call("POST", f"/messages/{second['assistant_message']['id']}/retry").get_json()
    check(retried)
    assert (retried["assistant_message"]["sibling_index"], retried["assistant_message"]["sibling_count"]) == (2, 2)
    edited = api.call("POST", f"/messages/{first['user_message']['id']}/edit", {"content": "uno"}).get_json()
    check(edited)
    assert (edited["user_message"]["sibling_index"], edited["user_message"]["sibling_count"]) == (2, 2)
    assert edited["user_message"]["author_id"] == api.user_id


def test_ndjson_and_resume(api: Api, upstream) -> None:  # noqa: ANN001
    conversation = api.call("POST", "/conversations", {}).get_json()
    reply = Reply(tokens=WORDS[:20], pause_after=10)  # held after 10 words: still streaming while viewers reconnect
    upstream.script(reply)
    answer = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "x"}).get_json()[
        "assistant_message"
    ]
    url = f"/messages/{answer['id']}/stream"
    full, paused_at = "".join(WORDS[:20]), len("".join(WORDS[:10]))
    first = updates(api.stream(url, Accept="application/x-ndjson"), "ndjson")
    seen = ""
    while len(seen) < paused_at:
        kind, seq, text = next(first)
        assert kind == "delta"
        seen += text
        assert seq == len(seen)  # each line carries the offset after it
    assert seen == full[:paused_at]
    assert api.call("GET", f"/messages/{answer['id']}").get_json()["status"] == "streaming"

    # Reconnecting mid-answer from an offset (a client that has shown the first 4 words) sends exactly
    # what follows it, live: as SSE and as NDJSON.
    resume_at = len("".join(WORDS[:4]))
    resumed = {
        "sse": updates(api.stream(url, **{"Last-Event-ID": str(resume_at)}), "sse"),
        "ndjson": updates(
            api.stream(url, Accept="application/x-ndjson", **{"Last-Event-ID": str(resume_at)}), "ndjson"
        ),
    }
    for name, stream in resumed.items():
        text = ""
        while len(text) < paused_at - resume_at:
            kind, _, delta = next(stream)
            assert kind == "delta", name
            text += delta
        assert text == full[resume_at:paused_at], name
    reply.resume.set()
    for name, stream in [("first", first), *resumed.items()]:
        rest = list(stream)
        assert rest[-1][0] == "done", name
        assert "".join(t for kind, _, t in rest if kind == "delta") == full[paused_at:], name


def updates(stream: Stream, kind: str) -> Iterator[tuple[str, int | None, str]]:
    """(event, offset, delta text) from an SSE or NDJSON stream, as they arrive."""
    if kind == "ndjson":
        for line in ndjson(stream):
            yield line["type"], line.get("seq"), line.get("content", "") if line["type"] == "delta" else ""
        return
    for event in parse(stream):
        if not isinstance(event, str):
            data = json.loads(event.data)
            yield event.event, int(event.id) if event.id else None, data["content"] if event.event == "delta" else ""


def test_stop_edit_retry_feedback(api: Api, upstream) -> None:  # noqa: ANN001
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(Reply(tokens=WORDS, delay=0.03))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "long"}).get_json()
    answer_id = sent["assistant_message"]["id"]
    collect(api.stream(f"/messages/{answer_id}/stream"), stop_after=2)
    # A second send while one streams is refused.
    refused = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "again"})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "conflict"
    stopped = api.call("POST", f"/messages/{answer_id}/stop").get_json()
    assert stopped["status"] == "stopped" and stopped["content"]

    retried = api.call("POST", f"/messages/{answer_id}/retry")
    assert retried.status_code == 202
    new_answer = api.wait(retried.get_json()["assistant_message"]["id"])
    assert new_answer["sibling_index"] == 2 and new_answer["sibling_count"] == 2

    edited = api.call("POST", f"/messages/{sent['user_message']['id']}/edit", {"content": "short"}).get_json()
    assert api.wait(edited["assistant_message"]["id"])["content"] == "Echo: short"
    everything = api.call("GET", f"/conversations/{conversation['id']}/messages?branches=all").get_json()["items"]
    assert len(everything) == 5 and all("parent_id" in m for m in everything)

    rated = api.call("POST", f"/messages/{answer_id}/feedback", {"rating": "up", "comment": "nice"}).get_json()
    assert rated["feedback"] == {"rating": "up", "comment": "nice"}
    assert api.call("POST", f"/messages/{answer_id}/feedback", {"rating": "meh"}).status_code == 422


def test_errors_say_what_to_change(make_app, upstream) -> None:  # noqa: ANN001
    api = Api(make_app(MAX_USER_MESSAGE_TOKENS=5))
    conversation = api.call("POST", "/conversations", {}).get_json()
    bad_json = api.client.post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        data="{nope",
        headers=api.headers,
        content_type="application/json",
    )
    assert bad_json.status_code == 400 and bad_json.get_json()["error"]["code"] == "malformed_json"
    invalid = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "", "extra": 1})
    assert invalid.status_code == 422
    fields = {f["field"] for f in invalid.get_json()["error"]["details"]["fields"]}
    assert fields == {"extra"}
    empty = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "  "})
    assert empty.status_code == 422 and empty.get_json()["error"]["details"]["fields"] == [{"field": "content"}]
    too_long = api.call(
        "POST", f"/conversations/{conversation['id']}/messages", {"content": "one two three four five six seven"}
    )
    assert too_long.status_code == 422
    error = too_long.get_json()["error"]
    assert error["code"] == "message_too_long" and error["details"]["limit"] == 5 and error["details"]["tokens"] == 7
    assert error["details"]["message"]["content"] == "one two three four five six seven"  # kept
    assert upstream.requests == []
    assert api.call("GET", "/conversations?limit=0").status_code == 422
    unknown = api.call("GET", "/no-such-thing")  # no route matched: still the API's JSON error
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "not_found"
    wrong_method = api.call("PUT", f"/conversations/{conversation['id']}")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["code"] == "method_not_allowed"


def test_identities_are_isolated(app, api: Api) -> None:  # noqa: ANN001
    other = Api(app)
    conversation = api.call("POST", "/conversations", {"title": "private"}).get_json()
    assert other.call("GET", f"/conversations/{conversation['id']}").status_code == 404
    assert other.call("GET", f"/conversations/{conversation['id']}/messages").status_code == 404
    assert other.call("GET", "/conversations").get_json()["items"] == []


def test_openapi_lists_every_path_with_its_schemas(api: Api) -> None:
    document = api.client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    for path in [
        "/api/v1/auth/guest",
        "/api/v1/conversations",
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/conversations/{conversation_id}/messages",
        "/api/v1/messages/{message_id}",
        "/api/v1/messages/{message_id}/stream",
        "/api/v1/messages/{message_id}/edit",
        "/api/v1/messages/{message_id}/retry",
        "/api/v1/messages/{message_id}/stop",
        "/api/v1/messages/{message_id}/feedback",
    ]:
        assert path in document["paths"], path
    send = document["paths"]["/api/v1/conversations/{conversation_id}/messages"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessageCreate"
    }
    schema = document["components"]["schemas"]["MessageCreate"]
    assert schema["required"] == ["content"] and schema["additionalProperties"] is False
    for path in ["/api/v1/transcriptions", "/api/v1/models", "/api/v1/stats", "/api/v1/openapi.json"]:
        assert path in document["paths"], path
    for ref in json.dumps(document).split('"$ref": "#/components/schemas/')[1:]:
        assert ref.split('"')[0] in document["components"]["schemas"]


def test_conversation_model_system_prompt_and_settings_are_used(api: Api, upstream) -> None:  # noqa: ANN001
    body = {
        "title": "tuned",
        "model": "other-model",
        "system_prompt": "Answer in French.",
        "settings": {"temperature": 0.2, "max_tokens": 3},
    }
    conversation = api.call("POST", "/conversations", body).get_json()
    assert conversation["settings"] == {"temperature": 0.2, "max_tokens": 3} and conversation["model"] == "other-model"
    answer = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "a b c d e"}).get_json()
    done = api.wait(answer["assistant_message"]["id"])
    sent = upstream.requests[-1]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("other-model", 0.2, 3)
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert done["model"] == "other-model" and done["finish_reason"] == "length"
    patched = api.call("PATCH", f"/conversations/{conversation['id']}", {"settings": {"temperature": 1.0}}).get_json()
    assert patched["settings"]["temperature"] == 1.0 and patched["title"] == "tuned"
    assert api.call("POST", "/conversations", {"settings": {"temperature": 5}}).status_code == 422


def test_models_stats_transcriptions_and_images(api: Api, upstream) -> None:  # noqa: ANN001
    from PIL import Image as PILImage

    upstream.models = ["upstream-only-model", "fake-model"]  # not just the configured one: the upstream's list
    assert api.call("GET", "/models").get_json() == {
        "items": [{"id": "fake-model", "provider": "openai"}, {"id": "upstream-only-model", "provider": "openai"}]
    }
    conversation = api.call("POST", "/conversations", {}).get_json()
    png = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(png, format="PNG")
    response = api.client.post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        data={"content": "see", "images": [(io.BytesIO(png.getvalue()), "a.png")]},
        headers=api.headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202
    api.wait(response.get_json()["assistant_message"]["id"])
    assert upstream.requests[-1]["messages"][-1]["content"][1]["type"] == "image_url"

    stats = api.call("GET", "/stats").get_json()
    assert stats["conversations"] == 1 and stats["messages"] == 2 and stats["messages_today"] == 2
    assert (
        stats["most_used_model"] == "fake-model" and stats["tokens_used"] > 0 and stats["average_ttft_ms"] is not None
    )

    webm = b"\x1a\x45\xdf\xa3" + b"\x00" * 100
    heard = api.client.post(
        "/api/v1/transcriptions",
        data={"file": (io.BytesIO(webm), "a.webm")},
        headers=api.headers,
        content_type="multipart/form-data",
    )
    assert heard.get_json() == {"text": "hello from the fake transcriber"}
    bad = api.client.post(
        "/api/v1/transcriptions",
        data={"file": (io.BytesIO(b"nope"), "a.txt")},
        headers=api.headers,
        content_type="multipart/form-data",
    )
    assert bad.status_code == 415 and bad.get_json()["error"]["code"] == "unsupported_media_type"


def test_rate_limit_answers_429_with_retry_after(make_app) -> None:  # noqa: ANN001
    api = Api(make_app(ANSWERS_PER_MINUTE=2))
    conversation = api.call("POST", "/conversations", {}).get_json()
    for _ in range(2):
        answer = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
        api.wait(answer["assistant_message"]["id"])
    limited = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"})
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert api.call("GET", "/conversations").status_code == 200  # reading is not limited


def test_page_visitor_creates_and_revokes_tokens(chat) -> None:  # noqa: ANN001
    import re

    conversation_id, answer_id = chat.start("seen from both sides")
    chat.wait(answer_id)
    response = chat.post("/settings/tokens", {"name": "my script"})
    assert response.status_code == 201
    token = re.search(r'<code id="new-token">([^<]+)</code>', response.get_data(as_text=True)).group(1)
    headers = {"Authorization": f"Bearer {token}"}
    listed = chat.client.get("/api/v1/conversations", headers=headers).get_json()
    assert [c["id"] for c in listed["items"]] == [conversation_id]  # the same identity as the page
    page = chat.get("/settings").get_data(as_text=True)
    assert "my script" in page and token not in page  # shown once, stored hashed
    token_id = re.search(r"/settings/tokens/(\d+)/revoke", page).group(1)
    assert chat.post(f"/settings/tokens/{token_id}/revoke").status_code == 303
    assert chat.client.get("/api/v1/conversations", headers=headers).status_code == 401
    assert chat.post("/settings/tokens/999/revoke").status_code == 404


def test_send_can_stream_directly_and_failures_arrive_as_error_events(make_app, upstream) -> None:  # noqa: ANN001
    api = Api(make_app(MAX_FORM_BYTES=2000))
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(Reply(tokens=[" x", " y"], delay=0.05))
    stream = Stream(
        lambda: api.client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            data=json.dumps({"content": "stream it"}),
            content_type="application/json",
            headers={**api.headers, "Accept": "text/event-stream"},
            buffered=False,
        )
    )
    _, events = collect(stream)
    assert events[-1].event == "done" and events[:-1] and all(e.event == "delta" for e in events[:-1])
    assert json.loads(events[-1].data)["content"] == " x y"

    upstream.script(Reply(status=503, error_message="down"))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "fail"}).get_json()
    lines = [
        json.loads(line)
        for line in b"".join(
            api.stream(f"/messages/{sent['assistant_message']['id']}/stream", Accept="application/x-ndjson")
        ).splitlines()
    ]
    assert lines[-1]["type"] == "error" and "had an error (503)" in lines[-1]["message"]

    too_big = api.call("PATCH", f"/conversations/{conversation['id']}", {"title": "x" * 200_000})
    assert too_big.status_code == 413 and too_big.get_json()["error"]["code"] == "too_large"


def test_openapi_document_is_valid(api: Api) -> None:
    from openapi_spec_validator import validate

    validate(api.client.get("/api/v1/openapi.json").get_json())


def test_message_pages_and_resume_mid_stream(api: Api, upstream) -> None:  # noqa: ANN001
    conversation = api.call("POST", "/conversations", {}).get_json()
    for n in range(3):
        sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": f"q{n}"}).get_json()
        api.wait(sent["assistant_message"]["id"])
    page = api.call("GET", f"/conversations/{conversation['id']}/messages?limit=4").get_json()
    assert [m["content"] for m in page["items"]] == ["q1", "Echo: q1", "q2", "Echo: q2"]
    older = api.call(
        "GET", f"/conversations/{conversation['id']}/messages?limit=4&before={page['next_cursor']}"
    ).get_json()
    assert [m["content"] for m in older["items"]] == ["q0", "Echo: q0"] and older["next_cursor"] is None

    words = [f" r{i}" for i in range(30)]
    upstream.script(Reply(tokens=words, delay=0.02))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "resume"}).get_json()
    url = f"/messages/{sent['assistant_message']['id']}/stream"
    _, first = collect(api.stream(url), stop_after=3)
    deltas = [e for e in first if e.event == "delta"]
    _, rest = collect(api.stream(url, **{"Last-Event-ID": deltas[-1].id}))
    text = "".join(json.loads(e.data)["content"] for e in deltas + [e for e in rest if e.event == "delta"])
    assert text == "".join(words)
    assert rest[-1].event == "done" and rest[-1].id == str(len("".join(words)))
