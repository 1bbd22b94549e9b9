"""Live updates shared by every socket of one API process.

Each watched thing (the evaluation list; one evaluation) is a `Topic` with a single reader: it reads the
database once per tick, only while at least one socket watches it, and puts what changed into each socket's
queue, already encoded. So a thousand idle watchers of one evaluation cost what one costs.

With Redis configured, the process holds one pattern subscription to every live channel of this installation
(not one per socket): a message wakes the topic of its channel at once and log lines are forwarded; the
database is then read only on such a wake-up and every SAFETY_POLL_S (a message published while this process
was reconnecting is not lost). Without Redis, or while it is away, the topics read every POLL_S.

The database row stays the truth (see events.py). A topic outlives a restart of Redis or of the database:
while the database is away it waits and reads again; sockets stay open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..db import session_scope
from ..enums import ACTIVE, TERMINAL
from ..models import Evaluation
from . import access
from . import evaluations as service
from .accounts import SYSTEM_CALLER, Caller
from .errors import NotFound
from .events import channel, channel_pattern, list_channel

log = logging.getLogger(__name__)
POLL_S = 0.25
SAFETY_POLL_S = 1.0
RESUBSCRIBE_S = 2.0
DATABASE_RETRY_S = 1.0
LIST_WINDOW = 50
# Messages a socket may fall behind by before it is closed (1013, "try again later"): a client that stopped
# reading must not make the process hold every later update for it.
QUEUE_LIMIT = 256


@dataclass(frozen=True)
class Close:
    """Queued after the last message of a socket: close with `code` (None: the client has gone already)."""

    code: int | None


def encode(message: dict[str, Any]) -> str:
    """The text frame Starlette's `send_json` would send, built once for all sockets."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# What one kind of caller receives of a change: messages already encoded, possibly ending with a Close.
View = list["str | Close"]


def caller_key(caller: Caller) -> tuple[int | None, str]:
    """Callers who see the same things (access.py decides by user and role): one encoding per key and change."""
    return caller.user_id, caller.role.value


class Subscription:
    """One socket's queue of encoded messages, ended by a `Close`; `caller` decides what it may see."""

    def __init__(self, topic: Topic, caller: Caller):
        self.topic = topic
        self.caller = caller
        self.queue: asyncio.Queue[str | Close] = asyncio.Queue()
        self.closed = False

    def deliver(self, item: str | Close) -> None:
        if self.closed:
            return
        if isinstance(item, Close):
            self.closed = True
        elif self.queue.qsize() >= QUEUE_LIMIT:
            log.warning("a live socket stopped reading; closing it")
            self.closed = True
            item = Close(1013)
        self.queue.put_nowait(item)

    async def next(self) -> str | Close:
        return await self.queue.get()

    def cancel(self) -> None:
        self.topic.unsubscribe(self)


class Topic:
    """One watched thing with one reader for all its sockets. Subclasses say how to read it and what changed."""

    def __init__(self, hub: LiveHub, channel_name: str):
        self.hub = hub
        self.channel = channel_name
        self.subscribers: set[Subscription] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    # ---- for subclasses ---------------------------------------------------------------------------------
    def load(self) -> Any:
        """Read the current state (runs in a thread)."""
        raise NotImplementedError

    def update(self, state: Any) -> bool:
        """Broadcast what changed since the last state; False ends the topic (and its sockets)."""
        raise NotImplementedError

    def view(self, caller: Caller) -> View:
        """What a socket of this caller receives first: the current state as it may see it, if it has been read."""
        raise NotImplementedError

    def on_message(self, message: dict[str, Any]) -> None:
        """A Redis message on this topic's channel: anything but log lines means the row changed."""
        if message.get("type") != "log":
            self.wake.set()

    # ---- shared -----------------------------------------------------------------------------------------
    def subscribe(self, caller: Caller) -> Subscription:
        subscription = Subscription(self, caller)
        self.subscribers.add(subscription)
        for item in self.view(caller):
            subscription.deliver(item)
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"live {self.channel}")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.hub.forget(self)

    def broadcast(self, item: str | Close) -> None:
        for subscription in list(self.subscribers):
            subscription.deliver(item)

    def broadcast_views(self, view: Callable[[Caller], View]) -> None:
        """Deliver to each socket what its caller may see of a change, computed once per kind of caller."""
        views: dict[tuple[int | None, str], View] = {}
        for subscription in list(self.subscribers):
            key = caller_key(subscription.caller)
            if key not in views:
                views[key] = view(subscription.caller)
            for item in views[key]:
                subscription.deliver(item)

    async def _run(self) -> None:
        try:
            while True:
                self.wake.clear()  # before reading: a change made during the read wakes the next one
                try:
                    state = await run_in_threadpool(self.load)
                except OperationalError as exc:  # connection refused or lost, database locked: all pass
                    log.warning("live updates wait for the database: %s", str(exc).splitlines()[0])
                    await asyncio.sleep(DATABASE_RETRY_S)
                    continue
                if not self.update(state):
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.hub.poll_interval())
        except Exception:
            log.exception("live updates of %s failed", self.channel)
            self.broadcast(Close(1011))
        finally:
            self.hub.forget(self)


