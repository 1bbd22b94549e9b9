"""Notification channels of the caller and their delivery log (services/notifications.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ..enums import SIGNED_NOTIFICATION_KINDS, NotificationKind
from ..schemas.ids import DatabaseId
from ..schemas.notifications import (
    ChannelCreate,
    ChannelRead,
    ChannelTestResult,
    ChannelUpdate,
    DeliveryRead,
    NotificationKindRead,
)
from ..services import notifications as service
from .deps import CurrentUser, SessionDep, SettingsDep

router = APIRouter(prefix="/notification-channels", tags=["notifications"])
deliveries = APIRouter(prefix="/notification-deliveries", tags=["notifications"])
HIDDEN = {404: {"description": "no such channel of yours"}}


@router.get("")
def list_channels(session: SessionDep, caller: CurrentUser) -> list[ChannelRead]:
    """Your channels. The URL and secret are never shown: a hint of the URL and whether a secret is set."""
    return [service.to_read(channel) for channel in service.list_channels(session, caller)]


@router.post("", status_code=201, responses={422: {"description": "a bad URL, kind, secret or event list"}})
def create_channel(body: ChannelCreate, session: SessionDep, settings: SettingsDep, caller: CurrentUser) -> ChannelRead:
    """A channel told about your evaluations: when one succeeds, fails (or times out) or fails its gate."""
    return service.to_read(service.create_channel(session, settings, body, caller))


@router.get("/kinds")
def list_kinds(caller: CurrentUser) -> list[NotificationKindRead]:
    """The kinds of channel and which of them are signed: what the channel form offers, from the server's rules."""
    return [NotificationKindRead(kind=kind, signed=kind in SIGNED_NOTIFICATION_KINDS) for kind in NotificationKind]


@router.get("/{channel_id}", responses=HIDDEN)
def show_channel(channel_id: DatabaseId, session: SessionDep, caller: CurrentUser) -> ChannelRead:
    return service.to_read(service.get_channel(session, caller, channel_id))


@router.patch("/{channel_id}", responses=HIDDEN)
def update_channel(channel_id: DatabaseId, body: ChannelUpdate, session: SessionDep, settings: SettingsDep,
                   caller: CurrentUser) -> ChannelRead:
    return service.to_read(service.update_channel(session, settings, channel_id, body, caller))


@router.delete("/{channel_id}", status_code=204, responses=HIDDEN)
def delete_channel(channel_id: DatabaseId, session: SessionDep, caller: CurrentUser) -> Response:
    """Delete the channel and its delivery log."""
    service.delete_channel(session, channel_id, caller)
    return Response(status_code=204)


@router.post("/{channel_id}/test", responses=HIDDEN)
def test_channel(channel_id: DatabaseId, session: SessionDep, settings: SettingsDep,
                 caller: CurrentUser) -> ChannelTestResult:
    """Send a test message now and report what the receiver answered (once, no retries)."""
    return service.test_channel(session, settings, channel_id, caller)


@deliveries.get("", responses=HIDDEN)
def list_deliveries(session: SessionDep, caller: CurrentUser, channel_id: DatabaseId | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[DeliveryRead]:
    """The newest notifications sent to your channels (one channel's with `channel_id`): whether each arrived,
    after how many attempts, and the last error."""
    return service.list_deliveries(session, caller, channel_id, limit)
