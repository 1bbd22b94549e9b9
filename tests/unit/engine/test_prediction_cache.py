"""The prediction cache's parts (prediction_cache.py, kvstore.py): what its key covers, the store shared by
processes, the hits the manifest reports, and where the config builder, the spec and the CLI switch it on or off.
The pool answering from it against a real endpoint: tests/integration/engine/test_prediction_cache_pool.py."""

from __future__ import annotations

import ast
import json
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aieval_engine.cli import build_parser
from aieval_engine.config_builder import build_config
from aieval_engine.kvstore import SqliteKeyValueStore
from aieval_engine.prediction_cache import (
    HITS_DIR_ENV,
    PredictionCache,
    index_ranges,
    manifest_entry,
)
from aieval_engine.sample_metrics import RECORD_FIELDS, SampleMetrics, cached_record, prompt_key
from aieval_engine.spec import parse_spec

BODY = {"model": "m", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 16, "n": 1,
        "temperature": 0.0}
ENDPOINT = "http://127.0.0.1:8000/v1/"


# ---- the key ---------------------------------------------------------------------------------------------------
def test_the_key_is_stable_and_changes_with_every_part_of_the_request_and_the_seed(tmp_path):
    cache = PredictionCache(tmp_path / "c.sqlite", seed=0)
    key = cache.key(ENDPOINT, BODY, {})
    assert cache.key(ENDPOINT.rstrip("/"), dict(reversed(list(BODY.items()))), {}) == key  # same request, other order
    variants = {
        "endpoint": cache.key("http://127.0.0.1:8001/v1/", BODY, {}),
        "model name": cache.key(ENDPOINT, {**BODY, "model": "m2"}, {}),
        "prompt": cache.key(ENDPOINT, {**BODY, "messages": [{"role": "user", "content": "What is 2 + 3?"}]}, {}),
        "role": cache.key(ENDPOINT, {**BODY, "messages": [{"role": "system", "content": "What is 2 + 2?"}]}, {}),
        "max_tokens": cache.key(ENDPOINT, {**BODY, "max_tokens": 17}, {}),
        "temperature": cache.key(ENDPOINT, {**BODY, "temperature": 0.7}, {}),
        "top_p": cache.key(ENDPOINT, {**BODY, "top_p": 0.9}, {}),
        "stop": cache.key(ENDPOINT, {**BODY, "stop": ["\n"]}, {}),
        "query": cache.key(ENDPOINT, BODY, {"api-version": "2024-06-01"}),
        "seed": PredictionCache(tmp_path / "c.sqlite", seed=1).key(ENDPOINT, BODY, {}),
    }
    assert key not in variants.values()
    assert len(set(variants.values())) == len(variants), variants


