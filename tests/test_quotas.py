"""Answer limits and quotas: per minute, concurrent, daily tokens; the same refusal at every door."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from chatapp import quotas
from chatapp.extensions import db
from chatapp.models import ApiToken, Conversation, Message, Usage, User
from tests.conftest import Chat, wait_for_status
from tests.fake_upstream import Reply
from tests.test_ws import Socket

NO_LIMITS = {"ANSWERS_PER_MINUTE": 0, "MAX_CONCURRENT_ANSWERS": 0, "DAILY_TOKENS_PER_GUEST": 0}
SLOW = Reply(tokens=[" x"] * 600, delay=0.1)  # streams for a minute unless stopped


class Doors:
    """One identity at all three doors: the page (cookie), REST and WebSocket (a token of that identity)."""

    def __init__(self, app, live_server: str | None = None) -> None:  # noqa: ANN001
        self.app = app
        self.page = Chat(app)
        created = self.page.post("/settings/tokens", {"name": "quotas"}).get_data(as_text=True)
        token = re.search(r'<code id="new-token">([^<]+)</code>', created).group(1)
        self.headers = {"Authorization": f"Bearer {token}"}
        with app.app_context():
            self.user_id = ApiToken.user_for(token)
        self.socket = Socket(live_server, token) if live_server else None
        self._ids = itertools.count(1)

    def send_page(self, content: str):  # noqa: ANN201
        """A new conversation from the page's composer (plain form)."""
        return self.page.post("/conversations", {"content": content})

    def send_rest(self, content: str):  # noqa: ANN201
        """A new conversation and a message in it over REST."""
        conversation = self.rest("POST", "/conversations", {}).get_json()
        return self.rest("POST", f"/conversations/{conversation['id']}/messages", {"content": content})

    def send_ws(self, content: str) -> dict:
        """``send_message`` on the socket; returns the answer's ``message_created`` or the ``error``."""
        request_id = f"q{next(self._ids)}"
        self.socket.send(type="send_message", request_id=request_id, conversation_id=None, content=content)
        return self.socket.until(
            lambda m: (
                m.get("request_id") == request_id
                and (m["type"] == "error" or (m["type"] == "message_created" and m["message"]["role"] == "assistant"))
            )
        )

    def rest(self, method: str, path: str, body: object = None):  # noqa: ANN201
        return self.page.client.open(f"/api/v1{path}", method=method, json=body, headers=self.headers)

    def counts(self) -> tuple[int, int]:
        """How many conversations and messages this identity has stored."""
        with self.app.app_context():
            mine = select(Conversation.id).where(Conversation.user_id == self.user_id)
            conversations = db.session.scalar(select(func.count()).select_from(mine.subquery()))
            messages = db.session.scalar(select(func.count()).where(Message.conversation_id.in_(mine)))
        return conversations, messages

    def usage(self) -> dict:
        with self.app.app_context():
            return quotas.usage_for([self.user_id])[self.user_id]

    def close(self) -> None:
        if self.socket:
            self.socket.close()


@pytest.fixture
def doors(app, live_server: str):  # noqa: ANN001, ANN201
    """The test's identity at all three doors of the ``app`` served on ``live_server``."""
    opened = Doors(app, live_server)
    yield opened
    opened.close()


def page_ids(response) -> tuple[int, int]:  # noqa: ANN001
    """The conversation and answer a page send redirected to."""
    assert response.status_code == 303, response.get_data(as_text=True)
    found = re.search(r"/c/(\d+)#message-(\d+)$", response.headers["Location"])
    return int(found.group(1)), int(found.group(2))


def without_wait(message: str) -> str:
    """The refusal without its countdown ("in 12 s."), which may tick between two doors."""
    return re.sub(r"in (\d+ h )?\d+ (s|min)\.$", "", message)


