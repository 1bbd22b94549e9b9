"""Single sign-on with OpenID Connect, end to end over real sockets: the API (uvicorn, SQLite) and a real OpenID
provider (tests/oidc_provider.py) on 127.0.0.1; the test's HTTP client plays the browser, one redirect at a time.

Covered: first sign-in makes the account, the next one finds it; a local account of the same name is never taken
over; PKCE, state and nonce are sent and checked; tampered state or flow cookie, an expired flow, a refused
authorization, ID tokens with another issuer, audience or nonce, an expired one or one signed with an unknown key
are all refused; a disabled account is refused; `next` cannot redirect off the site; the provider is reached only
through the outbound policy."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from oidc_provider import CLIENT_ID, CLIENT_SECRET, serve_provider
from pydantic import SecretStr
from sqlalchemy import select
from threaded_server import uvicorn_in_thread

SSO = "/api/v1/auth/sso"


@pytest.fixture
def provider():
    with serve_provider() as running:
        yield running


@pytest.fixture
def sso_settings(settings, provider):
    return settings.model_copy(update={
        "auth_enabled": True, "oidc_issuer": provider.issuer, "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": SecretStr(CLIENT_SECRET), "oidc_display_name": "Example SSO",
        "initial_admin_username": "root", "initial_admin_password": SecretStr("root password long enough"),
    })


@pytest.fixture
def serve():
    from contextlib import ExitStack

    from aieval_server.main import create_app

    with ExitStack() as stack:
        def start(settings) -> str:
            server = stack.enter_context(uvicorn_in_thread(create_app(settings)))
            return f"http://127.0.0.1:{server.config.port}"

        yield start


@pytest.fixture
def base(serve, sso_settings) -> str:
    return serve(sso_settings)


def browser(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, follow_redirects=False)


def leave_for_provider(client: httpx.Client, next_path: str | None = "/evaluations") -> httpx.Response:
    response = client.get(f"{SSO}/login", params={"next": next_path} if next_path is not None else None)
    assert response.status_code == 302, response.text
    return response


def back_from_provider(client: httpx.Client, to_provider: httpx.Response) -> str:
    """The provider's answer to the authorization request: where it sends the browser back (the callback URL)."""
    answer = client.get(to_provider.headers["location"])
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def sign_in_with_sso(client: httpx.Client, next_path: str | None = "/evaluations") -> httpx.Response:
    return client.get(back_from_provider(client, leave_for_provider(client, next_path)))


def sso_error(response: httpx.Response) -> str | None:
    """The sso_error code of a redirect to the sign-in page (None when it goes elsewhere)."""
    assert response.status_code == 302, response.text
    where = urlsplit(response.headers["location"])
    if where.path != "/sign-in":
        return None
    return parse_qs(where.query)["sso_error"][0]


def users_of(settings):
    from aieval_server.db import session_scope
    from aieval_server.models import User

    with session_scope(settings.database_url) as session:
        return [(u.username, u.role, u.password_hash, u.oidc_issuer, u.oidc_subject, u.display_name)
                for u in session.scalars(select(User).order_by(User.id))]


def audit_of(settings) -> list[tuple[str, str, str | None, dict | None]]:
    from aieval_server.db import session_scope
    from aieval_server.models import AuditEvent

    with session_scope(settings.database_url) as session:
        return [(e.action, e.target_type, e.actor_name, e.detail)
                for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]


# ---- what the sign-in page asks ------------------------------------------------------------------------------
def test_sso_state_says_whether_the_button_is_shown(serve, settings, sso_settings):
    with browser(serve(sso_settings)) as client:
        assert client.get(SSO).json() == {"enabled": True, "display_name": "Example SSO",
                                          "login_url": f"{SSO}/login"}
    without_issuer = sso_settings.model_copy(update={"oidc_issuer": ""})
    with browser(serve(without_issuer)) as client:
        assert client.get(SSO).json() == {"enabled": False, "display_name": "Example SSO", "login_url": None}
        assert sso_error(client.get(f"{SSO}/login")) == "off"
        assert sso_error(client.get(f"{SSO}/callback", params={"code": "x", "state": "y"})) == "off"
    with browser(serve(sso_settings.model_copy(update={"auth_enabled": False}))) as client:
        assert client.get(SSO).json()["enabled"] is False  # no accounts without sign-in


