"""However the command (or a worker) running an evaluation ends — SIGTERM from a CI timeout or a service manager,
SIGHUP from a closed terminal, SIGKILL — no OpenCompass process runs on: within 5 s nothing of the run remains.
Real processes throughout: `aieval run` (cold launcher) and a worker-like parent of the warm fork server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from process_tree import descendants, describe, processes_in, session_of, wait_all_gone

from aieval_engine import workdir
from aieval_engine.demo import DEMO_DATA
from aieval_engine.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
GONE_WITHIN_S = 5.0

# A parent that runs one evaluation on the warm fork server, as a worker does.
WARM_PARENT = """
import sys
from aieval_engine.launchers import WarmLauncher
from aieval_engine.runner import Evaluation
from aieval_engine.spec import load_spec
Evaluation(load_spec(sys.argv[1]), sys.argv[2], launcher=WarmLauncher()).run()
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("lifecycle-data")
    build_tiny_model(data_dir / "models" / "tiny")  # where model roots will require local checkpoints to be
    return data_dir


def write_slow_spec(data_dir: Path, path: Path) -> Path:
    """Minutes of generation on the tiny model: it is still running whenever the test ends its parent."""
    spec = {
        "name": "lifecycle",
        "models": [{"kind": "huggingface", "name": "tiny", "path": str(data_dir / "models" / "tiny"), "batch_size": 1}],
        "datasets": [{"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl")},
                     {"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")}],
        "params": {"max_out_len": 400},
    }
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def start(argv: list[str], log: Path) -> subprocess.Popen:
    # Its own session, like a command started by a service manager: signals reach only what the test aims at.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_inference(parent: subprocess.Popen, job: Path, log: Path, timeout: float = 120) -> list[int]:
    """Wait until OpenCompass generates predictions; return the run's processes (those working in the job dir)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert parent.poll() is None, f"the parent exited early ({parent.returncode}): {log.read_text()[-3000:]}"
        run_dir = workdir.latest_run_dir(job)
        if run_dir is not None and workdir.predictions_done(run_dir, "tiny", "demo-qa"):
            running = processes_in(job)
            if running:
                return running
        time.sleep(0.1)
    raise AssertionError(f"inference never started: {log.read_text()[-3000:]}")


def assert_nothing_remains(pids: list[int], job: Path) -> float:
    sessions = {session_of(pid) for pid in pids} - {None}
    assert sessions, "the run's processes vanished before the test could look at them"
    return wait_all_gone(pids, sessions, job, GONE_WITHIN_S)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_aieval_run_ended_by_any_signal_leaves_no_opencompass_process(tmp_path, data_dir, sig):
    job, log = tmp_path / "job", tmp_path / "aieval.log"
    spec = write_slow_spec(data_dir, tmp_path / "spec.yaml")
    command = start([sys.executable, "-m", "aieval_engine.cli", "--data-dir", str(data_dir), "run", str(spec),
                     "--job-dir", str(job)], log)
    try:
        run = wait_for_inference(command, job, log)
        command.send_signal(sig)
        seconds = assert_nothing_remains([command.pid, *run], job)
        code = command.wait(timeout=30)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:  # cancelled cleanly, reported as a shell reports a command ended by that signal
            assert code == 128 + sig, log.read_text()[-3000:]
            assert "cancelled" in log.read_text()
        print(f"{sig.name}: no OpenCompass process left after {seconds:.1f} s")
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


@pytest.mark.parametrize("victims", ["parent-SIGTERM", "parent-SIGHUP", "parent-SIGKILL",
                                     # both at once (the OOM killer, `kill -9` of both): only the run can notice
                                     "parent+forkserver-SIGKILL"])
def test_warm_fork_server_run_dies_with_whoever_started_it(tmp_path, data_dir, victims):
    job, log = tmp_path / "job", tmp_path / "parent.log"
    spec = write_slow_spec(data_dir, tmp_path / "spec.yaml")
    parent = start([sys.executable, "-c", WARM_PARENT, str(spec), str(job)], log)
    try:
        run = wait_for_inference(parent, job, log)
        server = [p.pid for p in psutil.Process(parent.pid).children() if "aieval_engine.forkserver" in p.cmdline()]
        assert len(server) == 1, describe(descendants(parent.pid))
        who, sig_name = victims.split("-")
        targets = {"parent": [parent.pid], "parent+forkserver": [parent.pid, server[0]]}[who]
        if len(targets) > 1:  # frozen first: neither may see the other die and clean up in its place
            for pid in targets:
                os.kill(pid, signal.SIGSTOP)
        for pid in targets:
            os.kill(pid, getattr(signal, sig_name))
        seconds = assert_nothing_remains([parent.pid, *server, *run], job)
        print(f"{victims}: no OpenCompass process left after {seconds:.1f} s")
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