def assert_refused_everywhere(doors: Doors, code: str) -> str:
    """The page (form and HTMX), REST and WebSocket all refuse with the same 429; nothing is saved."""
    before = doors.counts()
    page = doors.send_page("three little words")
    assert page.status_code == 429
    html = page.get_data(as_text=True)
    assert '<textarea id="content" name="content" rows="6">three little words</textarea>' in html  # text kept
    assert int(page.headers["Retry-After"]) >= 1

    rest = doors.send_rest("three little words")
    assert rest.status_code == 429, rest.get_json()
    error = rest.get_json()["error"]
    assert error["code"] == code
    assert error["details"]["retry_after"] == int(rest.headers["Retry-After"]) >= 1
    assert without_wait(error["message"]) in html

    if doors.socket:
        refused = doors.send_ws("three little words")
        assert refused["type"] == "error" and refused["code"] == code
        assert without_wait(refused["message"]) == without_wait(error["message"])
        doors.socket.send(type="ping", request_id="still-open")
        assert doors.socket.until(lambda m: m["type"] == "pong")["request_id"] == "still-open"

    rest_conversations = 1  # the REST door created an (empty) conversation before sending into it
    assert doors.counts() == (before[0] + rest_conversations, before[1])
    return error["message"]


def test_answers_per_minute_at_every_door(app, doors: Doors, upstream) -> None:  # noqa: ANN001
    app.config.update(NO_LIMITS, ANSWERS_PER_MINUTE=3)
    conversation_id, _ = page_ids(doors.send_page("one"))
    assert doors.send_rest("two").status_code == 202
    assert doors.send_ws("three")["type"] == "message_created"  # the third in a minute: at the limit

    message = assert_refused_everywhere(doors, "rate_limited")  # the fourth, from any door
    assert "You have started 3 answers in the last minute, the most allowed. Try again in" in message

    fragment = doors.page.client.post(
        f"/c/{conversation_id}/messages",
        data={"content": "from the composer"},
        headers={"HX-Request": "true", "X-CSRF-Token": doors.page.token},
    )
    assert fragment.status_code == 429 and fragment.headers["HX-Retarget"] == "#composer-error"
    assert "Retry-After" in fragment.headers and "the most allowed" in fragment.get_data(as_text=True)

    as_json = doors.page.client.post(
        "/conversations", data={"content": "hi", "csrf_token": doors.page.token}, headers={"Accept": "application/json"}
    )
    assert as_json.status_code == 429 and as_json.get_json()["error"]["code"] == "rate_limited"
    assert as_json.get_json()["error"]["details"]["retry_after"] == int(as_json.headers["Retry-After"])

    app.config["ANSWERS_PER_MINUTE"] = 4  # one more allowed: the count is of starts, not of refusals
    assert doors.send_rest("four").status_code == 202


def test_every_way_of_starting_an_answer_is_limited(chat: Chat, app, upstream) -> None:  # noqa: ANN001
    """Send, edit, retry and continue each start an answer, and each counts against the same limit."""
    app.config.update(NO_LIMITS, ANSWERS_PER_MINUTE=2)
    upstream.set_default(SLOW)
    conversation_id, first = chat.start("hello")
    chat.post(f"/messages/{first}/stop")
    assert chat.wait(first).status == "stopped"
    assert chat.post(f"/messages/{first}/continue").status_code == 303  # the second answer this minute
    chat.post(f"/messages/{first}/stop")
    question = chat.wait(first).parent_id
    for path, data in [
        (f"/messages/{first}/continue", {}),
        (f"/messages/{first}/retry", {}),
        (f"/messages/{question}/edit", {"content": "hello again"}),
        (f"/c/{conversation_id}/messages", {"content": "and more"}),
    ]:
        refused = chat.post(path, data)
        assert refused.status_code == 429, path
        assert "the most allowed" in refused.get_data(as_text=True)


def test_concurrent_answers_at_every_door(app, doors: Doors, upstream) -> None:  # noqa: ANN001
    app.config.update(NO_LIMITS, MAX_CONCURRENT_ANSWERS=2)
    upstream.set_default(SLOW)
    _, first = page_ids(doors.send_page("one"))
    second = doors.send_rest("two").get_json()["assistant_message"]["id"]  # two streaming: at the limit

    message = assert_refused_everywhere(doors, "rate_limited")
    assert message.startswith("2 of your answers are being written right now; at most 2 can be at once.")

    assert doors.rest("POST", f"/messages/{first}/stop").get_json()["status"] == "stopped"
    third = doors.send_ws("three")  # a slot is free again
    assert third["type"] == "message_created"
    assert doors.send_rest("four").status_code == 429
    for message_id in (second, third["message"]["id"]):
        doors.rest("POST", f"/messages/{message_id}/stop")


