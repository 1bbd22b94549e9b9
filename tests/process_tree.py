"""Finding what a command leaves behind: its descendants, the sessions they run in, the processes working in a
directory. For the tests that end commands in every way (SIGTERM, SIGHUP, SIGKILL) and check nothing survives."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import psutil


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie runs nothing; whether it is reaped is checked separately)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_in(directory: Path) -> list[int]:
    """Running processes whose working directory is `directory` or below (OpenCompass runs chdir into their job
    directory, and their task processes inherit it)."""
    root = str(Path(directory).resolve())
    found = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info.get("cwd")
        if cwd and (cwd == root or cwd.startswith(root + "/")) and running(process.pid):
            found.append(process.pid)
    return found


def in_sessions(sessions: Iterable[int]) -> list[int]:
    """Running processes in any of these sessions (a run is a session of its own: setsid)."""
    wanted = set(sessions)
    return [p.pid for p in psutil.process_iter() if session_of(p.pid) in wanted and running(p.pid)]


def survivors(pids: Iterable[int], sessions: Iterable[int], directory: Path | None = None) -> list[int]:
    left = {pid for pid in pids if running(pid)} | set(in_sessions(sessions))
    if directory is not None:
        left |= set(processes_in(directory))
    return sorted(left)


def describe(pids: Iterable[int]) -> str:
    lines = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            lines.append(f"{pid} sid={session_of(pid)} {process.status()}: {' '.join(process.cmdline())[:200]}")
        except psutil.NoSuchProcess:
            lines.append(f"{pid}: gone")
    return "\n".join(lines)


def wait_all_gone(pids: Iterable[int], sessions: Iterable[int], directory: Path | None, timeout: float) -> float:
    """Seconds until no process of `pids`, of `sessions` or working in `directory` runs; fails after `timeout`."""
    pids, sessions = list(pids), list(sessions)
    started = time.monotonic()
    while True:
        left = survivors(pids, sessions, directory)
        if not left:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still running {timeout:g} s later:\n{describe(left)}")
        time.sleep(0.1)