# ---- the flow that works ---------------------------------------------------------------------------------------
def test_first_sign_in_makes_the_account_and_the_next_finds_it(base, provider, sso_settings):
    with browser(base) as client:
        to_provider = leave_for_provider(client, "/evaluations/12?tab=log")
        flow_cookie = to_provider.headers["set-cookie"]
        assert flow_cookie.startswith("aieval_sso_flow=")
        flags = {part.strip().lower() for part in flow_cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", f"path={SSO}", "max-age=600"} <= flags
        sent = parse_qs(urlsplit(to_provider.headers["location"]).query)
        assert sent["code_challenge_method"] == ["S256"] and len(sent["code_challenge"][0]) == 43
        assert sent["scope"] == ["openid email profile"] and sent["client_id"] == [CLIENT_ID]
        assert sent["redirect_uri"] == [f"{base}{SSO}/callback"]
        assert len(sent["state"][0]) >= 32 and len(sent["nonce"][0]) >= 32
        # Nothing secret of the flow is readable in the cookie: it is encrypted.
        assert sent["state"][0] not in flow_cookie and sent["nonce"][0] not in flow_cookie

        done = client.get(back_from_provider(client, to_provider))
        assert done.status_code == 302 and done.headers["location"] == "/evaluations/12?tab=log"
        cookies = done.headers.get_list("set-cookie")
        assert any(c.startswith("aieval_session=") and "httponly" in c.lower() for c in cookies)
        assert any(c.startswith('aieval_sso_flow=""') for c in cookies)  # the flow is over
        me = client.get("/api/v1/auth/me").json()
        assert me["user"] == {"id": 2, "username": "alice.example", "display_name": "Alice Example",
                              "role": "member", "is_local": False, "sso": True}
        assert client.get("/api/v1/models").status_code == 200  # a normal session

    token_request = [r for kind, r in provider.requests if kind == "token"][0]
    assert token_request["code_verifier"] and token_request["grant_type"] == "authorization_code"
    made = users_of(sso_settings)[1]
    assert made == ("alice.example", "member", "", provider.issuer, "subject-0001", "Alice Example")

    with browser(base) as client:  # another browser, the same person
        assert sso_error(sign_in_with_sso(client)) is None
        assert client.get("/api/v1/auth/me").json()["user"]["id"] == 2
        # The account has no password: password sign-in never works for it.
        refused = client.post("/api/v1/auth/login", json={"username": "alice.example", "password": ""})
        assert refused.status_code in (401, 422)
        refused = client.post("/api/v1/auth/login", json={"username": "alice.example", "password": "x" * 12})
        assert refused.status_code == 401
    assert len(users_of(sso_settings)) == 2
    events = [(action, target, actor, detail) for action, target, actor, detail in audit_of(sso_settings)
              if actor == "alice.example" and action != "sign_in_failed"]  # failed: the password tries above
    assert events == [("created", "user", "alice.example", {"role": "member", "single_sign_on": True}),
                      ("signed_in", "session", "alice.example", {"method": "sso"}),
                      ("signed_in", "session", "alice.example", {"method": "sso"})]


def test_a_local_account_of_the_same_name_is_not_taken_over(serve, sso_settings, provider):
    from aieval_server.db import session_scope
    from aieval_server.enums import UserRole
    from aieval_server.services import accounts

    base = serve(sso_settings.model_copy(update={"oidc_default_role": UserRole.viewer}))
    with session_scope(sso_settings.database_url) as session:
        accounts.create_user(session, "alice.example", "a local password", UserRole.admin)
    with browser(base) as client:
        assert sso_error(sign_in_with_sso(client)) is None
        me = client.get("/api/v1/auth/me").json()["user"]
        assert (me["username"], me["role"]) == ("alice.example-2", "viewer")


@pytest.mark.parametrize(("claim", "value", "expected"), [
    ("preferred_username", "Ünïcode Name!", "unicode-name"),
    ("preferred_username", "--", "user"),
    ("preferred_username", "x" * 100, "x" * 64),
    ("email", "Bob.Smith+tag@example.org", "bob.smith-tag"),
])
def test_usernames_are_made_valid(serve, sso_settings, provider, claim, value, expected):
    setattr(provider.user, claim, value)
    base = serve(sso_settings.model_copy(update={"oidc_username_claim": claim}))
    with browser(base) as client:
        assert sso_error(sign_in_with_sso(client)) is None
        assert client.get("/api/v1/auth/me").json()["user"]["username"] == expected


# ---- refusals ------------------------------------------------------------------------------------------------
def assert_not_signed_in(client: httpx.Client, response: httpx.Response) -> None:
    assert not any(c.startswith("aieval_session=") for c in response.headers.get_list("set-cookie"))
    assert client.get("/api/v1/auth/me").status_code == 401


def test_tampered_state_is_refused(base, provider, sso_settings):
    with browser(base) as client:
        callback = back_from_provider(client, leave_for_provider(client))
        state = parse_qs(urlsplit(callback).query)["state"][0]
        tampered = callback.replace(f"state={state}", f"state={state[:-2]}xy")
        response = client.get(tampered)
        assert sso_error(response) == "state"
        assert_not_signed_in(client, response)
    assert [kind for kind, _ in provider.requests] == ["discovery", "authorize"]  # the code was never exchanged
    assert len(users_of(sso_settings)) == 1


def test_a_forged_flow_cookie_or_none_is_refused(base):
    with browser(base) as client:
        callback = back_from_provider(client, leave_for_provider(client))
        sealed = client.cookies["aieval_sso_flow"]
        client.cookies.set("aieval_sso_flow", sealed[:-6] + ("AAAAAA" if not sealed.endswith("AAAAAA") else "BBBBBB"),
                           domain="127.0.0.1", path=SSO)
        response = client.get(callback)
        assert sso_error(response) == "state"
        assert_not_signed_in(client, response)
    with browser(base) as other_browser:  # a callback URL opened in a browser that never began the sign-in
        assert sso_error(other_browser.get(callback)) == "expired"


def test_an_expired_flow_is_refused(base, monkeypatch):
    import time

    from aieval_server.services import oidc

    monkeypatch.setattr(oidc, "FLOW_TTL_S", 1)
    with browser(base) as client:
        callback = back_from_provider(client, leave_for_provider(client))
        time.sleep(2.2)
        response = client.get(callback)
        assert sso_error(response) == "expired"
        assert_not_signed_in(client, response)


def test_a_refused_authorization_is_reported(base, provider):
    provider.deny = True
    with browser(base) as client:
        response = sign_in_with_sso(client)
        assert sso_error(response) == "denied"
        assert_not_signed_in(client, response)


@pytest.mark.parametrize("change", [
    {"id_token_changes": {"nonce": "another nonce"}},
    {"id_token_changes": {"iss": "http://127.0.0.1:1/another-issuer"}},
    {"id_token_changes": {"aud": "another-client"}},
    {"id_token_changes": {"aud": ["another-client"], "azp": "another-client"}},
    {"id_token_changes": {"exp": 1_000_000_000, "iat": 999_999_000}},
    {"sign_with_other_key": True},
], ids=["nonce", "issuer", "audience", "audience-list", "expired", "unknown-key"])
def test_an_invalid_id_token_is_refused(base, provider, sso_settings, change):
    for name, value in change.items():
        setattr(provider, name, value)
    with browser(base) as client:
        response = sign_in_with_sso(client)
        assert sso_error(response) == "id_token"
        assert_not_signed_in(client, response)
    assert len(users_of(sso_settings)) == 1  # no account made


def test_a_wrong_client_secret_is_refused(serve, sso_settings):
    base = serve(sso_settings.model_copy(update={"oidc_client_secret": SecretStr("not the secret")}))
    with browser(base) as client:
        response = sign_in_with_sso(client)
        assert sso_error(response) == "token"
        assert_not_signed_in(client, response)


def test_a_disabled_account_is_refused(base, sso_settings):
    from aieval_server.db import session_scope
    from aieval_server.models import User
    from aieval_server.services import accounts

    with browser(base) as client:
        assert sso_error(sign_in_with_sso(client)) is None
    with session_scope(sso_settings.database_url) as session:
        user_id = session.scalar(select(User.id).where(User.username == "alice.example"))
        accounts.update_user(session, user_id, disabled=True)
    with browser(base) as client:
        response = sign_in_with_sso(client)
        assert sso_error(response) == "disabled"
        assert_not_signed_in(client, response)
    assert ("sign_in_failed", "session", "alice.example", {"method": "sso", "reason": "disabled"}) \
        in audit_of(sso_settings)


@pytest.mark.parametrize("next_path", ["//evil.example/path", "https://evil.example/", "/\\evil.example",
                                       "/\\/evil.example", "javascript:alert(1)", "evaluations", "/\t/evil.example",
                                       "/" + "a" * 2001])
def test_next_cannot_leave_the_site(base, provider, next_path):
    with browser(base) as client:
        response = client.get(f"{SSO}/login", params={"next": next_path})
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("next must be ")
        assert "location" not in response.headers
    assert provider.requests == []


def test_without_next_the_browser_goes_home(base):
    with browser(base) as client:
        done = sign_in_with_sso(client, next_path=None)
        assert done.headers["location"] == "/"


def test_the_provider_is_reached_through_the_outbound_policy(serve, sso_settings, provider):
    # As in production: loopback is refused unless listed; the provider here is on loopback.
    closed = sso_settings.model_copy(update={"outbound_allow_loopback": False, "outbound_allow_private": False})
    with browser(serve(closed)) as client:
        assert sso_error(client.get(f"{SSO}/login")) == "unreachable"
    assert provider.requests == []
    listed = closed.model_copy(update={"outbound_allow_networks": ["127.0.0.1/32"]})
    with browser(serve(listed)) as client:
        assert sso_error(sign_in_with_sso(client)) is None
