"""Accounts and access, through the plain forms (JavaScript off): sign-up, sign-in, guests, policy, limits."""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql

from chatapp import accounts
from chatapp.extensions import db
from chatapp.models import ApiToken, Conversation, User, utcnow
from tests.auth import (
    PASSWORD,
    all_users,
    api_status,
    api_token,
    image_files,
    sidebar_titles,
    sign_in,
    sign_up,
    signed_in_as,
    text,
    update_user,
    user_named,
)
from tests.conftest import Chat
from tests.test_images import picture, send_with_images


def api_conversations(app, token: str) -> list[str]:  # noqa: ANN001
    response = app.test_client().get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()
    return [item["title"] for item in response.get_json()["items"]]


# -- sign-up, sign-in, sign-out ---------------------------------------------------------------------------
def test_sign_up_sign_out_and_sign_in_again(chat: Chat) -> None:
    response = sign_up(chat, "Alice", display_name="Alice Liddell")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert signed_in_as(chat) == "Alice Liddell"
    assert user_named(chat.app, "alice") is not None  # usernames are kept lower-case

    response = chat.post("/sign-out")
    assert response.status_code == 303
    assert signed_in_as(chat) is None
    assert "Not signed in" in text(chat.get("/"))

    response = sign_in(chat, "ALICE", next="/settings")
    assert response.status_code == 303 and response.headers["Location"] == "/settings"
    assert signed_in_as(chat) == "Alice Liddell"


def test_failed_sign_in_says_nothing_about_which_part_was_wrong(chat: Chat) -> None:
    sign_up(chat, "alice")
    stranger = Chat(chat.app)
    wrong_password = sign_in(stranger, "alice", "not the password")
    no_such_user = sign_in(stranger, "nobody", PASSWORD)
    for response in (wrong_password, no_such_user):
        assert response.status_code == 401
        page = response.get_data(as_text=True)
        assert "Wrong username or password." in page
        assert 'id="form-error"' in page and 'aria-describedby="form-error"' in page
    assert text(wrong_password).replace("alice", "nobody") == text(no_such_user)  # the same page either way
    assert signed_in_as(stranger) is None


def test_passwords_are_stored_as_scrypt_hashes(chat: Chat) -> None:
    sign_up(chat, "alice")
    stored = user_named(chat.app, "alice").password_hash
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_sign_up_errors_sit_next_to_their_fields_and_keep_what_was_typed(chat: Chat) -> None:
    response = sign_up(chat, "al", "short", display_name="Al")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="username-error"' in page and 'aria-describedby="username-hint username-error"' in page
    assert 'value="al"' in page and 'value="Al"' in page  # typed text kept (never the password)

    response = sign_up(chat, "alice", "short")
    assert response.status_code == 422 and 'id="password-error"' in response.get_data(as_text=True)

    sign_up(Chat(chat.app), "bob")
    response = sign_up(chat, "Bob")
    assert response.status_code == 409 and "That username is taken" in text(response)


def test_next_only_leads_to_this_site(chat: Chat) -> None:
    sign_up(chat, "alice")
    chat.post("/sign-out")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = sign_in(chat, "alice", next=target)
        assert response.headers["Location"] == "/"
        chat.post("/sign-out")