def test_per_minute_limit_is_shared_by_two_app_instances(make_app, redis_url: str, redis_prefix: str) -> None:  # noqa: ANN001
    shared = {**NO_LIMITS, "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANSWERS_PER_MINUTE": 2}
    one, two = make_app(**shared), make_app(**shared)
    token = one.test_client().post("/api/v1/auth/guest").get_json()["token"]
    clients = [app.test_client() for app in (one, two)]

    def send(client) -> object:  # noqa: ANN001
        headers = {"Authorization": f"Bearer {token}"}
        conversation = client.post("/api/v1/conversations", json={}, headers=headers).get_json()
        return client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "hi"}, headers=headers
        )

    assert send(clients[0]).status_code == 202
    assert send(clients[1]).status_code == 202
    for client in clients:  # each instance has seen one start, but the identity has made two
        refused = send(client)
        assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"


def zone_not_on_utc_date() -> str:
    """A time zone whose date differs from UTC's right now (UTC+14 late in the UTC day, UTC-12 early)."""
    return "Pacific/Kiritimati" if datetime.now(UTC).hour >= 12 else "Etc/GMT+12"


def test_daily_token_quota_at_every_door_resets_at_the_identitys_midnight(app, doors: Doors, upstream) -> None:  # noqa: ANN001
    # Each answer is charged as the fake upstream reports it: prompt = words sent (5 of system
    # prompt + 3), completion = 10 tokens; 18 in all, though tiktoken would count the prompt otherwise.
    app.config.update(NO_LIMITS, DAILY_TOKENS_PER_GUEST=36)
    upstream.set_default(Reply(tokens=[" a"] * 10))
    zone = zone_not_on_utc_date()
    with app.app_context():
        db.session.execute(update(User).where(User.id == doors.user_id).values(time_zone=zone))
        db.session.commit()

    answer = wait_for_status(app, page_ids(doors.send_page("one two three"))[1])
    assert (answer.prompt_tokens, answer.completion_tokens) == (8, 10)
    local_today = datetime.now(ZoneInfo(zone)).date()
    with app.app_context():
        row = db.session.scalars(select(Usage).where(Usage.user_id == doors.user_id)).one()
        assert (row.day, row.answers, row.tokens) == (local_today, 1, 18)
        assert row.day != datetime.now(UTC).date()  # the identity's day, not the server's
    sent = doors.send_rest("one two three").get_json()  # 18 used, under 36
    wait_for_status(app, sent["assistant_message"]["id"])
    assert doors.usage()["tokens_today"] == 36

    message = assert_refused_everywhere(doors, "quota_exceeded")  # 36 used of 36
    now = datetime.now(ZoneInfo(zone))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(zone))
    assert message.startswith("You have used 36 of your 36 tokens for today. The quota resets at midnight, ")
    assert f"{midnight:%H:%M on %A %d %B %Y} ({zone})" in message
    refused = doors.send_rest("one two three")
    assert abs(int(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) < 60

    for conversation in doors.rest("GET", "/conversations").get_json()["items"]:  # deleting gives nothing back
        assert doors.rest("DELETE", f"/conversations/{conversation['id']}").status_code == 204
    assert doors.send_rest("one two three").status_code == 429

    app.config["DAILY_TOKENS_PER_GUEST"] = 37  # one token left: the answer may start
    last = doors.send_ws("one two three")
    assert last["type"] == "message_created"
    wait_for_status(app, last["message"]["id"])
    with app.app_context():  # midnight passes in the identity's zone: today's usage becomes yesterday's
        db.session.execute(update(Usage).where(Usage.user_id == doors.user_id).values(day=local_today - timedelta(1)))
        db.session.commit()
    assert doors.usage() == {"answers_today": 0, "tokens_today": 0, "answers_total": 3, "tokens_total": 54}
    assert doors.send_rest("one two three").status_code == 202


def test_production_defaults_and_settings_from_the_environment(make_app, monkeypatch) -> None:  # noqa: ANN001
    production = make_app(CHATAPP_ENV="production", ANSWERS_PER_MINUTE=0)
    development = make_app(ANSWERS_PER_MINUTE=0)
    monkeypatch.setenv("DAILY_TOKENS_PER_GUEST", "500")
    configured = make_app(CHATAPP_ENV="production", ANSWERS_PER_MINUTE=0)
    for app, limit, refused_at in [(production, 20_000, 20_000), (development, 0, 10**9), (configured, 500, 500)]:
        api = app.test_client()
        created = api.post("/api/v1/auth/guest").get_json()
        headers = {"Authorization": f"Bearer {created['token']}"}
        conversation = api.post("/api/v1/conversations", json={}, headers=headers).get_json()
        for used in (refused_at - 1, refused_at):
            with app.app_context():
                db.session.merge(Usage(user_id=created["user_id"], day=datetime.now(UTC).date(), tokens=used))
                db.session.commit()
            sent = api.post(
                f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "hi"}, headers=headers
            )
            if limit and used == refused_at:
                assert sent.status_code == 429, (limit, used)
                assert f"of your {limit:,} tokens for today" in sent.get_json()["error"]["message"]
            else:
                assert sent.status_code == 202, (limit, used, sent.get_json())
                wait_for_status(app, sent.get_json()["assistant_message"]["id"])


