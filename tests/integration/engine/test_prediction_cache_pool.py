"""The prediction cache in the continuous pool (prediction_cache.py, oc_pool.py), with OpenCompass' own dataset,
retriever and prompt template, against a real loopback endpoint whose answers hash the exact request
(body_hash_openai.py): a second inference of the same prompts sends nothing and writes the same predictions byte for
byte; any change to the request misses; a failed request is never remembered; the API key is not in the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint
from pool_inference import API_META_TEMPLATE, PREDICTIONS, infer, model_for, write_questions

from aieval_engine.prediction_cache import HITS_DIR_ENV, manifest_entry
from aieval_engine.sample_metrics import METRICS_DIR_ENV

SECRET = "sk-cache-test-4f1d2c"


@pytest.fixture
def endpoint():
    server = BodyHashEndpoint(latency_s=0.01)
    yield server
    server.close()


@pytest.fixture
def run_env(tmp_path, monkeypatch) -> Path:
    """The environment the runner gives the OpenCompass process: where hits and speed records go, and the key."""
    monkeypatch.setenv(HITS_DIR_ENV, str(tmp_path / "hits"))
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path / "metrics"))
    monkeypatch.setenv("CACHE_TEST_KEY", SECRET)
    return tmp_path


def cached_model(url: str, cache: Path, seed: int = 0, **settings):
    from aieval_engine.oc_ext import SecretKeyOpenAISDK

    settings = {"path": "pool-test-model", "retry": 2, **settings}
    return SecretKeyOpenAISDK(openai_api_base=url, meta_template=API_META_TEMPLATE, max_workers=4,
                              query_per_second=1000, key_env="CACHE_TEST_KEY", sample_metrics="m",
                              prediction_cache={"path": str(cache), "seed": seed, "model": "m"}, **settings)


def questions(data: Path) -> list[str]:
    return [json.loads(line)["question"] for line in data.read_text(encoding="utf-8").splitlines()]


def test_a_second_inference_sends_nothing_and_predicts_the_same_bytes(endpoint, run_env):
    tmp_path = run_env
    data = write_questions(tmp_path / "q.jsonl", 40)
    cache = tmp_path / "data" / "prediction-cache.sqlite"
    infer(data, cached_model(endpoint.url, cache), tmp_path / "first", 4)
    assert sorted(endpoint.questions_answered()) == sorted(questions(data))
    assert manifest_entry(True, tmp_path / "hits")["cached"] == 0

    infer(data, cached_model(endpoint.url, cache), tmp_path / "second", 4)
    assert len(endpoint.bodies) == 40  # not one more request
    assert (tmp_path / "second" / PREDICTIONS).read_bytes() == (tmp_path / "first" / PREDICTIONS).read_bytes()
    assert manifest_entry(True, tmp_path / "hits")["pairs"] == [
        {"model": "m", "dataset": "questions", "cached": 40, "index_ranges": [[0, 39]]}]
    records = [json.loads(line) for line in (tmp_path / "metrics" / "m.jsonl").read_text().splitlines()]
    fresh, cached = records[:40], records[40:]
    assert all(r["latency_s"] is not None and "cached" not in r for r in fresh)
    assert len(cached) == 40 and all(r["cached"] is True and r["latency_s"] is None for r in cached)
    # the store holds hashes and answers: the API key (sent with every request) is nowhere in its files
    for file in cache.parent.iterdir():
        assert SECRET.encode() not in file.read_bytes(), file


@pytest.mark.parametrize("change", [
    {"temperature": 0.7},
    {"path": "another-model"},
    {"openai_extra_kwargs": {"top_p": 0.5}},
    {"extra_body": {"stop": ["\n"]}},
    {"seed": 1},
])
def test_a_changed_request_or_seed_misses(endpoint, run_env, change):
    tmp_path = run_env
    data = write_questions(tmp_path / "q.jsonl", 10)
    cache = tmp_path / "cache.sqlite"
    infer(data, cached_model(endpoint.url, cache), tmp_path / "first", 4)
    infer(data, cached_model(endpoint.url, cache, **change), tmp_path / "changed", 4)
    assert len(endpoint.bodies) == 20  # every prompt sent again
    infer(data, cached_model(endpoint.url, cache, **change), tmp_path / "again", 4)
    assert len(endpoint.bodies) == 20  # and the changed requests' answers are kept in turn


def test_a_changed_prompt_misses_and_the_others_hit(endpoint, run_env):
    tmp_path = run_env
    data = write_questions(tmp_path / "q.jsonl", 12)
    cache = tmp_path / "cache.sqlite"
    infer(data, cached_model(endpoint.url, cache), tmp_path / "first", 4)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    rows[5]["question"] += " (reworded)"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    infer(data, cached_model(endpoint.url, cache), tmp_path / "second", 4)
    assert endpoint.questions_answered()[12:] == [rows[5]["question"]]
    assert manifest_entry(True, tmp_path / "hits")["pairs"][0]["index_ranges"] == [[0, 4], [6, 11]]


def test_a_failed_request_is_not_remembered(endpoint, run_env):
    tmp_path = run_env
    data = write_questions(tmp_path / "q.jsonl", 16)
    cache = tmp_path / "cache.sqlite"
    failing = questions(data)[9]
    endpoint.fail_questions.add(failing)  # answered 400: a failure for good
    with pytest.raises(RuntimeError, match="Calling OpenAI API failed"):
        infer(data, cached_model(endpoint.url, cache, retry=1), tmp_path / "first", 4)
    answered = set(endpoint.questions_answered())
    assert failing not in answered and answered
    with sqlite3.connect(cache) as db:
        kept = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
    # every answer that reached the pool is kept (the last few may have been cut off in flight by the failure)
    assert 0 < kept <= len(answered)

    endpoint.fail_questions.clear()
    infer(data, cached_model(endpoint.url, cache), tmp_path / "second", 4)
    asked_again = endpoint.questions_answered()[len(answered):]
    assert failing in asked_again and len(asked_again) == len(set(asked_again)) == 16 - kept
    assert set(asked_again) >= set(questions(data)) - answered
    infer(data, model_for(endpoint.url, 4, key_env="CACHE_TEST_KEY"), tmp_path / "uncached", 4)
    assert (tmp_path / "second" / PREDICTIONS).read_bytes() == (tmp_path / "uncached" / PREDICTIONS).read_bytes()