# -- guests keep their conversations --------------------------------------------------------------------
def test_a_guest_who_signs_up_keeps_conversations_and_tokens(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("Guest question")
    chat.wait(answer_id)
    token = api_token(chat)
    guest_id = all_users(chat.app)[0].id

    assert sign_up(chat, "alice").status_code == 303
    assert sidebar_titles(chat) == ["Guest question"]
    assert chat.get(f"/c/{conversation_id}").status_code == 200
    assert user_named(chat.app, "alice").id == guest_id  # the guest became the account
    assert api_conversations(chat.app, token) == ["Guest question"]


def test_a_guest_who_signs_in_brings_conversations_into_the_account(app, upstream) -> None:  # noqa: ANN001
    home = Chat(app)
    sign_up(home, "alice")
    chat_id, answer = home.start("From home")
    home.wait(answer)

    cafe = Chat(app)  # another browser, chatting as a guest first
    guest_chat, answer = cafe.start("From the cafe")
    cafe.wait(answer)
    guest_token = api_token(cafe)
    assert len(all_users(app)) == 2

    assert sign_in(cafe, "alice").status_code == 303
    assert sorted(sidebar_titles(cafe)) == ["From home", "From the cafe"]
    assert sorted(sidebar_titles(home)) == ["From home", "From the cafe"]  # the same conversations everywhere
    assert home.get(f"/c/{guest_chat}").status_code == 200
    assert [u.username for u in all_users(app)] == ["alice"]  # the guest is gone, merged
    assert sorted(api_conversations(app, guest_token)) == ["From home", "From the cafe"]  # its token too


def test_signing_in_on_another_browser_shows_the_same_conversations(app, upstream) -> None:  # noqa: ANN001
    laptop, phone = Chat(app), Chat(app)
    sign_up(laptop, "alice")
    chat_id, answer = laptop.start("Shared everywhere")
    laptop.wait(answer)
    assert phone.get(f"/c/{chat_id}").status_code == 404
    sign_in(phone, "alice")
    assert sidebar_titles(phone) == ["Shared everywhere"]
    assert phone.get(f"/c/{chat_id}").status_code == 200


# -- sessions -----------------------------------------------------------------------------------------
def test_sign_out_everywhere_ends_every_session(app, upstream) -> None:  # noqa: ANN001
    laptop, phone = Chat(app), Chat(app)
    sign_up(laptop, "alice")
    chat_id, answer = laptop.start("Private")
    laptop.wait(answer)
    sign_in(phone, "alice")
    assert phone.get(f"/c/{chat_id}").status_code == 200

    laptop.get("/settings")
    response = laptop.post("/settings/sign-out-everywhere")
    assert response.status_code == 303 and response.headers["Location"] == "/sign-in"
    assert "You are signed out everywhere." in text(laptop.get("/sign-in"))
    for browser in (laptop, phone):
        assert signed_in_as(browser) is None
        assert browser.get(f"/c/{chat_id}").status_code == 404
    assert sign_in(phone, "alice").status_code == 303  # signing in again works
    assert phone.get(f"/c/{chat_id}").status_code == 200


def test_changing_the_password_signs_out_the_other_sessions(app) -> None:  # noqa: ANN001
    laptop, phone = Chat(app), Chat(app)
    sign_up(laptop, "alice")
    sign_in(phone, "alice")

    laptop.get("/settings")
    wrong = laptop.post("/settings/password", {"current_password": "nope", "new_password": "a new password"})
    assert wrong.status_code == 403
    page = wrong.get_data(as_text=True)
    assert 'id="current_password-error"' in page and "That is not your current password." in page

    changed = laptop.post("/settings/password", {"current_password": PASSWORD, "new_password": "a new password"})
    assert changed.status_code == 303
    assert signed_in_as(laptop) == "alice"  # this browser stays signed in
    assert signed_in_as(phone) is None
    assert sign_in(phone, "alice").status_code == 401
    assert sign_in(phone, "alice", "a new password").status_code == 303


# -- profile --------------------------------------------------------------------------------------------
def test_guests_have_a_stable_name_and_can_set_a_display_name_and_time_zone(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.start("hi")
    guest = all_users(chat.app)[0]
    assert re.fullmatch(r"Guest \d{4}", guest.name)
    assert guest.name in text(chat.get("/")) and guest.name in text(chat.get("/settings"))  # the same each time
    assert guest.time_zone == "UTC"

    bad = chat.post("/settings/profile", {"display_name": "Wanderer", "time_zone": "Mars/Olympus"})
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    assert 'id="time_zone-error"' in page and 'aria-describedby="time_zone-hint time_zone-error"' in page
    assert 'value="Wanderer"' in page  # what was typed stays

    saved = chat.post("/settings/profile", {"display_name": " Wanderer ", "time_zone": "Europe/Berlin"})
    assert saved.status_code == 303
    assert "Saved." in text(chat.get("/settings"))
    stored = all_users(chat.app)[0]
    assert (stored.display_name, stored.time_zone) == ("Wanderer", "Europe/Berlin")
    assert "Wanderer" in text(chat.get("/"))


def test_times_on_settings_are_shown_in_the_chosen_time_zone(chat: Chat) -> None:
    sign_up(chat, "alice")
    api_token(chat)
    chat.post("/settings/profile", {"display_name": "", "time_zone": "Asia/Tokyo"})
    with chat.app.app_context():
        row = db.session.scalars(db.select(ApiToken)).one()
        db.session.expunge_all()
    tokyo = accounts.local_time(row.created_at, "Asia/Tokyo").strftime("%Y-%m-%d %H:%M")
    page = text(chat.get("/settings"))
    assert "Created (Asia/Tokyo)" in page and tokyo in page


# -- deleting one's own account -----------------------------------------------------------------------------
def test_a_user_can_delete_their_account_with_every_conversation_file_and_token(chat: Chat, upstream) -> None:  # noqa: ANN001
    sign_up(chat, "alice")
    assert send_with_images(chat, "Look", picture()).status_code == 303
    chat.start("Another")
    token = api_token(chat)
    files = image_files(chat.app)
    assert files and all(os.path.exists(f) for f in files)

    confirm = chat.get("/settings/delete")
    assert confirm.status_code == 200 and "cannot be undone" in text(confirm)
    assert chat.post("/settings/delete", {"password": "wrong"}).status_code == 403
    response = chat.post("/settings/delete", {"password": PASSWORD})
    assert response.status_code == 303

    assert "Your account and everything in it were deleted." in text(chat.get("/sign-in"))
    assert not any(os.path.exists(f) for f in files)
    assert all_users(chat.app) == []
    with chat.app.app_context():
        assert db.session.scalar(db.select(db.func.count(Conversation.id))) == 0
        assert db.session.scalar(db.select(db.func.count(ApiToken.id))) == 0
    assert api_status(chat.app, token) == 401
    assert sign_in(Chat(chat.app), "alice").status_code == 401


def test_a_guest_can_delete_their_data(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.start("Forget me")
    chat.get("/settings/delete")
    assert chat.post("/settings/delete").status_code == 422  # the box must be ticked
    assert chat.post("/settings/delete", {"confirm": "yes"}).status_code == 303
    assert all_users(chat.app) == [] and sidebar_titles(chat) == []


# -- lazy guests and their retention ------------------------------------------------------------------
def test_pages_create_no_guest_until_an_action_needs_one(chat: Chat, upstream) -> None:  # noqa: ANN001
    for url in ("/", "/settings", "/sign-in", "/sign-up", "/c/1", "/healthz"):
        chat.get(url)
    assert all_users(chat.app) == []
    assert "Not signed in" in text(chat.get("/")) and sidebar_titles(chat) == []

    chat.start("First message")  # the first action that needs a guest makes it
    assert len(all_users(chat.app)) == 1
    chat.get("/")
    assert len(all_users(chat.app)) == 1

    other = Chat(chat.app)
    other.get("/settings")
    assert other.post("/settings/tokens", {"name": "script"}).status_code == 201  # so does creating a token
    assert len(all_users(chat.app)) == 2


def test_idle_guests_are_purged_with_their_files_by_the_command(app, upstream) -> None:  # noqa: ANN001
    idle, active, member = Chat(app), Chat(app), Chat(app)
    send_with_images(idle, "Old", picture())
    active.start("Recent")
    sign_up(member, "alice")
    users = {u.id: u for u in all_users(app)}
    idle_id = next(uid for uid, u in users.items() if u.is_guest and uid != _user_of(active))
    long_ago = utcnow() - timedelta(days=31)
    for uid in users:  # everyone looks idle, but only guests may go
        update_user(app, uid, last_seen_at=long_ago)
    update_user(app, _user_of(active), last_seen_at=utcnow() - timedelta(days=29))
    files = image_files(app)
    assert files and all(os.path.exists(f) for f in files)

    result = app.test_cli_runner().invoke(args=["purge-guests"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 guest idle for more than 30 days." in result.output
    remaining = {u.id for u in all_users(app)}
    assert idle_id not in remaining and _user_of(active) in remaining and user_named(app, "alice")
    assert not any(os.path.exists(f) for f in files)
    assert idle.get("/").status_code == 200 and sidebar_titles(idle) == []  # back to a fresh visitor

    assert "Deleted 1 guest" in app.test_cli_runner().invoke(args=["purge-guests", "--days", "28"]).output


def _user_of(chat: Chat) -> str:
    from flask.sessions import SecureCookieSessionInterface

    serializer = SecureCookieSessionInterface().get_signing_serializer(chat.app)
    return serializer.loads(chat.client.get_cookie("session").value)["uid"]


def test_a_periodic_sweep_deletes_idle_guests(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(GUEST_RETENTION_DAYS=7)
    guest = Chat(app)
    guest.start("Old news")
    guest_id = _user_of(guest)
    update_user(app, guest_id, last_seen_at=utcnow() - timedelta(days=8))

    restarted = make_app(GUEST_RETENTION_DAYS=7)  # a process whose first request starts a sweep
    restarted.test_client().get("/healthz")
    deadline = time.monotonic() + 10
    while any(u.id == guest_id for u in all_users(app)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all_users(app) == []


def test_last_seen_is_written_at_most_every_few_minutes(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.start("hi")
    uid = _user_of(chat)
    recently = utcnow() - timedelta(minutes=1)
    update_user(chat.app, uid, last_seen_at=recently)
    chat.get("/")
    assert all_users(chat.app)[0].last_seen_at == recently  # no write for a minute-old mark
    update_user(chat.app, uid, last_seen_at=utcnow() - timedelta(minutes=10))
    chat.get("/")
    assert utcnow() - all_users(chat.app)[0].last_seen_at < timedelta(minutes=1)

    token = api_token(chat)  # API use counts as activity too
    update_user(chat.app, uid, last_seen_at=utcnow() - timedelta(days=3))
    api_conversations(chat.app, token)
    assert utcnow() - all_users(chat.app)[0].last_seen_at < timedelta(minutes=1)


# -- access policy ------------------------------------------------------------------------------------------
def test_with_guests_off_the_page_asks_to_sign_in_and_the_api_refuses_guests(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(GUESTS="off")
    chat = Chat(app)
    response = chat.get("/")
    assert response.status_code == 303 and response.headers["Location"] == "/sign-in?next=/"
    assert chat.get("/settings").headers["Location"] == "/sign-in?next=/settings"
    hx = chat.client.get("/", headers={"HX-Request": "true"})
    assert hx.headers["HX-Redirect"] == "/sign-in?next=/"

    refused = app.test_client().post("/api/v1/auth/guest")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "guests_disabled"
    assert "sign in" in refused.get_json()["error"]["message"]

    chat.get("/sign-in")
    assert chat.post("/conversations", {"content": "hi"}).headers["Location"].startswith("/sign-in")
    assert all_users(app) == []  # no guest was made
    assert sign_up(chat, "alice").status_code == 303
    assert chat.get("/").status_code == 200
    chat.start("Members only")
    assert sidebar_titles(chat) == ["Members only"]


def test_turning_guests_off_keeps_their_conversations_for_when_they_sign_in(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    guest = Chat(app)
    guest.start("Before the change")
    token = api_token(guest)

    closed = make_app(GUESTS="off")  # the operator turns guests off and restarts
    guest.app = closed
    cookie = guest.client.get_cookie("session").value
    guest.client = closed.test_client()
    guest.client.set_cookie("session", cookie)
    assert guest.get("/").status_code == 303
    assert api_status(closed, token) == 401
    assert sign_up(guest, "alice").status_code == 303
    assert sidebar_titles(guest) == ["Before the change"]


def test_signups_by_invite_only(make_app) -> None:  # noqa: ANN001
    app = make_app(SIGNUPS="invite")
    chat = Chat(app)
    page = chat.get("/sign-up")
    assert page.status_code == 403 and "by invitation" in text(page)
    assert "by invitation" in text(chat.get("/sign-in"))
    assert sign_up(chat, "alice").status_code == 403
    assert all_users(app) == []

    with app.app_context():
        admin = accounts.make_admin("root", "root password")[0]
        invite = accounts.create_invite(admin)
    assert chat.get(f"/sign-up?invite={invite}").status_code == 200
    assert sign_up(chat, "alice", invite=invite).status_code == 303
    again = sign_up(Chat(app), "mallory", invite=invite)
    assert again.status_code == 403 and "used already" in text(again)


def test_signups_closed(make_app) -> None:  # noqa: ANN001
    app = make_app(SIGNUPS="closed")
    chat = Chat(app)
    assert chat.get("/sign-up").status_code == 403
    assert "Sign-ups are closed" in text(sign_up(chat, "alice"))
    assert all_users(app) == []


def test_production_defaults_take_guests_and_invite_only_sign_ups(make_app) -> None:  # noqa: ANN001
    app = make_app(CHATAPP_ENV="production")
    assert (app.config["GUESTS"], app.config["SIGNUPS"]) == ("on", "invite")
    assert app.test_client().post("/api/v1/auth/guest").status_code == 201
    development = make_app()
    assert (development.config["GUESTS"], development.config["SIGNUPS"]) == ("on", "open")


def test_a_bad_policy_setting_stops_start_up(make_app) -> None:  # noqa: ANN001
    from chatapp.config import ConfigError

    with pytest.raises(ConfigError, match="SIGNUPS must be open, invite or closed"):
        make_app(SIGNUPS="sometimes")
    with pytest.raises(ConfigError, match="GUESTS must be on or off"):
        make_app(GUESTS="maybe")
    with pytest.raises(ConfigError, match="set OIDC_CLIENT_ID, OIDC_CLIENT_SECRET"):
        make_app(OIDC_ISSUER="https://id.example")


# -- tokens belong to the account ------------------------------------------------------------------------
def test_a_revoked_token_is_refused_at_once(chat: Chat) -> None:
    sign_up(chat, "alice")
    token = api_token(chat)
    assert api_conversations(chat.app, token) == []
    with chat.app.app_context():
        token_id = db.session.scalars(db.select(ApiToken.id)).one()
    assert chat.post(f"/settings/tokens/{token_id}/revoke").status_code == 303
    response = chat.app.test_client().get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_disabled_user_is_signed_out_and_their_tokens_refused(chat: Chat) -> None:
    sign_up(chat, "alice")
    token = api_token(chat)
    alice = user_named(chat.app, "alice")
    with chat.app.app_context():
        assert accounts.is_active(alice.id)
        accounts.set_disabled(db.session.get(User, alice.id), True)
        assert not accounts.is_active(alice.id)
        assert ApiToken.user_for(token) is None
    assert signed_in_as(chat) is None
    response = chat.app.test_client().get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    refused = sign_in(chat, "alice")
    assert refused.status_code == 403 and "disabled" in text(refused)


# -- rate limits -------------------------------------------------------------------------------------------
def test_sign_in_is_limited_per_account(make_app) -> None:  # noqa: ANN001
    app = make_app(SIGNIN_LIMIT_PER_ACCOUNT="3 per minute")
    sign_up(Chat(app), "alice")
    sign_up(Chat(app), "bob")
    attacker = Chat(app)
    for _ in range(3):
        assert sign_in(attacker, "alice", "guess").status_code == 401
    limited = sign_in(attacker, "alice", "guess")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert re.search(r"Try again in \d+ seconds \(at \d\d:\d\d UTC\)", text(limited))
    assert sign_in(Chat(app), "alice").status_code == 429  # even with the right password, for now
    assert sign_in(Chat(app), "bob").status_code == 303  # other accounts are not affected


def test_sign_in_is_limited_per_ip_and_successes_do_not_count(make_app) -> None:  # noqa: ANN001
    app = make_app(SIGNIN_LIMIT_PER_IP="3 per minute")
    sign_up(Chat(app), "alice")
    for _ in range(5):
        assert sign_in(Chat(app), "alice").status_code == 303  # successes are not counted
    attacker = Chat(app)
    for name in ("bob", "carol", "dave"):
        assert sign_in(attacker, name, "guess").status_code == 401
    assert sign_in(attacker, "erin", "guess").status_code == 429
    elsewhere = Chat(app)
    elsewhere.client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert sign_in(elsewhere, "alice").status_code == 303


def test_guest_creation_is_limited_per_ip_on_the_page_and_the_api(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(GUEST_LIMIT_PER_IP="2 per hour")
    Chat(app).start("one")
    assert app.test_client().post("/api/v1/auth/guest").status_code == 201
    third = Chat(app)
    third.get("/")
    refused = third.post("/conversations", {"content": "three"})
    assert refused.status_code == 429
    assert "Too many new guests from your network. Try again in" in text(refused)
    assert "three" in refused.get_data(as_text=True)  # what was typed is offered back
    api = app.test_client().post("/api/v1/auth/guest")
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "rate_limited"
    assert 0 < int(api.headers["Retry-After"]) <= 3600
    assert len(all_users(app)) == 2

    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert elsewhere.post("/api/v1/auth/guest").status_code == 201


@pytest.mark.redis
def test_limits_hold_across_workers_with_redis(make_app, redis_url, redis_prefix) -> None:  # noqa: ANN001
    settings = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "GUEST_LIMIT_PER_IP": "2 per hour"}
    worker_a, worker_b = make_app(**settings), make_app(**settings)
    assert worker_a.test_client().post("/api/v1/auth/guest").status_code == 201
    assert worker_b.test_client().post("/api/v1/auth/guest").status_code == 201
    assert worker_a.test_client().post("/api/v1/auth/guest").status_code == 429
    assert worker_b.test_client().post("/api/v1/auth/guest").status_code == 429
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = client.keys(f"*{redis_prefix}*guest_limit_per_ip*")
    assert keys  # the counts live in Redis, where every worker and host sees them
    client.delete(*keys)
    client.close()


# -- the migration keeps existing guests' data ------------------------------------------------------------
def _migrate_with_data(app) -> None:  # noqa: ANN001
    """Build the previous release's schema with a guest and a conversation, then migrate to this one."""
    from flask_migrate import downgrade, upgrade

    with app.app_context():
        downgrade(revision="cbbcba93c6d2")
        db.session.execute(sql("INSERT INTO \"user\" (id, created_at) VALUES ('old-guest', '2026-01-01 00:00:00')"))
        db.session.execute(
            sql(
                "INSERT INTO conversation (id, user_id, title, created_at, updated_at) "
                "VALUES (1, 'old-guest', 'Kept', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        db.session.commit()
        upgrade()
        guest = db.session.get(User, "old-guest")
        assert guest.is_guest and guest.time_zone == "UTC" and guest.session_generation == 0 and not guest.is_admin
        assert db.session.get(Conversation, 1).user_id == "old-guest"  # nothing cascaded away


def test_the_migration_keeps_existing_guests_and_conversations(app) -> None:  # noqa: ANN001
    _migrate_with_data(app)


@pytest.mark.postgres
def test_the_migration_on_postgresql(make_app, postgres_url) -> None:  # noqa: ANN001
    app = make_app(DATABASE_URL=postgres_url)
    _migrate_with_data(app)
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        assert connection.execute(sql("SELECT count(*) FROM conversation")).scalar() == 1
    engine.dispose()
