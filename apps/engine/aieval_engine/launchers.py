"""How the OpenCompass process is started.

- `ColdLauncher` starts a fresh Python per run: simple, pays OpenCompass' imports each time; started early
  (`prestart`), while the command still prepares the job, it pays them on another core in the meantime.
- `WarmLauncher` keeps a fork server that imported OpenCompass once and forks each run from it, so a
  long-lived worker pays the imports once (see NOTES.md: 5 s instead of 18-54 s for a small job).

Either way the run is a child in its own session: cancelling signals its whole process group
(`kill_process_group`). The run also stops by itself when the process that started it ends, however it ends
(SIGTERM, SIGHUP, SIGKILL, a crash): see `stop_with_parent`, called in the child (_child.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

# Everything a run may need to stay offline; read by huggingface_hub/datasets when they are imported,
# so the warm fork server must be started with them already set.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_MININTERVAL": "1",
}


class RunProcess(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, waiting at most `timeout` seconds for it (None if still running)."""
        ...


class Launcher(Protocol):
    def start(self, job_dir: str, argv: list[str], env: dict[str, str], seed: int) -> RunProcess: ...


class _ChildRun(subprocess.Popen):
    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class ColdLauncher:
    """Note: the run stops when the *thread* that called `start` (or `prestart`) ends (PR_SET_PDEATHSIG follows the
    thread), so call it from the thread that waits for the run, as `Evaluation.run` does."""

    def __init__(self) -> None:
        self._waiting: _ChildRun | None = None

    def prestart(self) -> None:
        """Start the run's process now, before its job is known: it imports what a run needs before its first
        request while the caller prepares the job (another core's work), and `start` then hands it the run over its
        stdin (secrets included, as the fork server is given them). `close` ends it if no run comes."""
        if self._waiting is not None:
            return
        self._waiting = _ChildRun(
            [sys.executable, "-m", "aieval_engine._child", "--wait", str(os.getpid())],
            env={**os.environ, **OFFLINE_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def close(self) -> None:
        """End a prestarted process that was given no run (it has started nothing yet: killing it loses nothing)."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.kill()
            waiting.stdin.close()
            waiting.wait()

    def start(self, job_dir: str, argv: list[str], env: dict[str, str], seed: int) -> RunProcess:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            run = {"job_dir": job_dir, "argv": argv, "env": env, "seed": seed}
            try:
                waiting.stdin.write((json.dumps(run) + "\n").encode())
                waiting.stdin.close()
                return waiting
            except OSError:  # it died while waiting: start the run as if there had been none
                with contextlib.suppress(OSError):
                    waiting.stdin.close()
                waiting.wait()
        child_env = {**os.environ, **OFFLINE_ENV, **env}
        return _ChildRun(
            [sys.executable, "-m", "aieval_engine._child", job_dir, json.dumps(argv), str(seed), str(os.getpid())],
            env=child_env,
            cwd=job_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


class _ForkedRun:
    def __init__(self, pid: int, server: WarmLauncher):
        self.pid = pid
        self._server = server

    def poll(self) -> int | None:
        return self._server._exit_code(self.pid, 0)

    def wait_exit(self, timeout: float) -> int | None:
        return self._server._exit_code(self.pid, timeout)


class WarmLauncher:
    """Forks runs from a server process (forkserver.py) that imported OpenCompass, torch and transformers once.

    Thread-safe; one server per launcher, restarted if it dies.
    """

    def __init__(self, python: str = sys.executable):
        self._python = python
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        self._replies: dict[int, int] = {}  # request id -> pid
        self._exits: dict[int, int] = {}  # pid -> exit code
        self._started: set[int] = set()
        self._changed = threading.Condition()
        self._next_id = 0

    def warm_up(self) -> float:
        """Start the fork server now (it imports everything once); returns the seconds it took."""
        started = time.perf_counter()
        with self._lock:
            self._ensure_server()
        return time.perf_counter() - started

    def _ensure_server(self) -> subprocess.Popen:
        if self._server is not None and self._server.poll() is None:
            return self._server
        server = subprocess.Popen(
            [self._python, "-m", "aieval_engine.forkserver", str(os.getpid())],
            env={**os.environ, **OFFLINE_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            start_new_session=True,
        )
        ready = server.stdout.readline()
        if not ready:
            raise RuntimeError("the OpenCompass fork server failed to start (see its output above)")
        self._server = server
        threading.Thread(target=self._read_replies, args=(server,), daemon=True, name="aieval-forkserver").start()
        return server

    def _read_replies(self, server: subprocess.Popen) -> None:
        for line in server.stdout:
            message = json.loads(line)
            with self._changed:
                if "id" in message:
                    self._replies[message["id"]] = message["pid"]
                    self._started.add(message["pid"])  # now, not in start(): the server may die first
                elif "code" in message:
                    self._exits[message["pid"]] = message["code"]
                self._changed.notify_all()
        with self._changed:
            # The server is gone and can no longer report or reap its runs: stop them and call them killed.
            for pid in self._started:
                if pid not in self._exits:
                    signal_process_group(pid, signal.SIGKILL)
                    self._exits[pid] = -signal.SIGKILL
            self._changed.notify_all()

    def start(self, job_dir: str, argv: list[str], env: dict[str, str], seed: int) -> RunProcess:
        with self._lock:
            server = self._ensure_server()
            self._next_id += 1
            request_id = self._next_id
            request = {"id": request_id, "job_dir": job_dir, "argv": argv, "env": env, "seed": seed}
            server.stdin.write((json.dumps(request) + "\n").encode())
            server.stdin.flush()
        with self._changed:
            if not self._changed.wait_for(lambda: request_id in self._replies or server.poll() is not None, 30):
                raise RuntimeError("the OpenCompass fork server did not answer")
            if request_id not in self._replies:
                raise RuntimeError("the OpenCompass fork server died")
            return _ForkedRun(self._replies.pop(request_id), self)

    def _exit_code(self, pid: int, timeout: float) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stdin.close()
                self._server.wait(timeout=10)
                self._server = None


def signal_process_group(pgid: int, sig: int) -> None:
    """Send `sig` to the process group `pgid` (a run: its leader's pid), or to the leader alone if it has not
    called setsid() yet. The one place that signals a run's processes: cancel, timeout, a dead fork server,
    a run whose parent is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # the child has not called setsid() yet
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, sig)


def kill_process_group(process: RunProcess, grace_s: float = 5.0) -> None:
    """SIGTERM the run's whole process group, then SIGKILL whatever is left after `grace_s`."""
    signal_process_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(process.pid):
            return
        time.sleep(0.1)
    signal_process_group(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (process.poll() is None or _group_alive(process.pid)):
        time.sleep(0.05)


def kill_orphaned_group(pgid: int, wait_s: float = 5.0) -> None:
    """SIGKILL a process group this process did not start (a dead worker's run) and wait until it is gone."""
    signal_process_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def stop_with_parent(parent_pid: int, stop: Callable[[], None], death_signal: int | None,
                     poll_s: float = 0.5) -> None:
    """Make this process stop when `parent_pid`, the process that started it, ends, however it ends.

    On Linux the kernel sends `death_signal` at once (PR_SET_PDEATHSIG; the caller decides what that signal
    does). The kernel ties it to the parent *thread*, and it is lost if the parent died before this call, so a
    daemon thread also polls getppid() (the process is re-parented when its parent dies) and calls `stop`
    within `poll_s`: the fallback, and the only mechanism on other systems. `death_signal=None`: poll only.
    """
    if death_signal is not None and sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(death_signal))

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        stop()

    if os.getppid() != parent_pid:  # already gone, before the kernel could be asked to tell us
        stop()
        return
    threading.Thread(target=watch, daemon=True, name="aieval-parent-watch").start()
