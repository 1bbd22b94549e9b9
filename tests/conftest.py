"""Fixtures shared by every test layer: real models, a real OpenAI-compatible server, real benchmark data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A ~130k-parameter random Llama with a chat template: deterministic nonsense in milliseconds."""
    from aieval_engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def shared_gsm8k() -> Path:
    """The real GSM8K files from ../shared/datasets (CI has them; a user's clone does not)."""
    root = Path(os.environ.get("AIEVAL_SHARED_DATA", REPO.parent / "shared" / "datasets"))
    gsm8k = root / "gsm8k"
    if not (gsm8k / "test.jsonl").is_file():
        message = f"real GSM8K data not found at {gsm8k}"
        if os.environ.get("AIEVAL_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    return gsm8k


@pytest.fixture(scope="session")
def compass_cache_with_gsm8k(tmp_path_factory, shared_gsm8k) -> Path:
    """A COMPASS_DATA_CACHE whose data/gsm8k is the real data, as OpenCompass' built-in config expects."""
    cache = tmp_path_factory.mktemp("compass-cache")
    (cache / "data").mkdir()
    (cache / "data" / "gsm8k").symlink_to(shared_gsm8k, target_is_directory=True)
    return cache


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """llama.cpp's OpenAI-compatible server over the SmolLM2 GGUF on 127.0.0.1; yields its base URL."""
    from aieval_engine.demo import gguf_path

    python = os.environ.get("AIEVAL_LLAMA_PYTHON", str(REPO / ".venv-llama" / "bin" / "python"))
    if not Path(python).exists():
        pytest.fail(f"llama.cpp server not installed at {python}: run `make llama-server-env` (make test does)")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [python, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--seed", "0"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("llama.cpp server did not start within 90 s")
    yield base_url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def warm_launcher():
    """One warm OpenCompass fork server for the session, as a long-lived worker would have."""
    from aieval_engine.launchers import WarmLauncher

    launcher = WarmLauncher(python=sys.executable)
    launcher.warm_up()
    yield launcher
    launcher.close()
