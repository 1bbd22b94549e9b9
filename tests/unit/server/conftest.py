"""The server in-process on SQLite, local storage and a directory broker under a temporary data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    from aieval_server.config import Settings

    return Settings(data_dir=tmp_path / "data", register_demo=False, web_dist=tmp_path / "no-web")


@pytest.fixture
def client(settings):
    from aieval_server.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from aieval_engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


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
