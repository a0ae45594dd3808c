"""The admin page and the operators' commands: named admins, users with usage, disable, delete, links."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest

from chatapp import accounts, conversations, quotas
from chatapp.extensions import db
from chatapp.models import Conversation, Invite, Message, ResetLink, Usage, User, utcnow
from tests.auth import (
    PASSWORD,
    all_users,
    api_status,
    api_token,
    image_files,
    sign_in,
    sign_up,
    signed_in_as,
    text,
    user_named,
)
from tests.conftest import Chat
from tests.test_images import picture, send_with_images


@pytest.fixture
def admin_app(make_app):  # noqa: ANN001, ANN201
    return make_app(ADMIN_USERS="root, Ops")


@pytest.fixture
def admin(admin_app) -> Chat:  # noqa: ANN001
    chat = Chat(admin_app)
    assert sign_up(chat, "root").status_code == 303
    return chat


def row_of(page: str, name: str) -> str:
    """The admin table's row for the user called ``name``, as text."""
    rows = re.findall(r"<tr id=\"user-[^\"]+\">(.*?)</tr>", page, re.S)
    found = [" ".join(re.sub(r"<[^>]+>", " ", r).split()) for r in rows if f">{name}" in r]
    assert found, f"no row for {name}"
    return found[0]


def link_on(response) -> str:  # noqa: ANN001
    return re.search(r'<code id="new-link">([^<]+)</code>', response.get_data(as_text=True)).group(1)


def test_admin_is_only_for_named_admins(admin_app) -> None:  # noqa: ANN001
    first = Chat(admin_app)
    sign_up(first, "alice")  # the first to sign up is nobody special
    assert first.get("/admin").status_code == 404
    assert first.post("/admin/invites").status_code == 404
    assert "Admin" not in re.sub(r"<title>.*?</title>", "", first.get("/").get_data(as_text=True))

    anonymous = Chat(admin_app)
    assert anonymous.get("/admin").status_code == 404
    guest = Chat(admin_app)
    guest.get("/settings")
    guest.post("/settings/tokens", {"name": "x"})
    assert guest.get("/admin").status_code == 404

    ops = Chat(admin_app)
    sign_up(ops, "ops")  # named in ADMIN_USERS (compared lower-case)
    assert ops.get("/admin").status_code == 200
    assert 'href="/admin"' in ops.get("/").get_data(as_text=True)


def test_create_admin_makes_a_new_admin_account_or_promotes_one(make_app) -> None:  # noqa: ANN001
    app = make_app()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "Boss"], input="boss password\nboss password\n")
    assert result.exit_code == 0, result.output
    assert "Created boss: an admin." in result.output
    boss = Chat(app)
    assert sign_in(boss, "boss", "boss password").status_code == 303
    assert boss.get("/admin").status_code == 200

    alice = Chat(app)
    sign_up(alice, "alice")
    assert alice.get("/admin").status_code == 404
    result = runner.invoke(args=["create-admin", "alice"])
    assert result.exit_code == 0 and "Updated alice: an admin." in result.output
    assert alice.get("/admin").status_code == 200

    short = runner.invoke(args=["create-admin", "carol"], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.output


def test_set_password_recovers_an_account_without_email(app) -> None:  # noqa: ANN001
    alice = Chat(app)
    sign_up(alice, "alice")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["set-password", "alice"], input="recovered password\nrecovered password\n")
    assert result.exit_code == 0 and "signed out" in result.output
    assert signed_in_as(alice) is None  # every session of the account ends
    assert sign_in(Chat(app), "alice").status_code == 401
    assert sign_in(Chat(app), "alice", "recovered password").status_code == 303
    missing = runner.invoke(args=["set-password", "nobody"], input="recovered password\nrecovered password\n")
    assert missing.exit_code != 0 and "no account named" in missing.output


