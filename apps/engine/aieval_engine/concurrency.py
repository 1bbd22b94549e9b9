"""How many requests a run keeps in flight against one model server: a fixed number, or one that adapts.

A model team points the platform at a server that takes hundreds of requests at once and sets nothing; another
points it at a gateway that answers 429 above 16. `AdaptiveLimiter` finds either on its own, within a ceiling an
administrator can set; `FixedLimiter` keeps the number someone chose. Both are pure asyncio (one event loop, no
threads, no OpenCompass) and are used the same way by the request pool:

    await limiter.acquire()          # waits for a free slot (and for the end of a Retry-After pause)
    ... send one request ...
    limiter.release(Outcome(latency_s, "ok" | "overloaded" | "timeout" | "error", retry_after_s))

The adaptive algorithm is TCP Vegas as Netflix's concurrency-limits library applies it to request concurrency
(VegasLimit), with TCP's slow start in front and TCP's multiplicative decrease on explicit refusals:

- Slow start: the limit doubles every window (one window = about `limit` answered requests, i.e. one round
  trip) while answers come back without queueing.
- Vegas: each window's mean latency is compared with the lowest window mean seen (the server's no-load latency).
  `queue = limit * (1 - base / mean)` estimates how many of our requests wait in the server's queue. Below alpha
  (3 * log10(limit), at least 10 % of the limit) the limit grows by log10(limit) per window; above beta (twice alpha) it drops straight
  to what keeps alpha requests queued (`limit * base / mean + alpha`), so a server that holds 64 and queues
  beyond settles a few above 64 instead of filling its queue. Window means rather than single latencies are
  compared so that answers of different lengths average out.
- Refusals (429/503) and timeouts: the limit is multiplied by 0.9 (halved when still in slow start), at most once
  per round trip: only a request sent after the last decrease can cause another one, so a burst of refusals to
  one overshoot counts once. A `Retry-After` pauses every new acquisition until then (one pause for the whole
  limiter, not per request); requests already in flight continue.
- After a refusal, growth slows to one slot per `limit` windows near the limit that was refused, so a server
  with a hard cap is probed rarely (each probe costs a refusal, and its Retry-After a pause).
- The limit grows only when it was actually used (most of the slots were taken during the window), so an idle
  phase does not inflate it, and it stays within [floor, ceiling] at all times.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

Status = Literal["ok", "overloaded", "timeout", "error"]

# Where slow start begins. Reaching a big server's concurrency costs one round trip per doubling, during which it
# idles: from 8, three round trips to 64 (about 1 s lost against a 0.5 s server, a tenth of a 1,000-question run);
# from 16, two. Not more: 16 stays at or below what small gateways take (the 429 tests: a cap of 16, no refusal in
# the first round trip), where starting above the cap costs a refused first burst and its Retry-After pause.
DEFAULT_INITIAL = 16
DEFAULT_CEILING = 256
# A Retry-After longer than this is taken as this: a misconfigured server must not stall a run for hours.
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class Outcome:
    """What became of one request: how long it took, and how it ended.

    `overloaded` is the server saying "too many" (HTTP 429 or 503); `error` is anything that says nothing about
    load (a 400, a refused key): it frees the slot and changes nothing else."""

    latency_s: float
    status: Status = "ok"
    retry_after_s: float | None = None


def classify_status(http_status: int | None) -> Status:
    """The outcome status of an HTTP answer: 2xx ok, 429/503 overloaded, anything else (or none) an error."""
    if http_status is None:
        return "error"
    if 200 <= http_status < 300:
        return "ok"
    if http_status in (429, 503):
        return "overloaded"
    return "error"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds ("2", "0.5") or an HTTP date; None when
    absent or unreadable. Never negative, at most MAX_RETRY_AFTER_S."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Limiter(Protocol):
    limit: int
    in_flight: int

    async def acquire(self) -> None: ...

    def release(self, outcome: Outcome) -> None: ...


class _SlotLimiter:
    """Slots handed out in arrival order (first waiter first) up to `limit`, and the Retry-After pause."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.paused_until = 0.0  # time.monotonic(); no acquisition succeeds before it
        self._waiters: deque[asyncio.Future] = deque()
        self._pause_timer: asyncio.TimerHandle | None = None

    @property
    def limit(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _has_room(self) -> bool:
        return self.in_flight < self.limit and time.monotonic() >= self.paused_until

    async def acquire(self) -> None:
        if not self._waiters and self._has_room():
            self.in_flight += 1
            self._on_acquired()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # granted at the moment it was cancelled: the slot goes to the next waiter
                self.in_flight -= 1
                self._wake()
            else:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, outcome: Outcome) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self.in_flight -= 1
        if outcome.status in ("overloaded", "timeout") and outcome.retry_after_s:
            self.pause(outcome.retry_after_s)
        self._on_released(outcome)
        self._wake()

    def pause(self, seconds: float) -> None:
        """No new acquisition for `seconds` (Retry-After); a later pause extends it, a shorter one does not."""
        seconds = min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def _on_acquired(self) -> None:
        pass

    def _on_released(self, outcome: Outcome) -> None:
        pass

    def _wake(self) -> None:
        while self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self.in_flight += 1
            self._on_acquired()
            waiter.set_result(None)
        # Waiters held back only by a pause are woken when it ends.
        if self._waiters and self.in_flight < self.limit and self._pause_timer is None:
            delay = max(self.paused_until - time.monotonic(), 0.0)
            self._pause_timer = asyncio.get_running_loop().call_later(delay, self._pause_over)

    def _pause_over(self) -> None:
        self._pause_timer = None
        self._wake()


