"""The OpenCompass process: entered either as `python -m aieval_engine._child` (cold) or in a child forked
from a warm process that has already imported OpenCompass (see launchers.py).

A cold one is started either with its run on the command line, or with `--wait` before its run is known
(launchers.ColdLauncher.prestart): it then imports what a run needs before its first request while the command
still prepares the job, and is given its run as one JSON line on stdin (`await_run`). Either way those imports run
before OpenCompass' CLI, with the garbage collector paused (`import_before_run`).

Secrets arrive through `env`, never through argv or a file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tempfile
import threading
import traceback

from aieval_engine.launchers import signal_process_group, stop_with_parent

LOG_NAME = "run.log"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _stop_the_whole_run(*_args) -> None:
    """SIGKILL this run's process group: OpenCompass' task processes (several workers) die with it instead of
    being re-parented and running on unattended."""
    if os.getpgrp() == os.getpid():  # the leader of our own group: never signal a group we do not own
        signal_process_group(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def run_opencompass(job_dir: str, argv: list[str], env: dict[str, str], seed: int, parent_pid: int) -> int:
    """Run OpenCompass' CLI in this process, in its own session, writing its output to run.log.

    The run ends with its parent (`parent_pid`: the command, the worker or the fork server that started it):
    SIGTERM (cancel, or the kernel telling us the parent died) and SIGHUP stop the whole process group."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (cold start with start_new_session=True)
    signal.signal(signal.SIGTERM, _stop_the_whole_run)
    signal.signal(signal.SIGHUP, _stop_the_whole_run)
    stop_with_parent(parent_pid, _stop_the_whole_run, death_signal=signal.SIGTERM)
    os.chdir(job_dir)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log = os.open(os.path.join(job_dir, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    os.environ.update(env)
    _seed_everything(seed)
    sys.argv = ["opencompass", *argv]
    try:
        from opencompass.cli.main import main

        main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def import_before_run(until: threading.Event | None = None) -> bytes:
    """Import what a run needs before its first request, with the garbage collector paused (_preload.collector_paused),
    stopping early once `until` is set (the run is here: it imports the rest itself, when and if it needs them).
    Returns what the imports printed (warnings; a failed import's traceback: the run imports that module again, and
    its log then tells why it fails), for the run's log, where it lands when the imports happen during the run."""
    from aieval_engine._preload import BEFORE_FIRST_REQUEST, collector_paused, preload

    sys.stdout.flush()
    sys.stderr.flush()
    printed = tempfile.TemporaryFile()
    kept = os.dup(1), os.dup(2)
    os.dup2(printed.fileno(), 1)
    os.dup2(printed.fileno(), 2)
    try:
        with collector_paused():
            for module in BEFORE_FIRST_REQUEST:
                if until is not None and until.is_set():
                    break
                try:
                    preload((module,))
                except Exception:  # noqa: BLE001 - see above
                    traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        for fd, original in zip((1, 2), kept, strict=True):
            os.dup2(original, fd)
            os.close(original)
    with printed:
        printed.seek(0)
        return printed.read()


def _add_to_log(job_dir: str, printed: bytes) -> None:
    if printed:
        with open(os.path.join(job_dir, LOG_NAME), "ab") as log:
            log.write(printed)


def await_run(parent_pid: int) -> int:
    """Import what a run needs before its first request until the run arrives on stdin as one JSON line
    `{"job_dir", "argv", "env", "seed"}`, then run it. End of file instead (the parent is gone, or has nothing to run:
    an invalid spec) ends this process at once, imports done or not."""
    run: dict = {}
    arrived = threading.Event()

    def read_run() -> None:
        line = sys.stdin.buffer.readline()
        if not line.strip():
            os._exit(0)
        run.update(json.loads(line))
        arrived.set()

    threading.Thread(target=read_run, daemon=True, name="aieval-await-run").start()
    printed = import_before_run(until=arrived)
    arrived.wait()
    _add_to_log(run["job_dir"], printed)
    return run_opencompass(run["job_dir"], run["argv"], run["env"], run["seed"], parent_pid)


if __name__ == "__main__":
    if sys.argv[1] == "--wait":  # argv: --wait, parent pid; the run arrives on stdin
        sys.exit(await_run(int(sys.argv[2])))
    # argv: job_dir, json(argv), seed, parent pid; the environment already holds what the run needs.
    _add_to_log(sys.argv[1], import_before_run())
    sys.exit(run_opencompass(sys.argv[1], json.loads(sys.argv[2]), {}, int(sys.argv[3]), int(sys.argv[4])))
