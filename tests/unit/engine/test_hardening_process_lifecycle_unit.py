"""A run stops when the process that started it ends (launchers.stop_with_parent + _child's group kill), in
seconds and without OpenCompass: real processes standing in for parent, run and a task process of the run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from process_tree import in_sessions, wait_all_gone

# parent: starts the "run" in its own session (as the launchers do), prints its pid, then waits.
PARENT = """
import subprocess, sys, time
run = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True)
print(run.pid, flush=True)
time.sleep(600)
"""
# run: what _child.run_opencompass does first, then a task process in its group (OpenCompass' LocalRunner).
RUN = """
import os, signal, subprocess, sys, time
from aieval_engine._child import _stop_the_whole_run
from aieval_engine.launchers import stop_with_parent
signal.signal(signal.SIGTERM, _stop_the_whole_run)
death_signal = {"pdeathsig": signal.SIGTERM, "poll-only": None}[sys.argv[1]]
stop_with_parent(os.getppid(), _stop_the_whole_run, death_signal=death_signal, poll_s=0.2)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["pdeathsig", "poll-only"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_run_and_its_task_processes_end_with_their_parent(how, sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, RUN, how], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        run_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while len(in_sessions([run_pid])) < 2:  # the run and its task process
            assert time.monotonic() < deadline, "the stand-in run never started its task process"
            time.sleep(0.05)
        members = in_sessions([run_pid])
        parent.send_signal(sig)
        parent.wait(timeout=10)
        seconds = wait_all_gone(members, [run_pid], None, timeout=5)
        assert seconds < 2
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_parent_already_gone_before_the_call_stops_the_caller_at_once():
    code = ("import os, sys; from aieval_engine.launchers import stop_with_parent; "
            "stop_with_parent(os.getppid() + 100000, lambda: sys.exit(7), death_signal=None); sys.exit(0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 7
