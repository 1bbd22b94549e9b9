"""One small SQLite key -> text store, shared by the engine's caches of model replies: the judge call cache
(judge.JudgeCallCache) and the prediction cache (prediction_cache.py).

A store is one table in a file that several processes use at once (the evaluations of one machine, the inference
workers of one evaluation): the file is in WAL mode, so readers never wait for a writer, and a writer waits up to
BUSY_TIMEOUT_S for another's transaction instead of failing. Every call opens its own connection, so a store can be
used from any thread.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Several evaluation processes may write at once: wait for each other's transactions rather than fail.
BUSY_TIMEOUT_S = 60
# SQLite's default limit on host parameters in one statement is 999 (older builds): stay well below it.
_CHUNK = 500
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class SqliteKeyValueStore:
    """Text values by text key in one table `table` of the SQLite file `path` (created if needed)."""

    def __init__(self, path: str | Path, table: str):
        if not _TABLE_NAME.match(table):
            raise ValueError(f"{table!r} is not a plain table name")
        self.path = Path(path)
        self.table = table
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create()

    def _create(self) -> None:
        """Put the file in WAL mode and create the table, waiting for another process doing the same.

        SQLite does not call its busy handler for every lock this needs: switching the journal mode while another
        connection switches it or recovers the WAL index fails at once with "database is locked". Such failures are
        retried here until BUSY_TIMEOUT_S has passed, as a busy wait would be."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.005
        while True:
            try:
                with self._connect() as db:
                    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        db.execute("PRAGMA journal_mode=WAL")
                    db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ("
                               " key TEXT PRIMARY KEY, reply TEXT NOT NULL, created_at REAL NOT NULL)")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.2)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction (committed on success, rolled back on an error), then closed."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            with db:
                yield db
        finally:
            db.close()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """The values of those keys that are stored."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock, self._connect() as db:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT key, reply FROM {self.table} WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, items: dict[str, str]) -> None:
        """Store (or replace) every item, in one transaction."""
        if not items:
            return
        now = time.time()
        with self._lock, self._connect() as db:
            db.executemany(f"INSERT OR REPLACE INTO {self.table} (key, reply, created_at) VALUES (?, ?, ?)",
                           [(key, value, now) for key, value in items.items()])
