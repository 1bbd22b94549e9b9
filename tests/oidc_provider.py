"""A small real OpenID Connect provider for tests, served on 127.0.0.1 (tests/threaded_server.py).

Discovery, JWKS, an authorization endpoint that signs in `user` without asking (or refuses when `deny` is set)
and a token endpoint that checks the client secret (HTTP Basic or form), the redirect URI, the one-time code and
the PKCE verifier (S256) before it hands out an RS256 ID token signed with joserfc. `id_token_changes` alters the
next ID tokens (another issuer, audience or nonce, an expired token) and `sign_with_other_key` signs them with a
key that is not in the JWKS, so tests can prove the client refuses each. `requests` keeps what arrived."""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from threaded_server import uvicorn_in_thread

CLIENT_ID, CLIENT_SECRET = "aieval-test-client", "client secret of the test"


@dataclass
class TestUser:
    sub: str = "subject-0001"
    preferred_username: str = "Alice.Example"
    name: str = "Alice Example"
    email: str = "alice@example.com"

    def claims(self) -> dict[str, Any]:
        return {"sub": self.sub, "preferred_username": self.preferred_username, "name": self.name,
                "email": self.email}


@dataclass
class OidcProvider:
    __test__ = False  # not a test class, whatever its module

    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    user: TestUser = field(default_factory=TestUser)
    deny: bool = False
    id_token_changes: dict[str, Any] = field(default_factory=dict)
    sign_with_other_key: bool = False
    issuer: str = ""  # set when it is served
    requests: list[tuple[str, dict]] = field(default_factory=list)

    def __post_init__(self):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})
        self._codes: dict[str, dict] = {}
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/jwks", self.jwks),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
        ])

    # ---- endpoints --------------------------------------------------------------------------------------
    async def discovery(self, _request: Request) -> JSONResponse:
        self.requests.append(("discovery", {}))
        return JSONResponse({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"], "scopes_supported": ["openid", "email", "profile"],
        })

    async def jwks(self, _request: Request) -> JSONResponse:
        self.requests.append(("jwks", {}))
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> JSONResponse | RedirectResponse:
        query = dict(request.query_params)
        self.requests.append(("authorize", query))
        problems = []
        if query.get("client_id") != self.client_id:
            problems.append("unknown client_id")
        if query.get("response_type") != "code":
            problems.append("response_type must be code")
        if "openid" not in query.get("scope", "").split():
            problems.append("scope lacks openid")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problems.append("PKCE S256 required")
        if not query.get("redirect_uri") or not query.get("state") or not query.get("nonce"):
            problems.append("redirect_uri, state and nonce required")
        if problems:
            return JSONResponse({"error": "invalid_request", "error_description": "; ".join(problems)}, 400)
        back = {"state": query["state"]}
        if self.deny:
            back |= {"error": "access_denied", "error_description": "the user said no"}
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = {"redirect_uri": query["redirect_uri"], "challenge": query["code_challenge"],
                                 "nonce": query["nonce"], "claims": self.user.claims(), "at": time.time()}
            back["code"] = code
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", status_code=302)

    def _client_authenticated(self, request: Request, form: dict) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and secrets.compare_digest(secret, self.client_secret)

    async def token(self, request: Request) -> JSONResponse:
        form = dict(await request.form())
        self.requests.append(("token", {k: v for k, v in form.items() if k != "client_secret"}))
        if not self._client_authenticated(request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        grant = self._codes.pop(form.get("code", ""), None)  # one use only
        if form.get("grant_type") != "authorization_code" or grant is None or time.time() - grant["at"] > 60:
            return JSONResponse({"error": "invalid_grant"}, 400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri differs"}, 400)
        if create_s256_code_challenge(form.get("code_verifier", "")) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verifier wrong"}, 400)
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  **grant["claims"], **self.id_token_changes}
        key = self.other_key if self.sign_with_other_key else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return JSONResponse({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300,
                             "id_token": id_token})


@contextlib.contextmanager
def serve_provider(**options):
    """An OidcProvider served on a free 127.0.0.1 port; its issuer is its base URL."""
    provider = OidcProvider(**options)
    with uvicorn_in_thread(provider.app) as server:
        provider.issuer = f"http://127.0.0.1:{server.config.port}"
        yield provider