def test_the_users_list_shows_usage_today_and_in_total(admin: Chat, upstream) -> None:  # noqa: ANN001
    alice = Chat(admin.app)
    sign_up(alice, "alice", display_name="Alice L")
    alice.wait(alice.start("one")[1])
    alice_id = user_named(admin.app, "alice").id
    with admin.app.app_context():  # alice's first answer was two days ago
        db.session.execute(db.update(Usage).where(Usage.user_id == alice_id).values(day=Usage.day - timedelta(days=2)))
        db.session.commit()
    alice.wait(alice.start("two")[1])
    guest = Chat(admin.app)
    guest.wait(guest.start("as a guest")[1])
    with admin.app.app_context():
        answers = list(db.session.scalars(db.select(Message).filter_by(role="assistant").order_by(Message.id)))
        tokens = [m.prompt_tokens + m.completion_tokens for m in answers]
        assert all(tokens)
        guest_name = db.session.scalar(db.select(User).filter_by(username=None)).name
        usage = quotas.usage_for([alice_id, "nobody"])
        # The ledger keeps usage when conversations are deleted: the admin page still counts it.
        for conversation in Conversation.for_user(alice_id):
            conversations.delete(conversation)
    alice_usage = usage[alice_id]
    assert alice_usage == {
        "answers_today": 1,
        "tokens_today": tokens[1],
        "answers_total": 2,
        "tokens_total": tokens[0] + tokens[1],
    }
    assert usage["nobody"]["answers_total"] == 0

    page = admin.get("/admin").get_data(as_text=True)
    # Name, kind, last seen (date and time), answers today, tokens today, answers and tokens in total, status
    alice_row = row_of(page, "Alice L").split()
    assert alice_row[:4] == ["Alice", "L", "(alice)", "account"]
    assert alice_row[6:11] == ["1", f"{tokens[1]:,}", "2", f"{tokens[0] + tokens[1]:,}", "active"]
    guest_row = row_of(page, guest_name).split()
    assert guest_row[2] == "guest" and guest_row[5:10] == ["1", f"{tokens[2]:,}", "1", f"{tokens[2]:,}", "active"]
    assert " admin " in row_of(page, "root")
    guests_only = admin.get("/admin?kind=guests").get_data(as_text=True)
    assert guest_name in guests_only and "Alice L" not in guests_only


def test_disabling_signs_out_and_refuses_tokens_until_enabled(admin: Chat) -> None:
    alice = Chat(admin.app)
    sign_up(alice, "alice")
    token = api_token(alice)
    alice_id = user_named(admin.app, "alice").id
    api = admin.app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/conversations", headers=headers).status_code == 200

    admin.get("/admin")
    assert admin.post(f"/admin/users/{alice_id}/disable").status_code == 303
    assert "alice is disabled." in text(admin.get("/admin"))
    assert " disabled " in f" {row_of(admin.get('/admin').get_data(as_text=True), 'alice')} "
    assert signed_in_as(alice) is None
    assert api.get("/api/v1/conversations", headers=headers).status_code == 401
    assert sign_in(alice, "alice").status_code == 403

    assert admin.post(f"/admin/users/{alice_id}/enable").status_code == 303
    assert api.get("/api/v1/conversations", headers=headers).status_code == 200
    assert sign_in(alice, "alice").status_code == 303


def test_admins_cannot_disable_or_delete_themselves_here(admin: Chat) -> None:
    root_id = user_named(admin.app, "root").id
    admin.get("/admin")
    assert admin.post(f"/admin/users/{root_id}/disable").status_code == 409
    assert admin.post(f"/admin/users/{root_id}/delete").status_code == 409
    assert user_named(admin.app, "root").disabled_at is None


def test_deleting_a_user_deletes_their_data_and_files(admin: Chat, upstream) -> None:  # noqa: ANN001
    alice = Chat(admin.app)
    sign_up(alice, "alice")
    send_with_images(alice, "Look at this", picture())
    token = api_token(alice)
    alice_id = user_named(admin.app, "alice").id
    files = image_files(admin.app)
    assert files and all(os.path.exists(f) for f in files)

    confirm = admin.get(f"/admin/users/{alice_id}/delete")
    assert confirm.status_code == 200 and "1 conversation," in text(confirm)
    assert admin.post(f"/admin/users/{alice_id}/delete").status_code == 303
    assert "alice and all their data were deleted." in text(admin.get("/admin"))
    assert user_named(admin.app, "alice") is None
    assert not any(os.path.exists(f) for f in files)
    assert api_status(admin.app, token) == 401
    assert signed_in_as(alice) is None
    assert admin.get("/admin/users/nobody/delete").status_code == 404


