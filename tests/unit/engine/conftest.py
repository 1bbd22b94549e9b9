"""Shared fixtures for the engine unit tests: small real files in tmp_path, never OpenCompass runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MCQ_ROWS = [
    {"question": "Capital of France?", "A": "Berlin", "B": "Paris", "C": "Rome", "answer": "B"},
    {"question": "2 + 2 = ?", "A": "4", "B": "5", "C": "22", "answer": "A"},
]
QA_ROWS = [
    {"question": "Capital of Japan?", "answer": "Tokyo"},
    {"question": "How many legs does a spider have?", "answer": "8"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def qa_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "data" / "qa.jsonl", QA_ROWS)


@pytest.fixture
def mcq_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "data" / "mcq.jsonl", MCQ_ROWS)


@pytest.fixture
def hf_model_dir(tmp_path) -> Path:
    """A directory that looks like a Hugging Face checkpoint to `Evaluation.prepare` (config.json only)."""
    path = tmp_path / "models" / "tiny"
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    return path


@pytest.fixture
def openai_model() -> dict:
    return {"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "smollm2"}
