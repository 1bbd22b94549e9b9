"""Fixtures shared by every test layer: real models, a real OpenAI-compatible server, real benchmark data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The layers run in this order whatever the command line lists: fast tests first, and the browser tests last, whose
# session-wide driver keeps an asyncio loop on the main thread (tests that call asyncio.run must not run after it).
LAYER_ORDER = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(session, config, items):
    def layer(item) -> int:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        return LAYER_ORDER.index(parts[0]) if parts and parts[0] in LAYER_ORDER else len(LAYER_ORDER)

    items.sort(key=layer)  # stable: the order within a layer stays pytest's own


@pytest.fixture
def unused_port() -> int:
    from aieval_engine.local_server import free_port

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
    from aieval_engine.local_server import LlamaServer

    python = os.environ.get("AIEVAL_LLAMA_PYTHON", str(REPO / ".venv-llama" / "bin" / "python"))
    server = LlamaServer(python, tmp_path_factory.mktemp("llama") / "server.log")
    try:
        server.start()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(str(exc))
    yield server.base_url
    server.stop()


@pytest.fixture(scope="session")
def warm_launcher():
    """One warm OpenCompass fork server for the session, as a long-lived worker would have."""
    from aieval_engine.launchers import WarmLauncher

    launcher = WarmLauncher(python=sys.executable)
    launcher.warm_up()
    yield launcher
    launcher.close()
