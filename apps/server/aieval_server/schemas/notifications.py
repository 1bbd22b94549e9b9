"""Notification channels and their delivery log (services/notifications.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..enums import DeliveryStatus, NotificationEvent, NotificationKind

SUBSCRIBABLE = [event for event in NotificationEvent if event is not NotificationEvent.test]
_EVENTS_HELP = ("what to be told about: evaluation_succeeded, evaluation_failed (failed or timed out), gate_failed "
                "(a run's gate against its baseline)")


def _subscribable(events: list[NotificationEvent] | None) -> list[NotificationEvent] | None:
    if events is None:
        return None
    if NotificationEvent.test in events:
        raise ValueError("'test' is not an event to subscribe to: use the channel's test button")
    return list(dict.fromkeys(events))


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, description="e.g. 'team chat' or 'CI webhook'")
    kind: NotificationKind = Field(description="webhook (generic JSON, HMAC-signed), feishu (Feishu/Lark), "
                                               "dingtalk, wecom or slack")
    url: str = Field(min_length=1, max_length=2000, description="the receiver's address (a chat robot's webhook URL); "
                                                              "stored encrypted, shown only as a hint")
    secret: SecretStr | None = Field(default=None, max_length=500,
                                     description="signing secret (webhook, feishu, dingtalk); stored encrypted, "
                                                 "never returned")
    events: list[NotificationEvent] = Field(default_factory=lambda: list(SUBSCRIBABLE), min_length=1,
                                            description=_EVENTS_HELP)
    enabled: bool = True

    _events = field_validator("events")(_subscribable)


class ChannelUpdate(BaseModel):
    """Only the fields sent change. The URL and secret are never shown: send them again to change them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    kind: NotificationKind | None = None
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    secret: SecretStr | None = Field(default=None, max_length=500)
    clear_secret: bool = Field(default=False, description="remove the stored secret (messages are sent unsigned)")
    events: list[NotificationEvent] | None = Field(default=None, min_length=1, description=_EVENTS_HELP)
    enabled: bool | None = None

    _events = field_validator("events")(_subscribable)


class ChannelRead(BaseModel):
    id: int
    name: str
    kind: NotificationKind
    url_hint: str = Field(description="scheme, host and the URL's last characters; the URL itself is never shown")
    secret_set: bool = Field(description="a signing secret is stored (it is never shown)")
    events: list[NotificationEvent]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class DeliveryRead(BaseModel):
    """One notification sent (or being sent) to a channel."""

    id: int
    channel_id: int
    channel_name: str
    evaluation_id: int | None = Field(description="null for a test message")
    evaluation_name: str | None
    event: NotificationEvent
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    response_status: int | None = Field(description="the receiver's last HTTP status")
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="when a pending delivery is tried again")
    finished_at: datetime | None


class NotificationKindRead(BaseModel):
    """A kind of channel and whether its messages are signed with a secret (the form offers a secret field only
    for those)."""

    kind: NotificationKind
    signed: bool = Field(description="the receiver checks a signature made with the channel's secret; the other "
                                     "kinds take no secret (their URL is the secret)")


class ChannelTestResult(BaseModel):
    """What the receiver answered to one test message (sent once, not retried; also in the delivery log)."""

    ok: bool
    status_code: int | None = Field(description="the receiver's HTTP status; null when it could not be reached")
    response: str | None = Field(description="the start of the receiver's answer")
    error: str | None
    latency_ms: float | None
    delivery_id: int
