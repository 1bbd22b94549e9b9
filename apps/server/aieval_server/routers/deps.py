from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import HTTPException, WebSocketException
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from ..config import Settings
from ..db import session_scope
from ..security import STATE_CHANGING_METHODS
from ..services import accounts, audit, tokens
from ..services.accounts import Caller
from ..storage import Storage, get_storage

SESSION_COOKIE = "aieval_session"
CSRF_HEADER = "X-CSRF-Token"
SIGN_IN_FIRST = "sign in first"
API_PREFIX = "/api/v1"  # as main.API_PREFIX (not imported from there: main imports the routers)
WRONG_CSRF = "missing or wrong CSRF token; reload the page"


async def settings_dep(request: Request) -> Settings:
    # async: trivial dependencies run on the event loop instead of costing a thread hop each
    return request.app.state.settings


def session_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


def storage_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> Storage:
    return get_storage(settings)


SettingsDep = Annotated[Settings, Depends(settings_dep)]
# scope="function": commit before the response is sent. FastAPI's default for `yield` dependencies runs the exit
# code after the response, so a client that saves and immediately reloads could read the old row.
SessionDep = Annotated[Session, Depends(session_dep, scope="function")]
StorageDep = Annotated[Storage, Depends(storage_dep)]


def session_token(connection: HTTPConnection) -> tuple[str | None, bool]:
    """(the session token, whether it came from the cookie). `Authorization: Bearer` wins: scripts and the CLI
    send it (a browser never adds it by itself, so such requests need no CSRF token)."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    return connection.cookies.get(SESSION_COOKIE), True


def client_address(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


async def address_dep(connection: HTTPConnection) -> None:
    """Makes the client's address known to the audit log (services/audit.request_address) for this request; for
    the routes that need no sign-in (caller_dep does it for all others)."""
    audit.request_address.set(client_address(connection))


def api_paths(connection: HTTPConnection) -> set[str]:
    """The request's path after the API prefix, as sent and as the template of the route that matched
    ("/tokens/{token_id}"; with or without the prefix, depending on how FastAPI includes routers): a token's
    refused paths are checked against both."""
    paths = {connection.scope["path"]}
    template = getattr(connection.scope.get("route"), "path_format", None)
    if template:
        paths.add(template)
    return {path.removeprefix(API_PREFIX) for path in paths}


def _refuse(connection: HTTPConnection, status_code: int, message: str):
    if connection.scope["type"] == "websocket":
        return WebSocketException(code=1008, reason=message)
    return HTTPException(status_code, message)


async def caller_dep(connection: HTTPConnection) -> Caller:
    """Who is calling; applied to every /api/v1 router in main.create_app, so no route can forget it.

    Sign-in off: the local user. On: the user of the session or of the personal API token (`Bearer aiev_...`,
    services/tokens.py), else 401 (a WebSocket handshake is refused with 1008 before it is accepted). A token's
    scope is checked here (403): `read` only reads, and no token manages tokens, accounts or passwords. A
    state-changing request authenticated by the cookie must also carry the session's CSRF token in X-CSRF-Token
    (403 otherwise). Also sets the client address for the audit log."""
    audit.request_address.set(client_address(connection))
    settings: Settings = connection.app.state.settings
    if not settings.auth_enabled:
        return accounts.LOCAL_CALLER
    token, from_cookie = session_token(connection)
    is_websocket = connection.scope["type"] == "websocket"
    method = None if is_websocket else connection.scope["method"]
    if token and not from_cookie and tokens.is_api_token(token):
        # a cached token costs no thread hop and no database round trip
        caller = tokens.cached_token(settings, token) or await run_in_threadpool(tokens.lookup_token, settings,
                                                                                  token)
        if caller is None:
            raise _refuse(connection, 401, tokens.TOKEN_NOT_VALID)
        for path in api_paths(connection):
            refusal = tokens.refusal(caller, method, path)
            if refusal is not None:
                raise _refuse(connection, 403, refusal)
    else:
        caller = None
        if token:  # a cached session costs no thread hop
            caller = accounts.cached_session(settings, token) or await run_in_threadpool(accounts.lookup_session,
                                                                                          settings, token)
        if caller is None:
            raise _refuse(connection, 401, SIGN_IN_FIRST)
    if from_cookie and method in STATE_CHANGING_METHODS:
        sent = connection.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), (caller.csrf_token or "").encode()):
            raise HTTPException(403, WRONG_CSRF)
    connection.state.caller = caller  # for code outside the routes (FastAPI already reuses it within a request)
    return caller


async def admin_dep(caller: Annotated[Caller, Depends(caller_dep)]) -> Caller:
    if not caller.is_admin:
        raise HTTPException(403, "only administrators may do this")
    return caller


CurrentUser = Annotated[Caller, Depends(caller_dep)]
AdminUser = Annotated[Caller, Depends(admin_dep)]
