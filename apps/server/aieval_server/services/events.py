"""Live progress for subscribers: Redis pub/sub when configured, otherwise subscribers poll the database.

Either way the database row (status, progress, revision) is the truth; a message only says "look again"
(and carries log lines, which are not worth a database write each)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..config import Settings

log = logging.getLogger(__name__)


def list_channel(settings: Settings) -> str:
    return f"{settings.key_prefix}aieval:evaluations"


def channel(settings: Settings, evaluation_id: int) -> str:
    return f"{settings.key_prefix}aieval:evaluation:{evaluation_id}"


class Publisher:
    def __init__(self, settings: Settings):
        self._client = None
        self.settings = settings
        if settings.redis_url:
            import redis

            self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, evaluation_id: int, message: dict[str, Any]) -> None:
        if self._client is None:
            return
        data = json.dumps({"evaluation_id": evaluation_id, **message}, default=str)
        try:
            self._client.publish(channel(self.settings, evaluation_id), data)
            if message.get("type") != "log":
                self._client.publish(list_channel(self.settings), data)
        except Exception as exc:  # live events are best effort; the DB row stays the truth
            log.warning("cannot publish progress of evaluation %s: %s", evaluation_id, exc)
