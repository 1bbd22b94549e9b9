"""A real OpenAI-compatible server on 127.0.0.1: llama.cpp's server over the SmolLM2 GGUF.

Used by tests and benchmarks to exercise the endpoint path with a real model, offline. llama-cpp-python
lives in its own venv (see scripts/install_llama_server.sh), named by `python`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from .demo import gguf_path

MODEL_ALIAS = "smollm2"


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A free port on 127.0.0.1: any the system picks, or one in [low, high] (test servers keep to a range)."""
    if low is None or high is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    # Start at a pid-dependent offset (parallel runs rarely collide), wrap around the whole range.
    span = high - low + 1
    start = os.getpid() % span
    for offset in range(span):
        port = low + (start + offset) % span
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


class LlamaServer:
    def __init__(self, python: str | Path, log_path: str | Path, port: int | None = None, startup_timeout: float = 90):
        self.python = Path(python)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        if not self.python.exists():
            raise FileNotFoundError(
                f"llama.cpp server not installed at {self.python}: run `make llama-server-env`"
            )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "llama_cpp.server", "--model", str(gguf_path()),
                 "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                 "--n_ctx", "2048", "--seed", "0",
                 # By default it cuts a streamed answer short whenever another request arrives (stream requests are
                 # the request pool's, several at once): answer each in full, as other servers do.
                 "--interrupt_requests", "False"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not start within {self.startup_timeout:g} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