def test_request_keys_follow_what_the_model_sends_and_never_its_api_key(tmp_path, monkeypatch):
    from pool_inference import API_META_TEMPLATE

    from aieval_engine.oc_ext import SecretKeyOpenAISDK

    def model(**settings):
        return SecretKeyOpenAISDK(**{"path": "m", "openai_api_base": ENDPOINT, "meta_template": API_META_TEMPLATE,
                                     "key_env": "CACHE_TEST_KEY", **settings})

    cache = PredictionCache(tmp_path / "c.sqlite", seed=0)
    prompt = [{"role": "HUMAN", "prompt": "What is 2 + 2?"}]
    monkeypatch.setenv("CACHE_TEST_KEY", "sk-first-key")
    key = cache.request_key(model(), prompt, 16)
    assert prompt == [{"role": "HUMAN", "prompt": "What is 2 + 2?"}]  # the caller's prompt is left as it was
    monkeypatch.setenv("CACHE_TEST_KEY", "sk-rotated-key")
    assert cache.request_key(model(), prompt, 16) == key  # a rotated key keeps its answers
    changed = [
        cache.request_key(model(), [{"role": "HUMAN", "prompt": "What is 2 + 3?"}], 16),
        cache.request_key(model(), prompt, 17),
        cache.request_key(model(path="m2"), prompt, 16),
        cache.request_key(model(openai_api_base="http://127.0.0.1:8001/v1/"), prompt, 16),
        cache.request_key(model(temperature=0.5), prompt, 16),
        cache.request_key(model(openai_extra_kwargs={"top_p": 0.5}), prompt, 16),
        cache.request_key(model(extra_body={"stop": ["\n"]}), prompt, 16),
        PredictionCache(tmp_path / "c.sqlite", seed=7).request_key(model(), prompt, 16),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


# ---- the store -------------------------------------------------------------------------------------------------
def test_answers_are_kept_only_when_flushed_and_replaced_by_newer_ones(tmp_path):
    cache = PredictionCache(tmp_path / "c.sqlite", seed=0)
    cache.remember("k1", "first")
    assert cache.lookup(["k1"]) == {}  # buffered, not yet written
    cache.flush()
    cache.remember("k1", "second")
    cache.remember("k2", "")  # an empty answer the model gave (finish_reason stop) is an answer
    cache.flush()
    assert PredictionCache(tmp_path / "c.sqlite", seed=0).lookup(["k1", "k2", "k3"]) == {"k1": "second", "k2": ""}
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from aieval_engine.kvstore import SqliteKeyValueStore

    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = SqliteKeyValueStore(path, "predictions")
    while not go.exists():
        time.sleep(0.001)
    for batch in range(40):
        store.put_many({f"{name}-{batch}-{i}": f"answer {name} {batch} {i}" for i in range(25)})
        store.get_many([f"{name}-{batch}-0"])
""")


def test_two_processes_write_one_store_at_once_and_nothing_is_lost(tmp_path):
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(go)], stderr=subprocess.PIPE)
               for name in ("a", "b")]
    go.touch()  # both start writing at the same moment
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr.decode()[-2000:]
    keys = [f"{name}-{batch}-{i}" for name in ("a", "b") for batch in range(40) for i in range(25)]
    found = SqliteKeyValueStore(path, "predictions").get_many(keys)
    assert len(found) == 2000 and found["b-39-24"] == "answer b 39 24"


def _open_store_when_told(path: str, go: str) -> str:
    while not Path(go).exists():
        pass
    try:
        SqliteKeyValueStore(path, "predictions").put_many({"opened": "yes"})
    except sqlite3.OperationalError as error:
        return str(error)
    return ""


def test_many_processes_opening_a_new_store_at_the_same_moment_all_succeed(tmp_path):
    # Switching a new file to WAL while another process does the same fails at once with "database is locked"
    # (SQLite calls no busy handler there): the store must wait for the other process instead (CI saw this).
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for round_ in range(6):
            path, go = tmp_path / f"s{round_}.sqlite", tmp_path / f"go{round_}"
            pending = [pool.apply_async(_open_store_when_told, (str(path), str(go))) for _ in range(8)]
            time.sleep(0.05)
            go.touch()
            assert [result.get(timeout=120) for result in pending] == [""] * 8


def test_a_store_refuses_a_table_name_that_is_not_plain(tmp_path):
    with pytest.raises(ValueError):
        SqliteKeyValueStore(tmp_path / "x.sqlite", "t; DROP TABLE x")


# ---- which predictions came from the cache --------------------------------------------------------------------
def test_hits_are_recorded_per_model_and_reported_per_pair_as_index_ranges(tmp_path):
    hits = tmp_path / "hits"
    a = PredictionCache(tmp_path / "c.sqlite", seed=0, model="model-a", environ={HITS_DIR_ENV: str(hits)})
    a.record_hits("qa", [0, 1, 2])
    a.record_hits("qa", [5, 3])
    a.record_hits("mcq", [])  # nothing to say: no line
    PredictionCache(tmp_path / "c.sqlite", seed=0, model="model-b", environ={HITS_DIR_ENV: str(hits)}).record_hits(
        "mcq", [7])
    with open(hits / "model-a.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"dataset": "qa", "indi')  # a line cut off by a crash
    assert manifest_entry(True, hits) == {"enabled": True, "cached": 6, "pairs": [
        {"model": "model-a", "dataset": "qa", "cached": 5, "index_ranges": [[0, 3], [5, 5]]},
        {"model": "model-b", "dataset": "mcq", "cached": 1, "index_ranges": [[7, 7]]},
    ]}
    assert manifest_entry(False, tmp_path / "none") == {"enabled": False, "cached": 0, "pairs": []}
    # without the runner's directory (a config run by hand) nothing is recorded, and nothing fails
    PredictionCache(tmp_path / "c.sqlite", seed=0, model="m", environ={}).record_hits("qa", [1])


def test_index_ranges():
    assert index_ranges([]) == []
    assert index_ranges([4, 2, 3, 3, 9, 0]) == [[0, 0], [2, 4], [9, 9]]


def test_a_cached_sample_has_a_speed_record_without_figures():
    record = {"key": prompt_key("p"), **cached_record()}
    assert record["cached"] is True and all(record[field] is None for field in RECORD_FIELDS)
    assert SampleMetrics([record]).take("p") == dict.fromkeys(RECORD_FIELDS)


# ---- where it is switched on and off ---------------------------------------------------------------------------
def _model_configs(text: str) -> list[dict]:
    """Each model config of a generated config as {key: value}, the values that are literals (others: None)."""
    tree = ast.parse(text)
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "models"]
    configs = []
    for item in node.value.elts:
        config = {}
        for key, value in zip(item.keys, item.values, strict=True):
            try:
                config[ast.literal_eval(key)] = ast.literal_eval(value)
            except ValueError:
                config[ast.literal_eval(key)] = None
        configs.append(config)
    return configs


def _spec(tmp_path: Path, **params) -> object:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    return parse_spec({
        "models": [{"kind": "openai", "name": "endpoint", "base_url": ENDPOINT, "model": "m"},
                   {"kind": "huggingface", "name": "local", "path": "/models/tiny"},
                   {"kind": "dify", "name": "app", "base_url": "http://127.0.0.1:8002/v1"}],
        "datasets": [{"kind": "custom", "name": "qa", "path": str(data), "scorer": "judge"}],
        "judge": {"model": {"kind": "openai", "name": "judge", "base_url": ENDPOINT, "model": "j"}},
        "params": {"seed": 3, **params},
    })


def test_only_endpoint_models_get_the_cache_and_only_while_it_is_on(tmp_path):
    spec = _spec(tmp_path)
    assert spec.params.prediction_cache is True  # on unless turned off
    cache = tmp_path / "data" / "prediction-cache.sqlite"
    endpoint, local, app = _model_configs(build_config(spec, tmp_path / "on", prediction_cache=cache).text)
    assert endpoint["prediction_cache"] == {"path": str(cache.resolve()), "seed": 3, "model": endpoint["abbr"]}
    assert "prediction_cache" not in local and "prediction_cache" not in app
    built = build_config(spec, tmp_path / "on2", prediction_cache=cache, judge_cache=tmp_path / "judge.sqlite")
    assert built.text.count("prediction_cache") == 1  # the judge's calls have their own cache

    off = build_config(_spec(tmp_path, prediction_cache=False), tmp_path / "off", prediction_cache=cache).text
    without = build_config(spec, tmp_path / "without").text
    assert "prediction_cache" not in off and "prediction_cache" not in without
    # turned off, the config is exactly the one it always was (but for the job dir its data copies are in)
    assert off.replace(str((tmp_path / "off").resolve()), "JOB") == \
        without.replace(str((tmp_path / "without").resolve()), "JOB")


def test_the_cli_turns_the_cache_off_per_run():
    parser = build_parser()
    assert parser.parse_args(["run", "spec.yaml"]).prediction_cache is True
    assert parser.parse_args(["run", "spec.yaml", "--no-prediction-cache"]).prediction_cache is False