class ListTopic(Topic):
    """The evaluations a list page shows: the newest LIST_WINDOW and every queued or running one. Sockets get
    the items whose revision changed (all of them when they join), of those their caller may read."""

    def __init__(self, hub: LiveHub):
        super().__init__(hub, list_channel(hub.settings))
        self.revisions: dict[int, int] = {}
        self.current: list[dict[str, Any]] = []

    def load(self) -> list[dict[str, Any]]:
        with session_scope(self.hub.settings.database_url) as session:
            active = select(Evaluation.id).where(Evaluation.status.in_([s.value for s in ACTIVE]))
            recent = select(Evaluation.id).order_by(Evaluation.created_at.desc()).limit(LIST_WINDOW)
            ids = set(session.scalars(active)) | set(session.scalars(recent))
            rows = session.execute(select(*service.SUMMARY_COLUMNS).where(Evaluation.id.in_(ids))).all()
            # Read once for everyone (as the server); each socket then gets what its caller may see.
            return [s.model_dump(mode="json") for s in service.summaries(session, rows, SYSTEM_CALLER)]

    def update(self, state: list[dict[str, Any]]) -> bool:
        changed = [s for s in state if self.revisions.get(s["id"]) != s["revision"]]
        if changed or len(state) != len(self.current):  # an unchanged item may have left the window
            self.current = state
        if changed:
            self.revisions.update({s["id"]: s["revision"] for s in changed})
            self.broadcast_views(lambda caller: self._items_message(caller, changed))
        return True

    @staticmethod
    def _items_message(caller: Caller, items: list[dict[str, Any]]) -> View:
        seen = [item for item in (access.as_seen_by(caller, i) for i in items) if item is not None]
        return [encode({"type": "evaluations", "items": seen})] if seen else []

    def view(self, caller: Caller) -> View:
        return self._items_message(caller, self.current)


class EvaluationTopic(Topic):
    """One evaluation: its detail on every new revision and its log lines; the sockets are closed with 1000 once
    it is final, with 4404 if it does not exist."""

    def __init__(self, hub: LiveHub, evaluation_id: int):
        super().__init__(hub, channel(hub.settings, evaluation_id))
        self.evaluation_id = evaluation_id
        self.revision: int | None = None
        self.state: dict[str, Any] | None = None  # the last detail read (as the server sees it)
        self.final = False

    def load(self):
        try:
            with session_scope(self.hub.settings.database_url) as session:
                return service.show(session, self.evaluation_id, SYSTEM_CALLER)
        except NotFound as exc:
            return exc

    def _not_found(self) -> View:
        # Exactly what a caller gets for an id that does not exist: private work is not revealed.
        return [encode({"type": "error", "detail": f"evaluation {self.evaluation_id} does not exist"}), Close(4404)]

    def update(self, state) -> bool:
        if isinstance(state, NotFound):
            self.broadcast_views(lambda caller: self._not_found())
            return False
        if state.revision != self.revision:
            self.revision = state.revision
            self.state = state.model_dump(mode="json")
            self.final = state.status in TERMINAL
            self.broadcast_views(self.view)
        elif state.status in TERMINAL:
            self.final = True
            self.broadcast(Close(1000))
        return not self.final

    def view(self, caller: Caller) -> View:
        if self.state is None:
            return []
        seen = access.as_seen_by(caller, self.state)
        if seen is None:
            return self._not_found()
        return [encode({"type": "update", "evaluation": seen})] + ([Close(1000)] if self.final else [])

    def on_message(self, message: dict[str, Any]) -> None:
        super().on_message(message)
        if message.get("type") == "log" and self.state is not None:
            log_lines = encode({"type": "log", "lines": message.get("lines", [])})
            self.broadcast_views(lambda caller: [log_lines] if access.as_seen_by(caller, self.state) else [])


