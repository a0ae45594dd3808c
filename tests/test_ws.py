"""The WebSocket API over a real socket: concurrent requests, subscribers, stop, bad input."""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import pytest
from simple_websocket import Client, ConnectionClosed

from tests.conftest import Chat
from tests.fake_upstream import Reply


class Socket:
    """A test client that collects every message it receives."""

    def __init__(self, live_server: str, token: str, header: bool = True) -> None:
        url = live_server.replace("http://", "ws://") + "/api/v1/ws"
        if header:
            self.ws = Client.connect(url, headers={"Authorization": f"Bearer {token}"})
        else:
            self.ws = Client.connect(f"{url}?token={token}")
        self.received: list[dict] = []

    def send(self, **message: object) -> None:
        self.ws.send(json.dumps(message))

    def until(self, predicate, timeout: float = 10.0) -> dict:  # noqa: ANN001
        """Receive until a message matches ``predicate``; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.ws.receive(timeout=deadline - time.monotonic())
            if raw is None:
                break
            message = json.loads(raw)
            self.received.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"not received; got {self.received[-5:]}")

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.close()


def guest_token(live_server: str) -> str:
    return httpx.post(f"{live_server}/api/v1/auth/guest").json()["token"]


@pytest.fixture
def socket(live_server: str):  # noqa: ANN201
    sockets = []

    def open_socket(token: str | None = None, header: bool = True) -> Socket:
        s = Socket(live_server, token or guest_token(live_server), header)
        sockets.append(s)
        return s

    yield open_socket
    for s in sockets:
        s.close()


def test_connect_needs_a_token(live_server: str, socket) -> None:  # noqa: ANN001
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGVzdGtleTEyMzQ1Njc4OQ==",
    }
    refused = httpx.get(f"{live_server}/api/v1/ws?token=nope", headers=upgrade)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    ws = socket(header=False)
    welcome = ws.until(lambda m: m["type"] == "connection_established")
    assert welcome["user_id"]


def test_two_concurrent_requests_on_one_socket_never_mix(socket, upstream) -> None:  # noqa: ANN001
    a = [f" a{i}" for i in range(25)]
    b = [f" b{i}" for i in range(25)]
    upstream.script(Reply(tokens=a, delay=0.02), Reply(tokens=b, delay=0.02))
    ws = socket()
    ws.send(type="send_message", request_id="r1", conversation_id=None, content="first")
    ws.send(type="send_message", request_id="r2", conversation_id=None, content="second")
    done = set()
    ws.until(lambda m: m["type"] == "done" and not done.add(m["request_id"]) and done == {"r1", "r2"}, timeout=15)
    chunks = {"r1": "", "r2": ""}
    for m in ws.received:
        if m["type"] == "chunk":
            chunks[m["request_id"]] += m["content"]
    first_chunks = [m["request_id"] for m in ws.received if m["type"] == "chunk"]
    assert first_chunks.index("r2") < len(first_chunks) - first_chunks[::-1].index("r1") - 1  # they interleaved
    texts = {m["request_id"]: m["message"]["content"] for m in ws.received if m["type"] == "done"}
    assert {chunks["r1"], chunks["r2"]} == {"".join(a), "".join(b)}
    assert chunks == texts
    created = [m for m in ws.received if m["type"] == "message_created"]
    assert len(created) == 4 and {m["message"]["role"] for m in created} == {"user", "assistant"}


def test_message_created_says_where_each_message_stands_among_its_versions(socket, upstream) -> None:  # noqa: ANN001
    """A second version of a question (sent with the answer before it as parent) shows as 2 of 2, its
    answer as 1 of 1: what the page's version counter would say."""
    upstream.script(Reply(tokens=[" one"]), Reply(tokens=[" two"]), Reply(tokens=[" two again"]))
    ws = socket()

    def exchange(request_id: str, **fields: object) -> tuple[dict, dict]:
        ws.send(type="send_message", request_id=request_id, **fields)
        ws.until(lambda m: m["type"] == "done" and m["request_id"] == request_id, timeout=15)
        made = [m for m in ws.received if m["type"] == "message_created" and m["request_id"] == request_id]
        return made[0]["message"], made[1]["message"]

    _, first_answer = exchange("r1", conversation_id=None, content="first")
    conversation_id = first_answer["conversation_id"]
    question, _ = exchange("r2", conversation_id=conversation_id, content="second")
    assert (question["sibling_index"], question["sibling_count"]) == (1, 1)
    again, its_answer = exchange("r3", conversation_id=conversation_id, content="again", parent_id=first_answer["id"])
    assert again["parent_id"] == question["parent_id"] == first_answer["id"]
    assert (again["sibling_index"], again["sibling_count"]) == (2, 2)
    assert (its_answer["sibling_index"], its_answer["sibling_count"], its_answer["parent_id"]) == (1, 1, again["id"])


