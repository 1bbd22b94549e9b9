"""A single-threaded fork server that has imported OpenCompass once and forks one child per run.

Protocol (JSON lines): the parent writes `{"id", "job_dir", "argv", "env", "seed"}` on stdin; the
server answers `{"id", "pid"}` when the child is forked and `{"pid", "code"}` when it exits. Secrets
travel in `env` over this pipe only. The server exits when stdin closes.

multiprocessing's forkserver is not used because it re-imports the caller's `__main__` module, which for
a Celery worker or a script has side effects.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys


def serve() -> None:
    from aieval_engine._preload import preload_everything

    preload_everything()  # the point of this process
    from aieval_engine._child import run_opencompass
    from aieval_engine.launchers import signal_process_group

    # Not PR_SET_PDEATHSIG: the kernel ties it to the parent thread, and the worker starts this server from a
    # short-lived warm-up thread. Its death shows as end-of-file on stdin, with a getppid() poll as a fallback
    # (the parent passes its pid: it may already be gone by the time the imports above are done).
    parent_pid = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but protocol lines may reach the parent on stdout
    buffer = b""
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    # A run's end wakes the loop at once (SIGCHLD through a wakeup pipe), rather than at the next tick of the
    # select() timeout: the worker learns a run has finished as soon as it has.
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, else no wakeup byte is written

    running: set[int] = set()
    send({"ready": True})
    while True:
        readable, _, _ = select.select([stdin, woken], [], [], 0.2)  # the timeout: the getppid() fallback
        if woken in readable:
            while True:
                try:
                    if not os.read(woken, 4096):
                        break
                except BlockingIOError:
                    break
        while True:  # reap finished runs
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            running.discard(pid)
            send({"pid": pid, "code": os.waitstatus_to_exitcode(status)})
        chunk = os.read(stdin.fileno(), 1 << 16) if stdin in readable else None
        if chunk == b"" or os.getppid() != parent_pid:
            # The parent (a worker) is gone, killed perhaps: its runs must not outlive it.
            for pid in running:
                signal_process_group(pid, signal.SIGKILL)
            out.flush()
            # At once: the interpreter's teardown with torch & co. loaded takes seconds and serves nobody.
            os._exit(0)
        if not chunk:
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            server_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # The run is not the server: its signals and descriptors are its own.
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(woken)
                    os.close(wake)
                    os.setsid()
                    code = run_opencompass(request["job_dir"], request["argv"], request["env"], request["seed"],
                                           parent_pid=server_pid)
                finally:
                    os._exit(code)
            running.add(pid)
            send({"id": request["id"], "pid": pid})


if __name__ == "__main__":
    serve()