def test_answer_limits_off(make_app, monkeypatch, upstream) -> None:  # noqa: ANN001
    monkeypatch.setenv("ANSWER_LIMITS", "off")
    app = make_app(ANSWERS_PER_MINUTE=1, MAX_CONCURRENT_ANSWERS=1, DAILY_TOKENS_PER_GUEST=1)
    upstream.set_default(Reply(tokens=[" x"] * 40, delay=0.05))
    doors = Doors(app)
    ids = [doors.send_rest("go").get_json()["assistant_message"]["id"] for _ in range(3)]  # all at once
    for message_id in ids:
        wait_for_status(app, message_id)
    assert doors.usage()["answers_today"] == 3  # still recorded, for the admin page


def test_usage_for_reports_today_and_totals(app) -> None:  # noqa: ANN001
    with app.app_context():
        busy, idle = User(time_zone="Asia/Kathmandu"), User(time_zone="No/Such_Zone")
        db.session.add_all([busy, idle])
        db.session.commit()
        today = datetime.now(ZoneInfo("Asia/Kathmandu")).date()
        db.session.add_all(
            [
                Usage(user_id=busy.id, day=today, answers=2, tokens=300),
                Usage(user_id=busy.id, day=today - timedelta(days=3), answers=5, tokens=1000),
            ]
        )
        db.session.commit()
        report = quotas.usage_for([busy.id, idle.id, "nobody"])
    assert report[busy.id] == {"answers_today": 2, "tokens_today": 300, "answers_total": 7, "tokens_total": 1300}
    zero = {"answers_today": 0, "tokens_today": 0, "answers_total": 0, "tokens_total": 0}
    assert report[idle.id] == report["nobody"] == zero


@pytest.mark.postgres
def test_ledger_on_postgres(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    app = make_app(DATABASE_URL=postgres_url, **NO_LIMITS)
    app.config["DAILY_TOKENS_PER_GUEST"] = 36
    upstream.set_default(Reply(tokens=[" a"] * 10))
    doors = Doors(app)
    for _ in range(2):  # the second charge updates the first's row
        wait_for_status(app, doors.send_rest("one two three").get_json()["assistant_message"]["id"])
    assert doors.usage() == {"answers_today": 2, "tokens_today": 36, "answers_total": 2, "tokens_total": 36}
    refused = doors.send_rest("one two three")
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "quota_exceeded"


def test_account_quota_and_a_guest_signing_in_keeps_its_usage(make_app, upstream) -> None:  # noqa: ANN001
    """Accounts get DAILY_TOKENS_PER_USER; signing in does not give a guest's spent tokens back."""
    from tests.auth import sign_in, sign_up, user_named

    app = make_app(DAILY_TOKENS_PER_USER=5, DAILY_TOKENS_PER_GUEST=1000)
    sign_up(Chat(app), "alice")
    guest = Chat(app)
    answer = guest.wait(guest.start("as a guest")[1])
    spent = answer.prompt_tokens + answer.completion_tokens
    assert spent > 5  # within the guest quota, over the account's
    assert sign_in(guest, "alice").status_code == 303
    alice_id = user_named(app, "alice").id
    with app.app_context():
        assert quotas.usage_for([alice_id])[alice_id]["tokens_today"] == spent
    refused = guest.post("/conversations", {"content": "again please"})
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert f"{spent}" in page and "5" in page and "again please" in page
