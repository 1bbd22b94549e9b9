"""The OpenCompass process: entered either as `python -m aieval_engine._child` (cold) or in a child forked
from a warm process that has already imported OpenCompass (see launchers.py).

Secrets arrive through `env`, never through argv or a file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
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


if __name__ == "__main__":
    # argv: job_dir, json(argv), seed, parent pid; the environment already holds what the run needs.
    sys.exit(run_opencompass(sys.argv[1], json.loads(sys.argv[2]), {}, int(sys.argv[3]), int(sys.argv[4])))
