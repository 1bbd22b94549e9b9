"""Helpers for the server integration tests: ports, waiting, process checks, the API/worker stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from signed_in import sign_in
from waiting import wait_until  # noqa: F401  (re-exported: the server tests import it from here)

from aieval_engine.local_server import free_port as engine_free_port

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
# The administrator every stack gets at its first start (AIEVAL_INITIAL_ADMIN_*): production-like stacks have
# sign-in on (prod.yaml), and Stack signs its client in as this user.
STACK_ADMIN, STACK_ADMIN_PASSWORD = "it-admin", "it-admin-password"
PG_ADMIN_URL = os.environ.get("AIEVAL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def free_port() -> int:
    """A free port in 18000-18999 (the range reserved for test servers)."""
    return engine_free_port(18000, 18999)


def processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is inside `directory` (OpenCompass runs chdir into their job dir)."""
    found = []
    root = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            found.append(int(entry.name))
    return found


# ---- running the server -----------------------------------------------------------------------
class Stack:
    """An API process and worker processes sharing one configuration (environment variables)."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = {"AIEVAL_INITIAL_ADMIN_USERNAME": STACK_ADMIN, "AIEVAL_INITIAL_ADMIN_PASSWORD": STACK_ADMIN_PASSWORD,
                    **os.environ, **env}
        self.logs = logs
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.url = ""
        self.client: httpx.Client | None = None

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / log_name, "ab")
        return subprocess.Popen(argv, env={**self.env, **(env or {})}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_api(self, argv: list[str] | None = None, port: int | None = None) -> None:
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.api = self._spawn(argv or [PYTHON, "apps/server/start_fastapi_server.py", "--host", "127.0.0.1",
                                        "--port", str(port)], "api.log")
        self.client = httpx.Client(base_url=self.url + "/api/v1", timeout=60)

        def healthy():
            if self.api.poll() is not None:
                raise AssertionError(f"the API exited: {self.read_log('api.log')[-3000:]}")
            try:
                return self.client.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 90, what="the API health check")
        if self.client.get("/auth/me").status_code == 401:  # sign-in is on: sign in as a browser would
            sign_in_client = httpx.Client(base_url=self.url, timeout=60)
            sign_in(sign_in_client, self.env["AIEVAL_INITIAL_ADMIN_USERNAME"], self.env["AIEVAL_INITIAL_ADMIN_PASSWORD"])
            self.client.cookies = sign_in_client.cookies
            self.client.headers["X-CSRF-Token"] = sign_in_client.headers["X-CSRF-Token"]
            sign_in_client.close()

    @property
    def auth_headers(self) -> dict[str, str]:
        """The session cookie as a header, for WebSocket clients (empty with sign-in off)."""
        token = self.client.cookies.get("aieval_session") if self.client is not None else None
        return {"Cookie": f"aieval_session={token}"} if token else {}

    def start_worker(self, queues: str = "api,local", concurrency: int = 2, data_dir: Path | None = None) -> subprocess.Popen:
        """A worker; with its own `data_dir` it stands for one on another machine (no job dir in common)."""
        index = len(self.workers)
        worker = self._spawn([PYTHON, "apps/server/start_celery_worker.py", "--queues", queues, "--concurrency", str(concurrency),
                              "--name", f"w{index}-{uuid.uuid4().hex[:6]}@%h"], f"worker{index}.log",
                             env={"AIEVAL_DATA_DIR": str(data_dir)} if data_dir else None)
        self.workers.append(worker)
        wait_until(lambda: "ready." in self.read_log(f"worker{index}.log") or worker.poll() is not None, 60,
                   what=f"worker {index} to be ready")
        assert worker.poll() is None, self.read_log(f"worker{index}.log")[-3000:]
        return worker

    def read_log(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is None:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    # ---- helpers used by tests ------------------------------------------------------------------
    def wait_for(self, evaluation_id: int, predicate, timeout: float, what: str) -> dict:
        def check():
            detail = self.client.get(f"/evaluations/{evaluation_id}").json()
            return detail if predicate(detail) else None

        try:
            return wait_until(check, timeout, interval=0.3, what=what)
        except AssertionError:
            detail = self.client.get(f"/evaluations/{evaluation_id}").json()
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.glob("*.log")))
            raise AssertionError(f"{what}: last state {json.dumps(detail)[:3000]}\n{logs}") from None

    def finished(self, evaluation_id: int, timeout: float = 240) -> dict:
        return self.wait_for(evaluation_id, lambda d: d["status"] not in ("queued", "running"), timeout,
                             f"evaluation {evaluation_id} to finish")

    def restart_api(self, sig: int = signal.SIGKILL) -> None:
        """Kill the API process (SIGKILL: no clean shutdown) and start a new one on the same port."""
        port = int(self.url.rsplit(":", 1)[1])
        os.killpg(self.api.pid, sig)
        self.api.wait(timeout=30)
        self.client.close()
        self.start_api(port=port)

    def register_model(self, name: str, path, **options) -> dict:
        response = self.client.post("/models", json={"name": name, "kind": "huggingface", "path": str(path),
                                                     "options": {"max_out_len": 16, **options}})
        assert response.status_code == 201, response.text
        return response.json()

    def upload_dataset(self, filename: str, content: bytes, **form) -> dict:
        response = self.client.post("/datasets", files={"file": (filename, content)}, data=form)
        assert response.status_code in (200, 201), response.text
        return response.json()["dataset"]

    def submit(self, body: dict) -> int:
        response = self.client.post("/evaluations", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def watch(self, evaluation_id: int) -> LiveWatch:
        """The evaluation's WebSocket, read in the background (see LiveWatch)."""
        return LiveWatch(self.url.replace("http://", "ws://") + f"/api/v1/evaluations/{evaluation_id}/ws",
                         headers=self.auth_headers)


