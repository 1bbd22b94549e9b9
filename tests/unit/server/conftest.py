"""The server in-process on SQLite, local storage and a directory broker under a temporary data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """A model root of the test settings, where the tiny model is built (a checkpoint must lie under a root)."""
    return tmp_path_factory.mktemp("model-root")


@pytest.fixture
def settings(tmp_path, monkeypatch, tiny_model_root):
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    from aieval_server.config import Settings

    return Settings(data_dir=tmp_path / "data", register_demo=False, web_dist=tmp_path / "no-web",
                    model_roots=[tmp_path / "data" / "models", tiny_model_root],
                    # TestClient sends `Host: testserver`; real servers in tests are reached as 127.0.0.1 (trusted).
                    trusted_hosts=[*Settings.model_fields["trusted_hosts"].default, "testserver"])


@pytest.fixture
def client(settings):
    from aieval_server.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def tiny_model(tiny_model_root) -> Path:
    from aieval_engine.tiny_model import build_tiny_model

    return build_tiny_model(tiny_model_root / "tiny")


@pytest.fixture
def stored_files(settings):
    """What local storage holds right now (to prove a refused request left nothing behind)."""

    def files() -> list[str]:
        root = settings.local_storage_dir
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []

    return files


@pytest.fixture
def queued_messages(settings):
    def messages() -> list[str]:
        folder = settings.broker_dir / "queue"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    return messages

