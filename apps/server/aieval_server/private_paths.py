"""The data dir holds the database, the secret key, uploaded datasets and every run's outputs: only the user the
platform runs as may read it. Directories 0700, files 0600, set explicitly (mkdir's mode is filtered by the
umask, and a directory that already exists keeps whatever mode it had)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (created with missing parents if need be)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _restrict(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read (created empty if missing): before anything is written into it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _restrict(path, PRIVATE_FILE)
    return path


def _restrict(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except PermissionError:  # not ours (a mount point, say): say so rather than refuse to start
        log.warning("%s is not owned by this user; cannot restrict its permissions to %o", path, mode)