class FixedLimiter(_SlotLimiter):
    """Exactly `n` requests in flight at most (still honouring Retry-After)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("a fixed concurrency must be at least 1")
        super().__init__()
        self._limit = int(n)

    @property
    def limit(self) -> int:
        return self._limit


class AdaptiveLimiter(_SlotLimiter):
    """Slow start, then Vegas on latency and multiplicative decrease on refusals (see the module's docstring)."""

    backoff_ratio = 0.9  # on a refusal or timeout after slow start (Netflix AIMD's default)

    def __init__(self, initial: int = DEFAULT_INITIAL, ceiling: int = DEFAULT_CEILING, floor: int = 1) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        super().__init__()
        self.floor, self.ceiling = int(floor), int(ceiling)
        self._limit = float(min(max(initial, self.floor), self.ceiling))
        self.slow_start = True
        self.base_latency_s: float | None = None  # lowest window mean seen: the server's no-load latency
        self._last_decrease = -math.inf  # time.monotonic() of the last decrease
        self._window: list[float] = []
        self._window_peak = 0  # most requests in flight during the window
        self._refused_at: float | None = None  # the limit at the last refusal: where the server's cap lies
        self.decreases = 0  # how often the limit was cut for a refusal or timeout (for logs and tests)

    @property
    def limit(self) -> int:
        return int(self._limit)

    def _set_limit(self, value: float) -> None:
        self._limit = min(max(value, float(self.floor)), float(self.ceiling))

    def _on_acquired(self) -> None:
        self._window_peak = max(self._window_peak, self.in_flight)

    def _on_released(self, outcome: Outcome) -> None:
        now = time.monotonic()
        sent_at = now - max(outcome.latency_s, 0.0)
        if outcome.status in ("overloaded", "timeout"):
            if sent_at >= self._last_decrease:  # sent under the current limit: a new signal
                if outcome.status == "overloaded":
                    self._refused_at = self._limit
                self._set_limit(self._limit * (0.5 if self.slow_start else self.backoff_ratio))
                self.slow_start = False
                self._last_decrease = now
                self.decreases += 1
                self._new_window()
            return
        if outcome.status != "ok" or sent_at < self._last_decrease:
            return  # an error says nothing about load; an answer sent under the old limit says nothing of the new one
        self._window.append(outcome.latency_s)
        if len(self._window) >= max(self.limit, 4):
            self._end_window()

    def _new_window(self) -> None:
        self._window = []
        self._window_peak = self.in_flight

    def _end_window(self) -> None:
        mean = sum(self._window) / len(self._window)
        used = self._window_peak >= 0.8 * self.limit
        self._new_window()
        if mean <= 0:
            return
        if self.base_latency_s is None or mean < self.base_latency_s:
            self.base_latency_s = mean
        limit = self._limit
        step = max(1.0, math.log10(limit))
        # Vegas' thresholds, with a floor of 10 % / 20 % of the limit: at a few hundred requests in flight a few
        # requests' worth of latency is within the noise of a loaded client machine.
        alpha = max(3 * step, 0.1 * limit)
        beta = 2 * alpha
        queued = limit * (1 - self.base_latency_s / mean)
        if queued > beta:
            self.slow_start = False
            self._set_limit(limit * self.base_latency_s / mean + alpha)
        elif queued < alpha and used:
            if self.slow_start:
                self._set_limit(limit * 2)
            elif self._refused_at is not None and limit + step >= self._refused_at - 1:
                # Near where the server last refused: probe one slot per `limit` windows instead of `step` per
                # window, so a hard cap is hit (and a Retry-After pause paid) rarely.
                self._set_limit(limit + 1 / limit)
            else:
                self._set_limit(limit + step)
            if self._refused_at is not None and self._limit > self._refused_at + step:
                self._refused_at = None  # the cap moved up (or was a passing spike)
        elif queued >= alpha:
            self.slow_start = False  # the server's queue is filling: grow no further


def limiter_for(settings: dict | None) -> Limiter:
    """The limiter a model config's `request_pool` settings ask for (config_builder._endpoint_fields):
    `concurrency` a number = fixed, None = adaptive up to `max_concurrency`."""
    settings = settings or {}
    ceiling = int(settings.get("max_concurrency") or DEFAULT_CEILING)
    fixed = settings.get("concurrency")
    if fixed:
        return FixedLimiter(min(int(fixed), ceiling))
    return AdaptiveLimiter(initial=min(DEFAULT_INITIAL, ceiling), ceiling=ceiling)


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Limiter]] = weakref.WeakKeyDictionary()


def shared_limiter(key: str, settings: dict | None) -> Limiter:
    """One limiter per model server (key, e.g. its base URL) and event loop, so every (model x dataset) pair
    running at once in this process shares one limit instead of each probing the server on its own.
    The first caller's settings decide."""
    per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
    if key not in per_loop:
        per_loop[key] = limiter_for(settings)
    return per_loop[key]