class LiveWatch:
    """Reads one WebSocket in a background thread until the server closes it; keeps every message and how the
    socket ended (close code 1000 = the evaluation is final; anything else = dropped, clients fall back to
    polling)."""

    def __init__(self, url: str, open_timeout: float = 10, headers: dict[str, str] | None = None):
        import threading

        from websockets.sync.client import connect

        self.messages: list[dict] = []
        self.close_code: int | None = None
        self.error: str | None = None
        self.socket = connect(url, open_timeout=open_timeout, close_timeout=5, legacy=True,
                              additional_headers=headers)
        self.thread = threading.Thread(target=self._read, daemon=True, name="live-watch")
        self.thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self.messages.append(json.loads(self.socket.recv()))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
        except Exception as exc:  # noqa: BLE001 (recorded for the test to report)
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_closed(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        return self.close_code

    def statuses(self) -> list[str]:
        return [m["evaluation"]["status"] for m in self.messages if m.get("type") == "update"]

    def log_messages(self) -> int:
        return sum(1 for m in self.messages if m.get("type") == "log")

    def close(self) -> None:
        self.socket.close()
        self.thread.join(5)


def embedded_stack(data_dir: Path, logs: Path) -> Stack:
    """`aieval serve` as a user starts it: no AIEVAL_* settings at all, except skipping the minute-long demo model
    conversion in tests. Call start_embedded() once the data dir is prepared."""
    kept = ("AIEVAL_PREPARE_DEMO_MODEL", "AIEVAL_ENV")
    stack = Stack({"AIEVAL_PREPARE_DEMO_MODEL": "false", "AIEVAL_ENV": "dev"}, logs)
    for key in [k for k in stack.env if k.startswith("AIEVAL_") and k not in kept]:
        del stack.env[key]
    stack.data_dir = data_dir
    return stack


def start_embedded(stack: Stack) -> None:
    stack.start_api([PYTHON, "-m", "aieval_server", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
                     "--data-dir", str(stack.data_dir)])


def model_roots_env(*folders: Path) -> dict[str, str]:
    """AIEVAL_MODEL_ROOTS for a stack: the folders its Hugging Face checkpoints may be registered from (the test
    models are built outside every data dir, so that several stacks and "machines" share them)."""
    return {"AIEVAL_MODEL_ROOTS": json.dumps([str(folder) for folder in folders])}


def production_env(data_dir: Path, db_url: str, broker_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """AIEVAL_* settings of a production-like stack (as test_production_stack.py uses, with local storage unless
    `extra` says otherwise), fast heartbeats and sweeps for tests."""
    from cryptography.fernet import Fernet

    return {
        "AIEVAL_ENV": "prod",
        "AIEVAL_DATA_DIR": str(data_dir),
        "AIEVAL_DB_URL": db_url,
        "AIEVAL_BROKER_URL": broker_url,
        "AIEVAL_REDIS_URL": redis_url,
        "AIEVAL_KEY_PREFIX": f"it-{uuid.uuid4().hex[:8]}:",
        "AIEVAL_STORAGE": "local",
        "AIEVAL_SECRET_KEY": Fernet.generate_key().decode(),
        "AIEVAL_CHECK_MODEL_PATHS": "true",
        "AIEVAL_HEARTBEAT_INTERVAL_S": "1",
        "AIEVAL_STALE_AFTER_S": "5",
        "AIEVAL_SWEEP_INTERVAL_S": "1",
        # the test stack's model endpoints listen on loopback, which production's outbound policy refuses
        "AIEVAL_OUTBOUND_ALLOW_LOOPBACK": "true",
        **extra,
    }


def migrate(env: dict[str, str]) -> None:
    """Production does not migrate on start: scripts/migrate_db.py does it, as an operator would."""
    result = subprocess.run([PYTHON, "scripts/migrate_db.py"], cwd=REPO, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def qa_rows(count: int) -> bytes:
    return "".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                   for i in range(count)).encode()


def mcq_rows(count: int) -> bytes:
    return "".join(json.dumps({"question": f"Is {i} even?", "A": "yes", "B": "no", "answer": "A" if i % 2 == 0 else "B"}) + "\n"
                   for i in range(count)).encode()


def files_containing(root: Path, needle: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found
