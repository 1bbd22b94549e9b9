"""Single sign-on with OpenID Connect (issue 9; docs/SECURITY.md "Single sign-on").

The authorization code flow with PKCE (S256), `state` and `nonce`:
1. `begin` reads the provider's discovery document (<issuer>/.well-known/openid-configuration), makes a fresh
   state, nonce and PKCE verifier, and returns the provider's authorization URL and the `Flow` to keep. The flow
   travels in a short-lived cookie, encrypted and authenticated with a key derived from the server's secret key
   (Fernet; FLOW_TTL_S), so any API process can finish it and nothing is stored per attempt.
2. `finish` checks the returned state against the flow, exchanges the code (with the client secret and the PKCE
   verifier) at the token endpoint and validates the ID token: signature with the provider's JWKS (an unknown key
   id reloads the JWKS once), iss, aud, exp/iat, nonce, azp and at_hash (authlib's CodeIDToken over joserfc).
3. `find_or_create_user` finds the account by (issuer, subject) or makes one at the first sign-in.

Every connection to the provider goes through the outbound policy (aieval_engine/netpolicy.py, the same rule as
model URLs), so a provider URL cannot be used to reach the cloud metadata service or, in production, loopback and
private networks that are not listed.

authlib's HTTP clients are built on httpx2, which cannot use the policy's httpx transport: the three HTTP calls
(discovery, JWKS, token) are made here with the guarded httpx client, and authlib/joserfc do the protocol parts
(PKCE challenge, token and claims validation)."""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from cryptography.fernet import Fernet, InvalidToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aieval_engine.netpolicy import OutboundPolicyError, guarded_client

from ..config import Settings
from ..enums import SsoErrorCode
from ..keyring import derived_cipher
from ..models import User
from . import accounts
from .errors import Invalid

log = logging.getLogger(__name__)

FLOW_TTL_S = 600  # from leaving for the provider to coming back: time to type a password and a second factor
METADATA_TTL_S = 3600.0  # discovery document and JWKS kept this long per process
JWKS_RELOAD_MIN_INTERVAL_S = 60.0  # an unknown key id reloads the JWKS at most this often (a flood reloads nothing)
CLOCK_LEEWAY_S = 60
HTTP_TIMEOUT_S = 10.0
# Asymmetric signatures only: an HS256 ID token would be signed with the client secret, which this server does not
# use as a verification key, and "none" is never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_NEXT_LENGTH = 2000
USERNAME_FALLBACK = "user"