def test_invite_links_are_shown_once_work_once_and_expire(make_app) -> None:  # noqa: ANN001
    app = make_app(ADMIN_USERS="root", SIGNUPS="invite")
    admin = Chat(app)
    with app.app_context():
        accounts.make_admin("root", PASSWORD)
    sign_in(admin, "root")
    admin.get("/admin")
    response = admin.post("/admin/invites")
    assert response.status_code == 201
    link = link_on(response)
    assert link.startswith("http://localhost/sign-up?invite=")
    assert link not in admin.get("/admin").get_data(as_text=True)  # shown once
    with app.app_context():
        assert link.split("=", 1)[1] not in {i.token_hash for i in db.session.scalars(db.select(Invite))}

    newcomer = Chat(app)
    path = link.replace("http://localhost", "")
    assert newcomer.get(path).status_code == 200
    assert sign_up(newcomer, "newcomer", invite=path.split("=", 1)[1]).status_code == 303
    again = Chat(app)
    assert again.get(path).status_code == 403
    assert sign_up(again, "second", invite=path.split("=", 1)[1]).status_code == 403

    expired = link_on(admin.post("/admin/invites")).split("=", 1)[1]
    with app.app_context():
        db.session.execute(db.update(Invite).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    assert "has expired" in text(sign_up(Chat(app), "late", invite=expired))

    revoked = link_on(admin.post("/admin/invites")).split("=", 1)[1]
    with app.app_context():
        invite_id = db.session.scalar(db.select(Invite.id).where(Invite.used_at.is_(None)).order_by(Invite.id.desc()))
    assert admin.post(f"/admin/invites/{invite_id}/revoke").status_code == 303
    assert sign_up(Chat(app), "revoked", invite=revoked).status_code == 403


def test_reset_links_set_a_new_password_once(admin: Chat) -> None:
    alice = Chat(admin.app)
    sign_up(alice, "alice")
    alice_id = user_named(admin.app, "alice").id
    admin.get("/admin")
    response = admin.post(f"/admin/users/{alice_id}/reset-link")
    assert response.status_code == 201
    path = link_on(response).replace("http://localhost", "")
    assert path.startswith("/reset/")

    browser = Chat(admin.app)
    form = browser.get(path)
    assert form.status_code == 200 and 'autocomplete="new-password"' in form.get_data(as_text=True)
    assert browser.post(path, {"password": "short"}).status_code == 422
    done = browser.post(path, {"password": "brand new password"})
    assert done.status_code == 303 and done.headers["Location"] == "/sign-in"
    assert "Your password was changed" in text(browser.get("/sign-in"))
    assert signed_in_as(alice) is None  # the old sessions are signed out
    assert sign_in(browser, "alice", "brand new password").status_code == 303
    assert Chat(admin.app).get(path).status_code == 403  # used once
    assert Chat(admin.app).post(path, {"password": "another password"}).status_code == 403

    expired = link_on(admin.post(f"/admin/users/{alice_id}/reset-link")).replace("http://localhost", "")
    with admin.app.app_context():
        db.session.execute(db.update(ResetLink).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    assert "has expired" in text(Chat(admin.app).get(expired))


def test_guests_have_no_reset_link(admin: Chat, upstream) -> None:  # noqa: ANN001
    guest = Chat(admin.app)
    guest.start("hi")
    guest_id = next(u.id for u in all_users(admin.app) if u.is_guest)
    admin.get("/admin")
    assert admin.post(f"/admin/users/{guest_id}/reset-link").status_code == 422
