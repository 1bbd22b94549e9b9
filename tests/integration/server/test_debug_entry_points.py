"""The debug entry points of apps/server (debug_fastapi_server.py, debug_celery_worker.py, test_eval_task.py) as real
processes on the embedded settings (SQLite, directory broker): debugpy listens, a debugger attached to the
solo-pool worker stops at a breakpoint in the task, and evaluations sent through the API complete on it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest
from server_it_helpers import (
    PYTHON,
    REPO,
    Stack,
    free_port,
    model_roots_env,
    processes_in,
    qa_rows,
    wait_until,
)

TASK_FILE = REPO / "apps" / "server" / "aieval_server" / "tasks" / "evaluation.py"


def embedded_env(data_dir) -> dict[str, str]:
    return {"AIEVAL_ENV": "dev", "AIEVAL_DATA_DIR": str(data_dir), "AIEVAL_REGISTER_DEMO": "false",
            "AIEVAL_PREPARE_DEMO_MODEL": "false"}


def embedded_stack(tmp_path_factory, name: str) -> Stack:
    data_dir = tmp_path_factory.mktemp(f"{name}-data")
    stack = Stack(embedded_env(data_dir), tmp_path_factory.mktemp(f"{name}-logs"))
    # Only the settings above: none of the caller's AIEVAL_* (a PostgreSQL URL, a broker...).
    for key in [k for k in stack.env if k.startswith("AIEVAL_") and k not in embedded_env(data_dir)]:
        del stack.env[key]
    stack.data_dir = data_dir
    return stack


def free_ports(count: int) -> list[int]:
    """Distinct free ports (free_port() gives the same one until something binds it)."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", free_port()))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


class DapClient:
    """The Debug Adapter Protocol as VS Code speaks it when it attaches: enough to set a breakpoint and see it hit."""

    def __init__(self, port: int):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stream = self.socket.makefile("rb")
        self.seq = 0

    def send(self, command: str, **arguments) -> int:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}).encode()
        self.socket.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.seq

    def receive(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            length = None
            while True:
                line = self.stream.readline()
                if not line:
                    raise EOFError("the debug adapter closed the connection")
                if not line.strip():
                    break
                name, value = line.decode().split(":", 1)
                if name.strip().lower() == "content-length":
                    length = int(value)
            message = json.loads(self.stream.read(length))
            if predicate(message):
                return message

    def request(self, command: str, timeout: float = 30, **arguments) -> dict:
        seq = self.send(command, **arguments)
        response = self.receive(lambda m: m.get("type") == "response" and m.get("request_seq") == seq, timeout)
        assert response["success"], response
        return response

    def close(self) -> None:
        self.stream.close()
        self.socket.close()


# ---- debug_fastapi_server.py ---------------------------------------------------------------------
def test_debug_api_serves_and_listens_for_a_debugger(tmp_path_factory):
    stack = embedded_stack(tmp_path_factory, "debug-api")
    port, debug_port = free_ports(2)
    try:
        stack.start_api([PYTHON, "apps/server/debug_fastapi_server.py", "--host", "127.0.0.1", "--port", str(port),
                         "--debug-port", str(debug_port)], port=port)
        assert stack.client.get("/health").json()["database"] == "sqlite"
        assert f"debugpy listening on 127.0.0.1:{debug_port}; API at http://127.0.0.1:{port}" in stack.read_log("api.log")
        assert listening(debug_port)
        stack.api.send_signal(signal.SIGTERM)
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert stack.api.wait(timeout=30) in (0, -signal.SIGTERM), stack.read_log("api.log")[-3000:]
        assert "Application shutdown complete" in stack.read_log("api.log")
        wait_until(lambda: not listening(debug_port), 20, what="debugpy's adapter to exit with the API")
    finally:
        stack.stop()


def test_debug_scripts_say_how_to_install_debugpy_when_it_is_missing():
    for script in ("debug_fastapi_server.py", "debug_celery_worker.py"):
        # As `python apps/server/<script>` would run it, with `import debugpy` failing.
        hide_debugpy = ("import os, runpy, sys; sys.modules['debugpy'] = None; sys.argv = [sys.argv[1]]; "
                        "sys.path[0] = os.path.dirname(sys.argv[0]); runpy.run_path(sys.argv[0], run_name='__main__')")
        result = subprocess.run([PYTHON, "-c", hide_debugpy, f"apps/server/{script}"], cwd=REPO, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "AIEVAL_DATA_DIR": "/nonexistent/aieval"})
        assert result.returncode == 2 and 'pip install -e ".[dev]"' in result.stderr, (script, result.stderr)


# ---- debug_celery_worker.py and test_eval_task.py -----------------------------------------------------
@pytest.fixture(scope="module")
def debug_stack(tmp_path_factory, tiny_models):
    """A solo-pool worker under debugpy and an API (start_fastapi_server.py) on the same settings, a tiny model
    and a 4-row dataset registered."""
    stack = embedded_stack(tmp_path_factory, "debug-worker")
    stack.env.update(model_roots_env(tiny_models[0].parent))
    stack.debug_port = free_port()
    stack.worker_name = f"debug-{uuid.uuid4().hex[:6]}@%h"
    worker = stack._spawn([PYTHON, "apps/server/debug_celery_worker.py", "--queues", "api,local", "--name",
                           stack.worker_name, "--debug-port", str(stack.debug_port)], "worker.log")
    stack.workers.append(worker)
    try:
        wait_until(lambda: "ready." in stack.read_log("worker.log") or worker.poll() is not None, 90,
                   what="the debug worker to be ready")
        assert worker.poll() is None, stack.read_log("worker.log")[-3000:]
        stack.start_api()
        stack.model = stack.register_model("tiny", tiny_models[0], max_out_len=8)
        stack.dataset = stack.upload_dataset("qa.jsonl", qa_rows(4), name="qa4")
        yield stack
    finally:
        stack.stop()
        wait_until(lambda: not processes_in(stack.data_dir), 30, what="the worker's OpenCompass processes to exit")
        assert worker.returncode == 0, stack.read_log("worker.log")[-3000:]
        wait_until(lambda: not listening(stack.debug_port), 20, what="debugpy's adapter to exit with the worker")


