"""Live progress for subscribers: Redis pub/sub when configured, otherwise subscribers poll the database.

Either way the database row (status, progress, revision) is the truth; a message only says "look again"
(and carries log lines, which are not worth a database write each)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from ..config import Settings

log = logging.getLogger(__name__)


def list_channel(settings: Settings) -> str:
    return f"{settings.key_prefix}aieval:evaluations"


def channel(settings: Settings, evaluation_id: int) -> str:
    return f"{settings.key_prefix}aieval:evaluation:{evaluation_id}"


def channel_pattern(settings: Settings) -> str:
    """A Redis PSUBSCRIBE pattern matching the list channel and every evaluation's channel (and nothing of
    another installation: glob characters in the prefix are escaped)."""
    prefix = re.sub(r"([\\*?\[\]])", r"\\\1", settings.key_prefix)
    return f"{prefix}aieval:evaluation*"


class Publisher:
    """Never raises and never holds a run up: while Redis is unreachable (restarting, say) messages are dropped,
    with one warning per outage and one attempt every RETRY_AFTER_S (a connection attempt may take seconds)."""

    RETRY_AFTER_S = 2.0

    def __init__(self, settings: Settings):
        self._client = None
        self.settings = settings
        self._down_since: float | None = None
        self._retry_at = 0.0
        if settings.redis_url:
            import redis

            self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, evaluation_id: int, message: dict[str, Any]) -> None:
        if self._client is None or time.monotonic() < self._retry_at:
            return
        data = json.dumps({"evaluation_id": evaluation_id, **message}, default=str)
        try:
            self._client.publish(channel(self.settings, evaluation_id), data)
            if message.get("type") != "log":
                self._client.publish(list_channel(self.settings), data)
        except Exception as exc:  # live events are best effort; the DB row stays the truth
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                log.warning("cannot publish live events (evaluation %s): %s; subscribers read the database until "
                            "Redis is back", evaluation_id, exc)
            self._retry_at = now + self.RETRY_AFTER_S
            return
        if self._down_since is not None:
            log.info("publishing live events again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None
