"""launchers.ColdLauncher.prestart: `aieval run` starts OpenCompass' process before it reads the spec, so that process
imports while the command prepares the job; a process that is given no run must not outlive the command. (The run it
is given, end to end against the `opencompass` CLI: tests/integration/engine/test_cold_cli_run.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from waiting import wait_until

from aieval_engine import cli
from aieval_engine.launchers import ColdLauncher


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def waiting_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "--wait" in child.cmdline() and "aieval_engine._child" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_prestarted_process_waits_for_its_run_in_a_session_of_its_own_and_close_ends_it():
    launcher = ColdLauncher()
    launcher.prestart()
    process = launcher._waiting
    assert process is not None
    launcher.prestart()  # once only
    assert launcher._waiting is process
    wait_until(lambda: psutil.Process(process.pid).cmdline()[-2:] == ["--wait", str(os.getpid())], 10,
               what="the waiting process to run")
    assert os.getpgid(process.pid) == process.pid  # cancel signals its group: it must not be ours
    assert process.poll() is None
    launcher.close()
    assert gone(process.pid) and launcher._waiting is None
    launcher.close()  # nothing left to end


def test_aieval_run_with_an_invalid_spec_leaves_no_waiting_process(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"models": [{"kind": "openai", "name": "m", "base_url": "http://127.0.0.1:9/v1",
                                            "model": "m"}],
                                "datasets": [{"kind": "custom", "name": "d", "path": str(tmp_path / "absent.jsonl")}]}),
                    encoding="utf-8")
    started: list[int] = []
    original = ColdLauncher.prestart

    def prestart(self):
        original(self)
        started.append(self._waiting.pid)

    monkeypatch.setattr(ColdLauncher, "prestart", prestart)
    assert cli.main(["--data-dir", str(tmp_path / "data"), "run", str(spec)]) == cli.EXIT_INVALID
    assert "absent.jsonl" in capsys.readouterr().out
    assert len(started) == 1 and gone(started[0])
    assert not waiting_children()


def test_the_waiting_process_ends_when_the_command_that_started_it_dies(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from aieval_engine.launchers import ColdLauncher
        launcher = ColdLauncher()
        launcher.prestart()
        print(launcher._waiting.pid, flush=True)
        time.sleep(120)
    """)
    command = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parent)
    try:
        waiting = int(command.stdout.readline())
        assert not gone(waiting)
        command.send_signal(signal.SIGKILL)
        command.wait()
        wait_until(lambda: gone(waiting), 15, what="the orphaned waiting process to end")
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


def test_the_imports_before_a_run_keep_what_they_print_for_its_log_and_leave_the_collector_running():
    # In a process of its own: the collector is paused, then everything alive is frozen.
    script = textwrap.dedent("""
        import gc, json, sys
        from aieval_engine import _child, _preload
        assert "colorsys" not in sys.modules
        _preload.BEFORE_FIRST_REQUEST = ("aieval_engine.no_such_module", "colorsys")
        printed = _child.import_before_run()
        print(json.dumps({"printed": printed.decode(), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
                          "later": "colorsys" in sys.modules}))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)  # stdout is the process' own again: only this line reached it
    assert "ModuleNotFoundError" in report["printed"] and "no_such_module" in report["printed"]
    assert report["later"]  # a failed import does not stop the others
    assert report["enabled"] and report["frozen"] > 0