def test_debug_worker_stops_at_a_breakpoint_in_the_task_and_completes_the_evaluation(debug_stack):
    stack = debug_stack
    log = stack.read_log("worker.log")
    assert f"debugpy listening on 127.0.0.1:{stack.debug_port}; worker {stack.worker_name} (solo pool)" in log
    assert "concurrency: 1 (solo)" in log

    lines = TASK_FILE.read_text().splitlines()
    task = next(i for i, text in enumerate(lines) if text.startswith("def run_evaluation"))
    line = lines.index("    settings = get_settings()", task) + 1  # the task's first statement (1-based)
    dap = DapClient(stack.debug_port)
    try:
        dap.request("initialize", clientID="pytest", adapterID="debugpy", pathFormat="path", linesStartAt1=True,
                    columnsStartAt1=True)
        attach = dap.send("attach", justMyCode=False)
        dap.receive(lambda m: m.get("event") == "initialized", 30)
        dap.request("setBreakpoints", source={"path": str(TASK_FILE)}, breakpoints=[{"line": line}])
        dap.request("configurationDone")
        dap.receive(lambda m: m.get("type") == "response" and m.get("request_seq") == attach, 30)

        evaluation_id = stack.submit({"name": "debug-worker", "model_ids": [stack.model["id"]],
                                      "dataset_ids": [stack.dataset["id"]], "params": {"limit": 2, "max_out_len": 8}})
        stopped = dap.receive(lambda m: m.get("event") == "stopped", 60)["body"]
        assert stopped["reason"] == "breakpoint", stopped
        frames = dap.request("stackTrace", threadId=stopped["threadId"])["body"]["stackFrames"]
        assert (frames[0]["name"], frames[0]["line"]) == ("run_evaluation", line)
        threads = {t["id"]: t["name"] for t in dap.request("threads")["body"]["threads"]}
        assert threads[stopped["threadId"]] == "MainThread"  # the solo pool: the task runs in the worker's thread
        dap.request("setBreakpoints", source={"path": str(TASK_FILE)}, breakpoints=[])
        dap.request("continue", threadId=stopped["threadId"])
        dap.request("disconnect", terminateDebuggee=False)
    finally:
        dap.close()

    detail = stack.finished(evaluation_id, timeout=180)
    assert detail["status"] == "succeeded", detail
    assert [s["metric"] for s in detail["scores"]] == ["accuracy"]
    assert detail["worker"].split(":")[1] == str(stack.workers[0].pid)  # run in the debugged process itself


def run_script(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "apps/server/test_eval_task.py", *args], cwd=REPO, env=stack.env,
                          capture_output=True, text=True, timeout=240)


def test_eval_task_script_submits_follows_and_prints_scores(debug_stack):
    stack = debug_stack
    result = run_script(stack, "--api", stack.url, "--model-id", str(stack.model["id"]), "--dataset-id",
                        str(stack.dataset["id"]), "--limit", "2", "--max-out-len", "8", "--interval", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  tiny / qa4: accuracy = \d+\.\d\d$", result.stdout, re.M), result.stdout
    evaluation_id = int(re.search(r"submitted evaluation (\d+): model tiny", result.stdout).group(1))
    assert re.search(r"\] (queued|running)", result.stdout), result.stdout  # the progress lines
    detail = stack.client.get(f"/evaluations/{evaluation_id}").json()
    assert detail["status"] == "succeeded" and detail["params"]["limit"] == 2

    # Straight to the broker, without the API: the worker receives it (and skips it, the evaluation is done).
    result = run_script(stack, "--evaluation-id", str(evaluation_id), "--broker-only")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sent 'run evaluation {evaluation_id}' to the filesystem broker, queue local" in result.stdout
    wait_until(lambda: f"evaluation {evaluation_id}: skipped" in stack.read_log("worker.log"), 30,
               what="the worker to receive the message sent to the broker")


def test_eval_task_script_explains_an_unreachable_api(debug_stack):
    result = run_script(debug_stack, "--api", f"http://127.0.0.1:{free_port()}")
    assert result.returncode not in (0, None)
    assert "cannot reach the API at http://127.0.0.1:" in result.stderr and "make run" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

    result = run_script(debug_stack, "--api", debug_stack.url)  # no demo model on this server: say what to do
    assert result.returncode == 2 and "no demo model is registered" in result.stderr and "--model-id" in result.stderr


def test_vscode_launch_configurations_match_the_scripts():
    text = (REPO / ".vscode" / "launch.json").read_text()
    configurations = {c["name"]: c for c in json.loads(text)["configurations"]}
    assert configurations["FastAPI: attach (debug_fastapi_server.py)"]["connect"]["port"] == 5678
    assert configurations["Celery worker: attach (debug_celery_worker.py)"]["connect"]["port"] == 5679
    for name in ("FastAPI: debug directly", "Celery worker: debug directly"):
        assert configurations[name]["python"] == "${command:python.interpreterPath}"
        assert configurations[name]["env"]["AIEVAL_DATA_DIR"] == "${workspaceFolder}/var"
    assert "aieval_server.main:create_app" in configurations["FastAPI: debug directly"]["args"]
    tracked = subprocess.run(["git", "check-ignore", "-q", ".vscode/launch.json"], cwd=REPO)
    assert tracked.returncode == 1, ".gitignore must not exclude .vscode/launch.json"
