"""A job directory mirrored to shared storage, so that a worker on another machine can resume a run.

While OpenCompass runs, `keep_synced()` uploads what changed every `checkpoint_interval_s` (predictions grow
batch by batch in tmp_*.jsonl files); at the end `store()` syncs once more: the run's artifacts. A worker that
picks the job up after the first one died, and has no job directory of its own, `resume_here()`s it and
OpenCompass resumes from the predictions already made instead of starting over.

Files are copied as a reader would want them: a JSON Lines file up to its last complete line (OpenCompass
throws a partial file away whole), a JSON file only once it parses (it may be half-written right now).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from stat import S_ISREG

from ..storage import Storage

log = logging.getLogger(__name__)
SKIPPED_TOP_LEVEL = {"tmp"}  # scratch space of the run (and of this module)


class JobCheckpoint:
    def __init__(self, storage: Storage, prefix: str, job_dir: Path):
        self.storage = storage
        self.prefix = prefix.rstrip("/")
        self.job_dir = job_dir
        self.staging = job_dir / "tmp" / "checkpoint"
        self.uploaded: dict[str, tuple[int, int]] = {}  # key -> (mtime_ns, size) of what storage holds

    def sync(self) -> int:
        """Upload every file that changed since the last sync; returns how many were uploaded."""
        count = 0
        for path in sorted(self.job_dir.rglob("*")):  # rglob does not descend into symlinked directories
            relative = path.relative_to(self.job_dir)
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue  # OpenCompass renames and removes files while it runs
            # Regular files only: a symlink planted in the job dir (to /etc/passwd, to the secret key) is not
            # followed into storage, and so never into an export.
            if relative.parts[0] in SKIPPED_TOP_LEVEL or not S_ISREG(stat.st_mode):
                continue
            signature = (stat.st_mtime_ns, stat.st_size)
            key = relative.as_posix()
            if self.uploaded.get(key) == signature:
                continue
            source = self._consistent_copy(path, key)
            if source is None:
                continue  # being written: the next sync takes it
            self.storage.put_file(f"{self.prefix}/{key}", source)
            self.uploaded[key] = signature
            count += 1
        shutil.rmtree(self.staging, ignore_errors=True)
        return count

    def _consistent_copy(self, path: Path, key: str) -> Path | None:
        if path.suffix not in (".json", ".jsonl"):
            return path
        data = path.read_bytes()
        if path.suffix == ".jsonl":
            data = data[: data.rfind(b"\n") + 1]
        else:
            try:
                json.loads(data)
            except ValueError:
                return None
        snapshot = self.staging / key
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_bytes(data)
        return snapshot

    def restore(self) -> int:
        """Copy the stored files into the (empty) job directory; returns how many there were."""
        keys = self.storage.list(self.prefix)
        for key in keys:
            relative = PurePosixPath(key).relative_to(self.prefix)
            if ".." in relative.parts or relative.parts[0] in SKIPPED_TOP_LEVEL:
                continue
            target = self.job_dir.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.storage.open(key) as source, open(target, "wb") as destination:
                shutil.copyfileobj(source, destination)
            stat = target.stat()
            self.uploaded[relative.as_posix()] = (stat.st_mtime_ns, stat.st_size)
        return len(keys)

    # ---- around a run ------------------------------------------------------------------------------------
    def keep_synced(self, stop: threading.Event, interval_s: float) -> None:
        """Sync every `interval_s` until `stop` is set (a thread beside the run; never when `interval_s` <= 0)."""
        if interval_s <= 0:
            return
        while not stop.wait(interval_s):
            try:
                self.sync()
            except Exception as exc:  # storage away: the run goes on, only a resume elsewhere would start over
                log.warning("%s: checkpoint not stored (%s)", self.prefix, exc)

    def store(self) -> bool:
        """The final sync: the finished run's artifacts in shared storage (the local job dir stays for a possible
        resume). False when storage refused them (logged)."""
        try:
            self.sync()
            return True
        except Exception:
            log.exception("cannot store the artifacts of %s", self.prefix)
            return False

    def resume_here(self, note: Callable[[str], None]) -> None:
        """A previous attempt ran elsewhere: bring its files here so OpenCompass resumes instead of starting over.
        `note(line)` tells the run's log what happened; storage that fails means starting over, not failing."""
        try:
            restored = self.restore()
        except Exception as exc:
            log.warning("%s: checkpoint not restored, starting over (%s)", self.prefix, exc)
            self.job_dir.mkdir(parents=True, exist_ok=True)
            note(f"[aieval] the previous attempt's files could not be fetched ({exc}); starting over")
            return
        if restored:
            log.info("%s: resuming from %d files of the previous attempt", self.prefix, restored)
            note(f"[aieval] resuming from {restored} files checkpointed by the previous attempt")
