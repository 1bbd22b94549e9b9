"""The embedded `aieval serve` survives the death of its worker and leaves nothing behind when it dies itself.

- kill -9 the worker mid-run: `serve` reaps it (no zombie), starts a new one, its own sweeper requeues the job
  (the dead worker's sweeper died with it), and the job resumes and finishes with the scores of an undisturbed run.
- kill -9 `serve` mid-run: within a few seconds no process of it remains — worker, warm fork server, OpenCompass.
Real processes, SQLite, the directory broker and the tiny model kept under `<data dir>/models/`."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from process_tree import descendants, session_of, wait_all_gone
from server_it_helpers import PYTHON, Stack, free_port, mcq_rows, wait_until

from aieval_engine.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
ROWS = 96  # a few seconds of inference on the tiny model: long enough to kill something part-way
BODY_PARAMS = {"max_out_len": 32}


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("supervised-data")
    settings = {"AIEVAL_PREPARE_DEMO_MODEL": "false", "AIEVAL_ENV": "dev",
                # fast heartbeats and sweeps, so a dead worker's job is requeued within seconds
                "AIEVAL_HEARTBEAT_INTERVAL_S": "1", "AIEVAL_STALE_AFTER_S": "5", "AIEVAL_SWEEP_INTERVAL_S": "1"}
    stack = Stack(settings, tmp_path_factory.mktemp("supervised-logs"))
    for key in [k for k in stack.env if k.startswith("AIEVAL_") and k not in settings]:
        del stack.env[key]
    stack.data_dir = data_dir
    stack.model_dir = build_tiny_model(data_dir / "models" / "tiny")
    stack.start_api([PYTHON, "-m", "aieval_server", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
                     "--data-dir", str(data_dir)])
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def body(serve):
    model = serve.register_model("tiny", serve.model_dir, batch_size=2, max_out_len=32)
    dataset = serve.upload_dataset("even.jsonl", mcq_rows(ROWS))
    return {"model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": BODY_PARAMS}


def scores(detail: dict) -> list[tuple]:
    return [(s["model"], s["dataset"], s["metric"], s["value"]) for s in detail["scores"]]


def part_way(stack, evaluation_id: int) -> dict:
    return stack.wait_for(evaluation_id, lambda d: 0 < (d["progress"] or {}).get("samples_done", 0) < ROWS // 3,
                          180, "the run to be part-way")


def worker_pid(detail: dict) -> int:
    return int(detail["worker"].split(":")[1])


def test_killed_worker_is_restarted_and_its_job_resumes_with_the_same_scores(serve, body):
    reference = serve.finished(serve.submit({**body, "name": "reference"}))
    assert reference["status"] == "succeeded", reference["error"]

    evaluation_id = serve.submit({**body, "name": "interrupted"})
    victim = worker_pid(part_way(serve, evaluation_id))
    assert psutil.Process(victim).ppid() == serve.api.pid, "the worker should be serve's child"
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(victim), 5, what="serve to reap its killed worker (no zombie)")

    detail = serve.finished(evaluation_id, timeout=240)
    assert detail["status"] == "succeeded", detail["error"]
    assert detail["attempts"] == 2 and worker_pid(detail) != victim
    assert scores(detail) == scores(reference)
    assert detail["progress"]["samples_done"] == ROWS
    log = serve.read_log("api.log")
    assert f"the worker (pid {victim}) was killed by SIGKILL" in log, log[-3000:]
    assert f"requeueing evaluation {evaluation_id}" in log  # by serve's sweeper: the worker runs none


def test_killed_serve_leaves_no_process_behind(serve, body):
    evaluation_id = serve.submit({**body, "name": "orphan?"})
    part_way(serve, evaluation_id)
    family = descendants(serve.api.pid)
    assert len(family) >= 3, "a worker, its fork server and the OpenCompass run"
    sessions = {session_of(pid) for pid in [serve.api.pid, *family]} - {None}
    os.kill(serve.api.pid, signal.SIGKILL)
    serve.api.wait(timeout=10)
    seconds = wait_all_gone(family, sessions, serve.data_dir, timeout=5)
    print(f"nothing of serve left {seconds:.1f} s after kill -9")