def test_subscriber_sees_an_answer_started_on_the_page(app, live_server: str, socket, upstream) -> None:  # noqa: ANN001
    """The page visitor makes a token for their identity; a socket with it watches the page's answer."""
    import re

    page = Chat(app)
    conversation_id, answer_id = page.start("on the page")
    page.wait(answer_id)
    created = page.post("/settings/tokens", {"name": "watcher"}).get_data(as_text=True)
    token = re.search(r'<code id="new-token">([^<]+)</code>', created).group(1)

    watcher = socket(token)
    watcher.send(type="subscribe", conversation_id=conversation_id)
    watcher.send(type="ping", request_id="subscribed")  # answered once the subscribe before it was handled
    watcher.until(lambda m: m["type"] == "pong")
    other_tab = socket(token)
    other_tab.send(type="subscribe", conversation_id=conversation_id)
    watcher.until(lambda m: m["type"] == "user_joined")
    other_tab.send(type="typing", conversation_id=conversation_id, is_typing=True)
    assert watcher.until(lambda m: m["type"] == "typing_indicator")["is_typing"] is True

    upstream.script(Reply(tokens=[f" p{i}" for i in range(20)], delay=0.02))
    new_answer = page.send(conversation_id, "typed on the page")
    done = watcher.until(lambda m: m["type"] == "done")
    assert done["message"]["id"] == new_answer and done["conversation_id"] == conversation_id
    text = "".join(m["content"] for m in watcher.received if m["type"] == "chunk")
    assert text == "".join(f" p{i}" for i in range(20)) == done["message"]["content"]
    other_tab.close()
    watcher.until(lambda m: m["type"] == "user_left")


def test_stop_over_the_socket(socket, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=[f" s{i}" for i in range(200)], delay=0.03))
    ws = socket()
    ws.send(type="send_message", request_id="long", conversation_id=None, content="go on")
    answer = ws.until(lambda m: m["type"] == "message_created" and m["message"]["role"] == "assistant")["message"]
    ws.until(lambda m: m["type"] == "chunk")
    ws.send(type="send_message", request_id="race", conversation_id=answer["conversation_id"], content="and?")
    refused = ws.until(lambda m: m["type"] == "error")  # one answer at a time in a conversation
    assert refused["code"] == "conflict" and refused["request_id"] == "race" and "Stop it" in refused["message"]
    ws.send(type="stop", message_id=answer["id"])
    done = ws.until(lambda m: m["type"] == "done")
    assert done["message"]["status"] == "stopped"
    assert done["message"]["content"] == "".join(m["content"] for m in ws.received if m["type"] == "chunk")


def test_bad_input_gets_errors_and_the_socket_stays_open(socket, live_server: str) -> None:  # noqa: ANN001
    ws = socket()
    ws.ws.send("{not json")
    assert ws.until(lambda m: m["type"] == "error")["code"] == "invalid_json"
    ws.send(type="dance")
    assert ws.until(lambda m: m["type"] == "error")["code"] == "unknown_type"
    ws.send(type="send_message", request_id="x")
    missing = ws.until(lambda m: m["type"] == "error")
    assert missing["code"] == "missing_field" and missing["request_id"] == "x"
    ws.send(type="subscribe", conversation_id=999999)
    assert ws.until(lambda m: m["type"] == "error")["code"] == "not_found"
    ws.send(type="ping", request_id="p")
    assert ws.until(lambda m: m["type"] == "pong")["request_id"] == "p"


def test_page_visitor_and_socket_identities_are_separate(chat: Chat, socket, live_server: str) -> None:
    conversation_id, _ = chat.start("page only")
    ws = socket()
    ws.send(type="subscribe", conversation_id=conversation_id)
    assert ws.until(lambda m: m["type"] == "error")["code"] == "not_found"