class RedisFeed:
    """The process' one Redis subscription: a pattern matching every live channel of this installation. Runs
    while any topic exists; reconnects every RESUBSCRIBE_S while Redis is away."""

    def __init__(self, hub: LiveHub):
        self.hub = hub
        self.listening = False
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name="live redis feed")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = pubsub = None
            try:
                client = aioredis.Redis.from_url(self.hub.settings.redis_url)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(channel_pattern(self.hub.settings))
                self._set_listening(True)
                async for message in pubsub.listen():
                    self.hub.dispatch(message)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("live updates poll the database until Redis is back: %s", exc)
            except Exception:  # never let the feed die silently: the topics poll meanwhile
                log.exception("live updates from Redis failed; polling the database")
            finally:
                self._set_listening(False)
                for connection in (pubsub, client):
                    with contextlib.suppress(Exception):
                        if connection is not None:
                            await connection.aclose()
            await asyncio.sleep(RESUBSCRIBE_S)

    def _set_listening(self, listening: bool) -> None:
        if listening != self.listening:
            self.listening = listening
            # Read at once: changes may have been missed meanwhile, and the poll interval changes.
            self.hub.wake_all()


class LiveHub:
    """The topics of one process (one event loop), created on the first socket and ended with the last."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.loop = loop
        self.topics: dict[str, Topic] = {}
        self.redis = RedisFeed(self) if settings.redis_url else None

    @classmethod
    def of(cls, state: Any, settings: Settings) -> LiveHub:
        """The hub kept on `state` (the app's), made anew for another event loop (each test client has its own)."""
        loop = asyncio.get_running_loop()
        hub = getattr(state, "live_hub", None)
        if hub is None or hub.loop is not loop:
            hub = state.live_hub = cls(settings, loop)
        return hub

    def watch_list(self, caller: Caller) -> Subscription:
        return self._topic(list_channel(self.settings), lambda: ListTopic(self)).subscribe(caller)

    def watch_evaluation(self, evaluation_id: int, caller: Caller) -> Subscription:
        return self._topic(channel(self.settings, evaluation_id),
                           lambda: EvaluationTopic(self, evaluation_id)).subscribe(caller)

    def _topic(self, channel_name: str, make: Callable[[], Topic]) -> Topic:
        topic = self.topics.get(channel_name)
        if topic is None:
            topic = self.topics[channel_name] = make()
            if self.redis is not None:
                self.redis.start()
        return topic

    def forget(self, topic: Topic) -> None:
        if self.topics.get(topic.channel) is topic:
            del self.topics[topic.channel]
        if not self.topics and self.redis is not None:
            self.redis.stop()

    def poll_interval(self) -> float:
        return SAFETY_POLL_S if self.redis is not None and self.redis.listening else POLL_S

    def wake_all(self) -> None:
        for topic in self.topics.values():
            topic.wake.set()

    def dispatch(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        topic = self.topics.get(name.decode() if isinstance(name, bytes) else name)
        if topic is None:
            return
        try:
            data = json.loads(message["data"])
        except (ValueError, TypeError):
            return
        if isinstance(data, dict):
            topic.on_message(data)
