"""`aieval serve` supervises its worker (real child processes, short delays): a worker that dies is reaped at
once (no zombie), started again after a pause that doubles with each quick failure up to a ceiling, back to the
first pause after a healthy run, and every restart says why."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import psutil
from waiting import wait_until

from aieval_server.cli import WorkerSupervisor


def child(stamps: Path, then: str) -> list[str]:
    """A stand-in worker: records when it started, then does `then` (Python)."""
    return [sys.executable, "-c", f"import time; open({str(stamps)!r}, 'a').write(f'{{time.monotonic()}}\\n'); {then}"]


def starts(stamps: Path) -> list[float]:
    return [float(line) for line in stamps.read_text().split()] if stamps.exists() else []


def test_a_killed_worker_is_reaped_and_started_again_with_the_reason_logged(tmp_path, caplog):
    stamps = tmp_path / "starts"
    supervisor = WorkerSupervisor(child(stamps, "time.sleep(60)"), dict(os.environ), first_delay_s=0.2)
    caplog.set_level(logging.WARNING, logger="aieval_server.serve")
    supervisor.start()
    try:
        first = wait_until(lambda: supervisor.process if len(starts(stamps)) == 1 else None, 20, interval=0.02, what="the worker")
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: not psutil.pid_exists(first.pid), 5, interval=0.02, what="the killed worker to be reaped (not left a zombie)")
        second = wait_until(lambda: supervisor.process if len(starts(stamps)) == 2 else None, 20, interval=0.02, what="a new worker")
        assert second.pid != first.pid and second.poll() is None
        assert f"the worker (pid {first.pid}) was killed by SIGKILL" in caplog.text
    finally:
        supervisor.stop()
    assert supervisor.process.poll() is not None, "stop() ends the worker"
    time.sleep(0.5)
    assert len(starts(stamps)) == 2, "no restart after stop()"


def test_restarts_back_off_doubling_to_a_ceiling_and_reset_after_a_healthy_run(tmp_path, caplog):
    failing = tmp_path / "failing"
    supervisor = WorkerSupervisor(child(failing, "raise SystemExit(3)"), dict(os.environ),
                                  first_delay_s=0.2, max_delay_s=0.8, healthy_after_s=30)
    caplog.set_level(logging.WARNING, logger="aieval_server.serve")
    supervisor.start()
    try:
        wait_until(lambda: len(starts(failing)) >= 5, 60, interval=0.02, what="five starts")
    finally:
        supervisor.stop()
    at = starts(failing)
    delays = logged_delays(caplog.text)
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8], caplog.text  # doubling, up to the ceiling
    assert all(later - earlier >= delay for earlier, later, delay in zip(at, at[1:], delays, strict=False)), \
        (at, delays)
    assert "exited with code 3" in caplog.text

    caplog.clear()
    healthy = tmp_path / "healthy"
    supervisor = WorkerSupervisor(child(healthy, "time.sleep(0.6); raise SystemExit(1)"), dict(os.environ),
                                  first_delay_s=0.2, max_delay_s=5, healthy_after_s=0.5)
    supervisor.start()
    try:
        wait_until(lambda: len(starts(healthy)) >= 4, 60, interval=0.02, what="four starts")
    finally:
        supervisor.stop()
    assert logged_delays(caplog.text)[:3] == [0.2, 0.2, 0.2], "a worker that ran long enough resets the pause"


def logged_delays(text: str) -> list[float]:
    return [float(value) for value in re.findall(r"starting a new one in ([0-9.]+) s", text)]


def test_sweepers_running_at_once_requeue_each_dead_job_once(client, settings):
    """`aieval serve` and every production worker sweep: racing sweepers must act once per job (each requeue is one
    conditional UPDATE). Checked, not changed, by this finding."""
    import threading
    from datetime import datetime, timedelta, timezone

    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.recovery import sweep

    long_ago = datetime.now(timezone.utc) - timedelta(seconds=settings.stale_after_s + 60)
    with session_scope(settings.database_url) as session:
        jobs = [Evaluation(name=f"dead {i}", params={}, queue="local", status="running", heartbeat_at=long_ago,
                           worker="host:1:a") for i in range(20)]
        session.add_all(jobs)
        session.flush()
        dead = sorted(job.id for job in jobs)
    sent: list[int] = []
    start = threading.Barrier(6)

    def sweeper() -> None:
        start.wait()
        sweep(settings, lambda evaluation_id, queue: sent.append(evaluation_id))

    threads = [threading.Thread(target=sweeper) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(sent) == dead, "each dead job requeued (and sent) exactly once"
