from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..storage import Storage, get_storage


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
