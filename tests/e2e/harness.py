"""Shared by the e2e tests, the screenshot script and bench/bench_web.py: start a real `aieval serve`
(API + worker, SQLite, fresh data dir) on a free port, and launch Debian's Chromium through Playwright."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aieval_engine.local_server import free_port as engine_free_port

REPO = Path(__file__).resolve().parents[2]
WEB_DIST = REPO / "apps" / "web" / "dist"
CHROMIUM = os.environ.get("AIEVAL_CHROMIUM", "/usr/bin/chromium")
# NOTES.md: flags that work headless as root on these machines.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PREPARED_DEMO_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"


def free_port(low: int = 18000, high: int = 18999) -> int:
    return engine_free_port(low, high)


def prepare_shared_demo_model() -> Path:
    """Convert the demo GGUF once into the repo's var/ (what `make run` uses too); later runs reuse it.

    Called from a collection hook, not a fixture, so the one-time ~30-120 s conversion on a fresh clone is not
    charged to the first test's timeout."""
    from aieval_engine.demo import prepare_demo_model

    return prepare_demo_model(PREPARED_DEMO_MODEL.parent.parent)


def link_prepared_demo_model(data_dir: Path) -> None:
    """Give a server's data dir the converted demo model, so the tests never meet the "demo model is still being
    prepared" refusal."""
    from aieval_engine.demo import demo_model_dir

    target = demo_model_dir(data_dir)
    if target.exists():
        return
    source = prepare_shared_demo_model()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)


class Server:
    def __init__(self, data_dir: Path, port: int, log_path: Path, env: dict | None = None, worker: bool = True):
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        # The installed `aieval serve` command, exactly as a user starts it (its module when not installed).
        cli = Path(sys.executable).with_name("aieval")
        command = [str(cli)] if cli.exists() else [sys.executable, "-m", "aieval_server.cli"]
        args = [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
        if not worker:
            args.append("--no-worker")
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            args, cwd=data_dir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "AIEVAL_DATA_DIR": str(data_dir), "AIEVAL_WEB_DIST": str(WEB_DIST), **(env or {})},
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"aieval serve exited {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/api/v1/health", timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError(f"aieval serve not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole session: uvicorn, the worker and any OpenCompass child it forked.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def running_server(worker: bool = True, keep: bool = False, model_roots: tuple[Path, ...] = (),
                   env: dict[str, str] | None = None):
    """`model_roots`: folders, besides the data dir's models/ and the linked demo model's, that checkpoints may be
    registered from (AIEVAL_MODEL_ROOTS). `env`: more settings (e.g. sign-in on)."""
    if not (WEB_DIST / "index.html").is_file():
        raise RuntimeError(f"{WEB_DIST} has no index.html: run `npm ci && npm run build` in apps/web first")
    data_dir = Path(tempfile.mkdtemp(prefix="aieval-e2e-"))
    link_prepared_demo_model(data_dir)
    # The demo model's folder is a link to the one converted in var/models: the roots hold where links lead.
    roots = [data_dir / "models", PREPARED_DEMO_MODEL.parent, *model_roots]
    server = Server(data_dir, free_port(), data_dir / "serve.log", worker=worker,
                    env={"AIEVAL_MODEL_ROOTS": json.dumps([str(root) for root in roots]), **(env or {})})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def launch_chromium(playwright):
    """Debian's Chromium; Playwright gives every launch its own fresh temporary profile directory."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
