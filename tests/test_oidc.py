"""Single sign-on with OpenID Connect, against a real provider process (oidc-provider-mock) over HTTP."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.auth import all_users, oidc_user, serve
from tests.conftest import Chat

CLIENT = {"OIDC_CLIENT_ID": "chatapp", "OIDC_CLIENT_SECRET": "client-secret", "OIDC_LABEL": "Example ID"}


@pytest.fixture
def app(make_app, provider):  # noqa: ANN001, ANN201
    """The app with single sign-on through the provider (``live_server`` serves this one)."""
    return make_app(OIDC_ISSUER=provider, **CLIENT)


def browser(base_url: str) -> httpx.Client:
    """A browser without JavaScript: keeps cookies, does not follow redirects by itself."""
    return httpx.Client(base_url=base_url, timeout=10)


def csrf(client: httpx.Client, path: str = "/") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def sso(
    client: httpx.Client, provider: str, sub: str, start: str = "/sign-in/oidc", action: str = ""
) -> httpx.Response:
    """The whole redirect dance: to the provider, pick ``sub`` there, back to the app's callback."""
    to_provider = client.get(start)
    assert to_provider.status_code == 302, to_provider.text
    authorize = to_provider.headers["location"]
    assert authorize.startswith(f"{provider}/oauth2/authorize?")
    assert "nonce=" in authorize and "state=" in authorize
    form = {"sub": sub} | ({"action": action} if action else {})
    back = httpx.post(authorize, data=form, timeout=10)  # the person signs in at the provider
    assert back.status_code == 302, back.text
    callback = back.headers["location"]
    assert callback.startswith(f"{str(client.base_url).rstrip('/')}/sign-in/oidc/callback?")
    return client.get(callback)


def signed_in_as(client: httpx.Client) -> str | None:
    found = re.search(r"Signed in as <strong>([^<]+)</strong>", client.get("/").text)
    return found.group(1) if found else None


def test_the_sign_in_page_offers_single_sign_on_only_when_configured(make_app, provider) -> None:  # noqa: ANN001
    with_sso = Chat(make_app(OIDC_ISSUER=provider, **CLIENT)).get("/sign-in").get_data(as_text=True)
    assert "Sign in with Example ID" in with_sso and 'href="/sign-in/oidc"' in with_sso
    plain = make_app()
    assert "Sign in with" not in Chat(plain).get("/sign-in").get_data(as_text=True)
    assert plain.test_client().get("/sign-in/oidc").status_code == 404
    default_label = Chat(make_app(OIDC_ISSUER=provider, OIDC_CLIENT_ID="c", OIDC_CLIENT_SECRET="s"))
    assert "Sign in with 127.0.0.1" in default_label.get("/sign-in").get_data(as_text=True)


def test_a_guest_signs_in_with_the_provider_and_keeps_their_conversations(app, live_server, provider, upstream) -> None:  # noqa: ANN001
    oidc_user(provider, "sub-alice-1", email="alice@example.com", name="Alice Example", preferred_username="Alice")
    cafe = browser(live_server)
    sent = cafe.post("/conversations", data={"content": "Before signing in", "csrf_token": csrf(cafe)})
    assert sent.status_code == 303

    done = sso(cafe, provider, "sub-alice-1", start="/sign-in/oidc?next=/settings")
    assert done.status_code == 303 and done.headers["location"] == "/settings"
    assert signed_in_as(cafe) == "Alice Example"
    assert "Before signing in" in cafe.get("/").text
    (user,) = all_users(app)  # the guest became the account
    assert (user.username, user.oidc_subject, user.password_hash) == ("alice", "sub-alice-1", None)
    assert "Signed in as <strong>alice</strong> (single sign-on)" in cafe.get("/settings").text

    home = browser(live_server)  # another browser, same identity at the provider: the same account
    assert sso(home, provider, "sub-alice-1").status_code == 303
    assert "Before signing in" in home.get("/").text
    assert [u.id for u in all_users(app)] == [user.id]


def test_accounts_are_linked_by_sub_not_by_name(app, live_server, provider) -> None:  # noqa: ANN001
    oidc_user(provider, "sub-a", preferred_username="sam", name="Sam A")
    oidc_user(provider, "sub-b", preferred_username="sam", name="Sam B")
    first, second = browser(live_server), browser(live_server)
    sso(first, provider, "sub-a")
    sso(second, provider, "sub-b")
    assert (signed_in_as(first), signed_in_as(second)) == ("Sam A", "Sam B")
    assert sorted(u.username for u in all_users(app)) == ["sam", "sam-2"]


def test_signups_by_invite_apply_to_single_sign_on_too(make_app, provider) -> None:  # noqa: ANN001
    app = make_app(OIDC_ISSUER=provider, SIGNUPS="invite", **CLIENT)
    oidc_user(provider, "sub-stranger", name="Stranger")
    with serve(app) as url:
        refused = sso(browser(url), provider, "sub-stranger")
        assert refused.status_code == 403 and "by invitation" in refused.text
        assert all_users(app) == []

        from chatapp import accounts

        with app.app_context():
            invite = accounts.create_invite(accounts.make_admin("root", "root password")[0])
        invited = browser(url)
        page = invited.get(f"/sign-up?invite={invite}")
        assert f'href="/sign-in/oidc?invite={invite}"' in page.text
        assert sso(invited, provider, "sub-stranger", start=f"/sign-in/oidc?invite={invite}").status_code == 303
        assert signed_in_as(invited) == "Stranger"
        assert sso(browser(url), provider, "sub-stranger").status_code == 303  # linked now: no invite needed


def test_a_denied_or_forged_sign_in_changes_nothing(app, live_server, provider) -> None:  # noqa: ANN001
    client = browser(live_server)
    denied = sso(client, provider, "sub-x", action="deny")
    assert denied.status_code == 401 and "Single sign-on did not complete" in denied.text
    forged = client.get("/sign-in/oidc/callback?code=made-up&state=made-up")
    assert forged.status_code == 401
    assert signed_in_as(client) is None and all_users(app) == []


def test_a_disabled_account_cannot_sign_in_with_the_provider(app, live_server, provider) -> None:  # noqa: ANN001
    from chatapp import accounts
    from chatapp.extensions import db
    from chatapp.models import User

    client = browser(live_server)
    sso(client, provider, "sub-disabled")
    with app.app_context():
        accounts.set_disabled(db.session.scalar(db.select(User)), True)
    assert signed_in_as(client) is None
    refused = sso(client, provider, "sub-disabled")
    assert refused.status_code == 403 and "disabled" in refused.text
