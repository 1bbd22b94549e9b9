"""WebSockets pushing evaluation updates. Each message carries the same data `show`/`list` return, so
clients may equally poll. Redis pub/sub (when configured) wakes the loop at once and carries log lines;
without it the loop re-reads the database a few times a second.

A socket outlives a restart of Redis or the database: while Redis is away the loop polls the database and
resubscribes every few seconds; while the database is away it waits and reads again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ..db import session_scope
from ..models import TERMINAL_STATUSES, Evaluation
from ..services import evaluations as service
from ..services.errors import NotFound
from ..services.events import channel, list_channel

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)
POLL_S = 0.25
LIST_WINDOW = 50
RESUBSCRIBE_S = 2.0
DATABASE_RETRY_S = 1.0


class _Wakeups:
    """Pub/sub wake-ups when Redis is configured and reachable; plain polling otherwise."""

    def __init__(self, redis_url: str, name: str):
        self.redis_url = redis_url
        self.name = name
        self.client = None
        self.pubsub = None
        self.next_attempt = 0.0

    async def __aenter__(self):
        await self._subscribe()
        return self

    async def __aexit__(self, *exc):
        await self._close()

    async def _subscribe(self) -> None:
        if not self.redis_url or time.monotonic() < self.next_attempt:
            return
        import redis.asyncio as aioredis

        try:
            self.client = aioredis.Redis.from_url(self.redis_url)
            self.pubsub = self.client.pubsub()
            await self.pubsub.subscribe(self.name)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("live updates poll the database until Redis is back: %s", exc)
            await self._close()
            self.next_attempt = time.monotonic() + RESUBSCRIBE_S

    async def _close(self) -> None:
        pubsub, client, self.pubsub, self.client = self.pubsub, self.client, None, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def next(self) -> list[dict]:
        """Messages that arrived (possibly none) after waiting at most a moment."""
        if self.pubsub is None:
            await self._subscribe()
        if self.pubsub is None:
            await asyncio.sleep(POLL_S)
            return []
        import redis.asyncio as aioredis

        messages = []
        try:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            while message is not None:
                with contextlib.suppress(ValueError, TypeError):
                    messages.append(json.loads(message["data"]))
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("live updates lost Redis, polling the database meanwhile: %s", exc)
            await self._close()
            self.next_attempt = time.monotonic() + RESUBSCRIBE_S
        return messages


async def _read_database(load, *args):
    """`load(*args)` in a thread; None while the database is unreachable (the socket stays open and retries)."""
    try:
        return await run_in_threadpool(load, *args)
    except OperationalError as exc:  # connection refused or lost, database locked: all pass
        log.warning("live updates wait for the database: %s", str(exc).splitlines()[0])
        await asyncio.sleep(DATABASE_RETRY_S)
        return None


async def _watch_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()


def _load_detail(database_url: str, evaluation_id: int):
    with session_scope(database_url) as session:
        return service.show(session, evaluation_id)


@router.websocket("/evaluations/{evaluation_id}/ws")
async def evaluation_updates(websocket: WebSocket, evaluation_id: int):
    settings = websocket.app.state.settings
    await websocket.accept()
    listener = asyncio.create_task(_watch_disconnect(websocket))
    last_revision = None
    try:
        async with _Wakeups(settings.redis_url, channel(settings, evaluation_id)) as wakeups:
            while not listener.done():
                try:
                    detail = await _read_database(_load_detail, settings.database_url, evaluation_id)
                except NotFound as exc:
                    await websocket.send_json({"type": "error", "detail": exc.message})
                    await websocket.close(code=4404)
                    return
                if detail is None:
                    continue
                if detail.revision != last_revision:
                    last_revision = detail.revision
                    await websocket.send_json({"type": "update", "evaluation": detail.model_dump(mode="json")})
                if detail.status in TERMINAL_STATUSES:
                    await websocket.close(code=1000)
                    return
                for message in await wakeups.next():
                    if message.get("type") == "log":
                        await websocket.send_json({"type": "log", "lines": message.get("lines", [])})
    except WebSocketDisconnect:
        return
    finally:
        listener.cancel()


def _load_list(database_url: str) -> list[dict]:
    with session_scope(database_url) as session:
        active = select(Evaluation.id).where(Evaluation.status.in_(("queued", "running")))
        recent = select(Evaluation.id).order_by(Evaluation.created_at.desc()).limit(LIST_WINDOW)
        ids = set(session.scalars(active)) | set(session.scalars(recent))
        rows = session.execute(select(*service.SUMMARY_COLUMNS).where(Evaluation.id.in_(ids))).all()
        return [s.model_dump(mode="json") for s in service.summaries(session, rows)]


@router.websocket("/evaluations/ws")
async def list_updates(websocket: WebSocket):
    settings = websocket.app.state.settings
    await websocket.accept()
    listener = asyncio.create_task(_watch_disconnect(websocket))
    seen: dict[int, int] = {}
    try:
        async with _Wakeups(settings.redis_url, list_channel(settings)) as wakeups:
            while not listener.done():
                summaries = await _read_database(_load_list, settings.database_url)
                if summaries is None:
                    continue
                changed = [s for s in summaries if seen.get(s["id"]) != s["revision"]]
                if changed:
                    seen.update({s["id"]: s["revision"] for s in changed})
                    await websocket.send_json({"type": "evaluations", "items": changed})
                await wakeups.next()
    except WebSocketDisconnect:
        return
    finally:
        listener.cancel()
