"""Personal API tokens of the signed-in user (services/tokens.py). Only with a password session: a request
signed in with an API token is refused here (routers/deps.caller_dep)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..models import ApiToken
from ..schemas.ids import DatabaseId
from ..schemas.tokens import TokenCreate, TokenCreated, TokenRead
from ..services import tokens as service
from .deps import CurrentUser, SessionDep

router = APIRouter(prefix="/tokens", tags=["tokens"])


def token_read(row: ApiToken) -> TokenRead:
    return TokenRead(id=row.id, name=row.name, prefix=row.prefix, scope=row.scope, created_at=row.created_at,
                     expires_at=row.expires_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at,
                     active=service.is_active(row))


@router.get("")
def list_tokens(caller: CurrentUser, session: SessionDep) -> list[TokenRead]:
    """Your tokens, newest first, revoked and expired ones included; never the tokens themselves."""
    return [token_read(row) for row in service.list_tokens(session, caller)]


@router.post("", status_code=201, responses={409: {"description": "sign-in is off, or too many active tokens"}})
def create_token(body: TokenCreate, caller: CurrentUser, session: SessionDep) -> TokenCreated:
    """A new token for scripts and CI, sent as `Authorization: Bearer <token>`. The answer is the only time the
    token is shown: only its SHA-256 is stored."""
    new = service.create_token(session, caller, body.name, body.scope, body.expires_in_days)
    return TokenCreated(token=new.secret, **token_read(new.row).model_dump())


@router.delete("/{token_id}", status_code=204, responses={404: {"description": "no such token of yours"}})
def revoke_token(token_id: DatabaseId, caller: CurrentUser, session: SessionDep) -> Response:
    """Revoke one of your tokens (administrators: anyone's); it stops working at once on this server process and
    within a few seconds (AIEVAL_SESSION_CACHE_TTL_S) on the others."""
    service.revoke_token(session, caller, token_id)
    return Response(status_code=204)
