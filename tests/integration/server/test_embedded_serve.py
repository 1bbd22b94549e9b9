"""The embedded default: one command starts the API and a worker on SQLite, local files and a directory broker;
the demo model and demo datasets are registered on first start."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from server_it_helpers import (
    embedded_stack,
    processes_in,
    start_embedded,
    wait_until,
)
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    stack = embedded_stack(tmp_path_factory.mktemp("embedded-data"), tmp_path_factory.mktemp("embedded-logs"))
    start_embedded(stack)
    try:
        yield stack
    finally:
        stack.stop()


def test_one_command_serves_api_docs_demo_and_runs_an_evaluation(embedded, tiny_models):
    stack = embedded
    health = stack.client.get("/health").json()
    # The tests skip the demo model's conversion (AIEVAL_PREPARE_DEMO_MODEL=false): it will not become ready.
    assert health == {"status": "ok", "env": "dev", "database": "sqlite", "broker": "filesystem",
                      "events": "database-polling", "storage": "local", "demo_model": "unavailable"}
    assert stack.client.get(stack.url + "/docs").status_code == 200
    demo_models = [m for m in stack.client.get("/models").json() if m["is_demo"]]
    assert [m["name"] for m in demo_models] == ["SmolLM2-135M-Instruct (demo)"]
    demo_sets = {d["name"]: d for d in stack.client.get("/datasets").json() if d["is_demo"]}
    assert set(demo_sets) == {"demo-mcq", "demo-qa"} and all(d["available"] for d in demo_sets.values())

    # Checkpoints are registered from under the model roots: by default <data dir>/models, where the demo is.
    checkpoint = shutil.copytree(tiny_models[0], stack.data_dir / "models" / "tiny")
    model = stack.client.post("/models", json={"name": "tiny", "kind": "huggingface", "path": str(checkpoint)}).json()
    list_socket = connect(stack.url.replace("http://", "ws://") + "/api/v1/evaluations/ws", open_timeout=10,
                          legacy=True)
    created = stack.client.post("/evaluations", json={
        "name": "embedded", "model_ids": [model["id"]], "dataset_ids": [d["id"] for d in demo_sets.values()],
        "params": {"limit": 4, "max_out_len": 8}})
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]

    updates = []
    with connect(stack.url.replace("http://", "ws://") + f"/api/v1/evaluations/{evaluation_id}/ws") as socket:
        try:
            while True:
                updates.append(json.loads(socket.recv(timeout=240)))
        except Exception as exc:
            assert type(exc).__name__ == "ConnectionClosedOK", exc
    statuses = [u["evaluation"]["status"] for u in updates]
    assert statuses[-1] == "succeeded", updates[-1]
    assert "running" in statuses

    seen = []
    while not any(item["id"] == evaluation_id and item["status"] == "succeeded" for item in seen):
        seen += json.loads(list_socket.recv(timeout=30))["items"]
    list_socket.close()

    detail = stack.client.get(f"/evaluations/{evaluation_id}").json()
    assert {s["dataset"] for s in detail["scores"]} == {"demo-mcq", "demo-qa"}
    samples = stack.client.get(f"/evaluations/{evaluation_id}/samples", params={"dataset": "demo-qa"}).json()
    assert samples["total"] == 4 and all(item["prediction"] is not None for item in samples["items"])

    artifacts = stack.data_dir / "storage" / "evaluations" / str(evaluation_id)
    assert (artifacts / "run.log").is_file()
    assert stack.client.delete(f"/evaluations/{evaluation_id}").status_code == 204
    assert not artifacts.exists() and not (stack.data_dir / "jobs" / str(evaluation_id)).exists()
    with sqlite3.connect(stack.data_dir / "aieval.db") as db:
        assert db.execute("select count(*) from scores").fetchone() == (0,)


def test_the_console_says_where_to_go_and_nothing_else(embedded):
    """`make run` output: one banner once the server listens; no access line per file, no library warnings, no
    start-up chatter, nothing from the worker (the test above ran a whole evaluation through this server)."""
    from aieval_server.cli import banner

    stack = embedded
    docs = stack.client.get(stack.url + "/docs")
    assets = [part.split('"', 1)[0] for part in docs.text.split('src="')[1:]]
    assert assets and all(stack.client.get(stack.url + path).status_code == 200 for path in assets)
    lines = [line for line in stack.read_log("api.log").splitlines() if line.strip()]
    assert lines == [banner(stack.url)], lines[:20]


def test_stopping_the_command_leaves_no_process(embedded):
    stack = embedded
    api = stack.api
    started = _descendants(api.pid)
    assert started, "serve should have started a worker (and the worker its OpenCompass fork server)"
    api.send_signal(signal.SIGTERM)
    api.wait(timeout=60)
    wait_until(lambda: not [p for p in started if Path(f"/proc/{p}").exists()] and not processes_in(stack.data_dir),
               40, what="the worker and its OpenCompass fork server to exit")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        parents[int(status.parent.name)] = ppid
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found