class SsoError(Exception):
    """A sign-in that cannot go on; `code` goes to the sign-in page, `reason` only to the log."""

    def __init__(self, code: SsoErrorCode, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def is_enabled(settings: Settings) -> bool:
    return bool(settings.auth_enabled and settings.oidc_issuer.strip() and settings.oidc_client_id.strip())


# ---- where to go after signing in ---------------------------------------------------------------------------
_NEXT_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def safe_next(value: str | None) -> str:
    """A path on this site to go to after signing in; Invalid for anything that could leave it ("//evil.example",
    "https://...", "/\\evil.example", control characters): no open redirect."""
    if not value:
        return "/"
    problem = None
    if len(value) > MAX_NEXT_LENGTH:
        problem = f"at most {MAX_NEXT_LENGTH} characters"
    elif not value.startswith("/") or value.startswith("//") or _NEXT_FORBIDDEN.search(value):
        problem = "a path on this site starting with a single '/'"
    else:
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            problem = "a path on this site starting with a single '/'"
    if problem:
        raise Invalid(f"next must be {problem}, such as /evaluations", [f"next: must be {problem}"])
    return value


# ---- the flow kept in the browser between leaving for the provider and coming back ---------------------------
@dataclass(frozen=True)
class Flow:
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    next: str


def _flow_cipher(settings: Settings) -> Fernet:
    return derived_cipher(settings, b"aieval sso flow cookie")


def seal_flow(settings: Settings, flow: Flow) -> str:
    return _flow_cipher(settings).encrypt(json.dumps(asdict(flow)).encode()).decode()


def open_flow(settings: Settings, sealed: str | None) -> Flow:
    """The flow in the cookie; SsoError `expired` when it is missing or too old, `state` when it was altered."""
    if not sealed:
        raise SsoError(SsoErrorCode.expired, "no sign-in flow cookie (expired, or the sign-in began elsewhere)")
    fernet = _flow_cipher(settings)
    try:
        data = fernet.decrypt(sealed.encode(), ttl=FLOW_TTL_S)
    except InvalidToken:
        try:
            fernet.decrypt(sealed.encode())
        except InvalidToken:
            raise SsoError(SsoErrorCode.state, "the sign-in flow cookie is not one this server made") from None
        raise SsoError(SsoErrorCode.expired, f"the sign-in flow is older than {FLOW_TTL_S} s") from None
    return Flow(**json.loads(data))


# ---- the provider -------------------------------------------------------------------------------------------
@dataclass
class _Cached:
    value: dict
    loaded_at: float


class Provider:
    """The configured OpenID provider as this API process knows it: discovery document and JWKS, each cached
    for METADATA_TTL_S. One per app (`of`), so a settings change in tests never sees another app's cache."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.issuer = settings.oidc_issuer.strip()
        self._metadata: _Cached | None = None
        self._jwks: _Cached | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, app_state, settings: Settings) -> Provider:
        provider = getattr(app_state, "oidc_provider", None)
        if provider is None or provider.issuer != settings.oidc_issuer.strip():
            provider = app_state.oidc_provider = cls(settings)
        return provider

    def _get_json(self, url: str, what: str) -> dict:
        try:
            with guarded_client(self.settings.outbound_policy, timeout=HTTP_TIMEOUT_S) as client:
                response = client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, OutboundPolicyError, ValueError) as exc:
            raise SsoError(SsoErrorCode.unreachable, f"cannot read the provider's {what} at {url}: {exc}") from None
        if not isinstance(data, dict):
            raise SsoError(SsoErrorCode.unreachable, f"the provider's {what} at {url} is not a JSON object")
        return data

    def metadata(self) -> dict:
        with self._lock:
            cached = self._metadata
        if cached is not None and time.monotonic() - cached.loaded_at < METADATA_TTL_S:
            return cached.value
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        metadata = self._get_json(url, "discovery document")
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for.
        if str(metadata.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise SsoError(SsoErrorCode.unreachable, f"the discovery document at {url} names the issuer "
                                                     f"{metadata.get('issuer')!r}, not {self.issuer!r}")
        missing = [key for key in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not metadata.get(key)]
        if missing:
            raise SsoError(SsoErrorCode.unreachable, f"the discovery document at {url} lacks {', '.join(missing)}")
        with self._lock:
            self._metadata = _Cached(metadata, time.monotonic())
        return metadata

    def key_set(self, reload: bool = False) -> KeySet:
        with self._lock:
            cached = self._jwks
        age = time.monotonic() - cached.loaded_at if cached is not None else None
        if age is None or age >= METADATA_TTL_S or (reload and age >= JWKS_RELOAD_MIN_INTERVAL_S):
            jwks = self._get_json(self.metadata()["jwks_uri"], "key set (JWKS)")
            with self._lock:
                self._jwks = cached = _Cached(jwks, time.monotonic())
        try:
            return KeySet.import_key_set(cached.value)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise SsoError(SsoErrorCode.unreachable, f"the provider's JWKS cannot be read: {exc}") from None

    # ---- step 1 -------------------------------------------------------------------------------------------
    def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Flow]:
        metadata = self.metadata()
        flow = Flow(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                    code_verifier=secrets.token_urlsafe(48), redirect_uri=redirect_uri, next=next_path)
        params = {"response_type": "code", "client_id": self.settings.oidc_client_id, "redirect_uri": redirect_uri,
                  "scope": _scopes(self.settings), "state": flow.state, "nonce": flow.nonce,
                  "code_challenge": create_s256_code_challenge(flow.code_verifier),
                  "code_challenge_method": "S256"}
        endpoint = metadata["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}", flow

    # ---- step 2 -------------------------------------------------------------------------------------------
    def finish(self, flow: Flow, query: dict[str, str]) -> dict[str, Any]:
        """The validated ID token claims of the person the provider sent back."""
        if not secrets.compare_digest(query.get("state", "").encode(), flow.state.encode()):
            raise SsoError(SsoErrorCode.state, "the state in the callback is not the one this browser was sent with")
        if query.get("error"):
            code = SsoErrorCode.denied if query["error"] == "access_denied" else SsoErrorCode.provider
            raise SsoError(code, f"the provider answered {query['error']!r}: {query.get('error_description', '')}")
        if not query.get("code"):
            raise SsoError(SsoErrorCode.provider, "the callback has neither a code nor an error")
        tokens = self._exchange(flow, query["code"])
        return self._validate_id_token(tokens, flow.nonce)

    def _exchange(self, flow: Flow, code: str) -> dict:
        metadata = self.metadata()
        secret = self.settings.oidc_client_secret.get_secret_value() if self.settings.oidc_client_secret else ""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
                "code_verifier": flow.code_verifier}
        auth = None
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if not secret:  # a public client: PKCE alone
            form["client_id"] = self.settings.oidc_client_id
        elif "client_secret_basic" in methods:
            # RFC 6749 §2.3.1: both parts form-encoded before they go into the Basic header.
            auth = httpx.BasicAuth(quote(self.settings.oidc_client_id, safe=""), quote(secret, safe=""))
        else:
            form |= {"client_id": self.settings.oidc_client_id, "client_secret": secret}
        try:
            with guarded_client(self.settings.outbound_policy, timeout=HTTP_TIMEOUT_S) as client:
                response = client.post(metadata["token_endpoint"], data=form, auth=auth,
                                       headers={"Accept": "application/json"})
            answer = response.json()
        except (httpx.HTTPError, OutboundPolicyError, ValueError) as exc:
            raise SsoError(SsoErrorCode.token, f"the token endpoint could not be used: {exc}") from None
        if response.status_code != 200 or not isinstance(answer, dict) or "error" in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SsoError(SsoErrorCode.token, f"the token endpoint answered {response.status_code} {error!r}")
        if not answer.get("id_token"):
            raise SsoError(SsoErrorCode.token, "the token endpoint answered without an id_token (is 'openid' in "
                                               "AIEVAL_OIDC_SCOPES?)")
        return answer

    def _validate_id_token(self, tokens: dict, nonce: str) -> dict[str, Any]:
        metadata = self.metadata()
        advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        registry = JWSRegistry(algorithms=[a for a in advertised if a in SIGNING_ALGORITHMS] or ["RS256"])
        try:
            try:
                token = jwt.decode(tokens["id_token"], self.key_set(), registry=registry)
            except InvalidKeyIdError:  # the provider rotated its keys since the JWKS was read
                token = jwt.decode(tokens["id_token"], self.key_set(reload=True), registry=registry)
            options = {"iss": {"essential": True, "value": metadata["issuer"]},
                       "aud": {"essential": True, "value": self.settings.oidc_client_id}}
            params = {"nonce": nonce, "client_id": self.settings.oidc_client_id}
            if tokens.get("access_token"):
                params["access_token"] = tokens["access_token"]
            claims = CodeIDToken(token.claims, token.header, options, params)
            claims.validate(leeway=CLOCK_LEEWAY_S)
        except (JoseError, ValueError, TypeError) as exc:
            raise SsoError(SsoErrorCode.id_token, f"the ID token is not valid: {exc}") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise SsoError(SsoErrorCode.id_token, "the ID token has no subject")
        return dict(claims)


def _scopes(settings: Settings) -> str:
    scopes = settings.oidc_scopes.split()
    return " ".join(scopes if "openid" in scopes else ["openid", *scopes])


# ---- accounts -----------------------------------------------------------------------------------------------
def username_from(value: object) -> str:
    """A valid username (services/accounts.USERNAME) made from a claim: the part before '@' of an address,
    accents dropped, other characters replaced by '-'."""
    text = str(value) if isinstance(value, str | int) else ""
    text = unicodedata.normalize("NFKD", text.split("@", 1)[0]).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9._-]+", "-", text)
    text = re.sub(r"^[^a-z0-9]+", "", text)[:64].rstrip(".-_")
    return text or USERNAME_FALLBACK


def _free_username(session: Session, wanted: str) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`... whichever is free (an existing local account is never taken over:
    an SSO sign-in is matched by issuer and subject only)."""
    for number in range(1, 1000):
        suffix = "" if number == 1 else f"-{number}"
        candidate = wanted[:64 - len(suffix)] + suffix
        if session.scalar(select(User.id).where(User.username == candidate)) is None:
            return candidate
    return f"{wanted[:51]}-{secrets.token_hex(6)}"


def find_or_create_user(session: Session, settings: Settings, claims: dict[str, Any]) -> tuple[User, bool]:
    """The account of these ID token claims, made at the first sign-in, and whether it was made now. The caller
    refuses a disabled account."""
    issuer, subject = claims["iss"], claims["sub"]
    by_subject = select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
    user = session.scalar(by_subject)
    created = user is None
    if user is None:
        wanted = username_from(claims.get(settings.oidc_username_claim) or claims.get("email") or subject)
        display_name = str(claims.get("name") or "").strip()[:200]
        username = _free_username(session, accounts.check_username(wanted))
        # "" is no argon2 hash: password sign-in always fails for this account (accounts._verify).
        user = User(username=username, display_name=display_name or username, password_hash="",
                    role=settings.oidc_default_role.value, disabled=False, oidc_issuer=issuer, oidc_subject=subject)
        session.add(user)
        try:
            session.flush()
        except IntegrityError:
            # Another API process made the same account (or took the name) at the same moment. Nothing else was
            # written in this request yet: start over from its row.
            session.rollback()
            user, created = session.scalar(by_subject), False
            if user is None:
                raise
        else:
            log.info("single sign-on made the account %r (role %s) for subject %r of %s", user.username,
                     user.role, subject, issuer)
    return user, created
