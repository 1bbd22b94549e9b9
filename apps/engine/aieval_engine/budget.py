"""A cap on requests in flight to one model server, shared by every run that names the same budget key.

Three evaluations against one vLLM server, each with its own concurrency of 8, would otherwise send it 24
requests at once. Every remote model class (oc_ext.py) takes a slot before each request and gives it back after,
so all runs naming the key share one cap, in however many processes and on however many machines.

Where the slots live is the run's *budget store* (environment variable AIEVAL_BUDGET_STORE of the OpenCompass
process, set by runner.Evaluation):
- `redis://...` / `rediss://...`: a Redis sorted set per key, holding one member per request in flight, scored by
  the moment its lease ends. Acquiring drops expired members and adds one only while fewer than the cap remain,
  in one Lua script (atomic, Redis' own clock, so machines with skewed clocks agree). A process renews the leases
  of the slots it holds from a background thread; a process that dies stops renewing, and its slots free
  themselves `lease_s` later. Releasing pushes a note on a list that waiters block on, so a freed slot wakes a
  waiter at once; slots freed by expiry are found by the waiters' bounded 50 ms wait.
- a directory: one lock file per slot, held with flock(2) — shared by every process of this machine, and the
  kernel frees the slots of a process that dies, at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

BUDGET_STORE_ENV = "AIEVAL_BUDGET_STORE"
DEFAULT_LEASE_S = 30.0
# Longest a waiter sleeps between two looks at a full budget (what a slot freed by a lease's expiry may wait).
MAX_WAIT_STEP_S = 0.05
# How long a run keeps trying to reach an unreachable Redis before its request fails (a restart takes seconds).
UNREACHABLE_GIVE_UP_S = 60.0

log = logging.getLogger(__name__)


def default_store() -> str:
    return str(Path.home() / ".cache" / "aieval" / "budget")


def store_from_env(environ: dict[str, str] | os._Environ | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(BUDGET_STORE_ENV) or default_store()


def shown_store(store: str) -> str:
    """The store for messages and logs: a Redis URL without its user and password."""
    if not store.startswith(("redis://", "rediss://", "unix://")):
        return store
    parts = urlsplit(store)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Budget(Protocol):
    key: str
    limit: int

    def acquire(self, timeout: float | None = None) -> str | None:
        """Wait for a slot; its holder id, or None when `timeout` seconds passed first."""
        ...

    def release(self, holder: str) -> None: ...


def open_budget(key: str, limit: int, store: str | None = None, lease_s: float = DEFAULT_LEASE_S) -> Budget:
    """The budget `key` with `limit` slots in `store` (a Redis URL or a directory; default: store_from_env())."""
    store = store or store_from_env()
    if store.startswith(("redis://", "rediss://", "unix://")):
        return RedisBudget(store, key, limit, lease_s=lease_s)
    return FileLockBudget(Path(store), key, limit)


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


# ---- Redis ---------------------------------------------------------------------------------------------------
# KEYS[1] the sorted set; ARGV: cap, holder id, lease in ms. 1 when the slot was taken.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
"""
# KEYS[1] the sorted set; ARGV: lease in ms, holder ids. Extends the leases still held (XX: an expired one stays
# gone, its slot may already be someone else's).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 1
"""
# KEYS[1] the sorted set, KEYS[2] the list waiters block on; ARGV: holder id, cap, lease in ms.
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return 1
"""


class RedisBudget:
    def __init__(self, url: str, key: str, limit: int, *, lease_s: float = DEFAULT_LEASE_S):
        import redis

        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.key = key
        self.freed_key = f"{key}:freed"
        self.limit = int(limit)
        self.lease_ms = max(1, int(lease_s * 1000))
        self.store = shown_store(url)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def acquire(self, timeout: float | None = None) -> str | None:
        holder = _holder_id()
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        while True:
            try:
                # Held before the script runs, so a renewal can never miss a slot that was just taken.
                with self._lock:
                    self._held.add(holder)
                if self._acquire(keys=[self.key], args=[self.limit, holder, self.lease_ms]):
                    self._keep_renewing()
                    return holder
                with self._lock:
                    self._held.discard(holder)
                wait = MAX_WAIT_STEP_S if deadline is None else min(MAX_WAIT_STEP_S, deadline - time.monotonic())
                if wait <= 0:
                    return None
                # Wakes as soon as a holder releases (see _RELEASE); otherwise looks again after `wait`.
                self.client.blpop([self.freed_key], timeout=wait)
                unreachable_since = None
            except self._errors as exc:
                with self._lock:
                    self._held.discard(holder)
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                    log.warning("shared request budget %s: Redis at %s unreachable (%s); retrying",
                                self.key, self.store, exc)
                if now - unreachable_since > UNREACHABLE_GIVE_UP_S or (deadline is not None and now > deadline):
                    raise RuntimeError(f"the shared request budget {self.key!r} could not be reached at "
                                       f"{self.store} for {now - unreachable_since:.0f} s: {exc}") from None
                time.sleep(min(1.0, 0.05 * 2 ** min(5, int(now - unreachable_since))))

    def release(self, holder: str) -> None:
        with self._lock:
            self._held.discard(holder)
        try:
            self._release(keys=[self.key, self.freed_key], args=[holder, self.limit, self.lease_ms])
        except self._errors as exc:  # the lease expires by itself
            log.warning("shared request budget %s: slot not returned (%s); it frees itself when its lease ends",
                        self.key, exc)

    def _keep_renewing(self) -> None:
        with self._lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_forever, daemon=True, name=f"budget-renew-{self.key}")
            self._renewer.start()

    def _renew_forever(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            time.sleep(interval)
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self._renew(keys=[self.key], args=[self.lease_ms, *held])
            except self._errors as exc:
                log.warning("shared request budget %s: leases not renewed (%s)", self.key, exc)


# ---- lock files (one machine) --------------------------------------------------------------------------------
class FileLockBudget:
    def __init__(self, directory: Path, key: str, limit: int):
        self.key = key
        self.limit = int(limit)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = hashlib.sha256(key.encode()).hexdigest()[:32]  # any key, a safe file name
        self.paths = [directory / f"{stem}.{i}.lock" for i in range(self.limit)]
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _try_any_slot(self) -> int | None:
        start = random.randrange(self.limit)  # spread the waiters over the slots
        for i in range(self.limit):
            fd = os.open(self.paths[(start + i) % self.limit], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: threads exclude each other too
                return fd
            except BlockingIOError:
                os.close(fd)
        return None

    def acquire(self, timeout: float | None = None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = 0.002
        while True:
            fd = self._try_any_slot()
            if fd is not None:
                holder = _holder_id()
                with self._lock:
                    self._fds[holder] = fd
                return holder
            step = wait if deadline is None else min(wait, deadline - time.monotonic())
            if step <= 0:
                return None
            time.sleep(step)
            wait = min(MAX_WAIT_STEP_S, wait * 2)

    def release(self, holder: str) -> None:
        with self._lock:
            fd = self._fds.pop(holder, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its lock
