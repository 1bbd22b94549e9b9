"""The prediction cache: an endpoint model's answer to a request it has answered before, instead of asking again.

A re-run of an evaluation (the same models, data, prompts and settings, e.g. after a scorer change, or a second
evaluation that shares a dataset with the first) sends no request whose answer is known: it costs the time of
OpenCompass' own stages, not the model's.

- Key (`PredictionCache.key`): a sha256 over the endpoint's base URL, the exact request body the continuous pool
  sends (oc_async.AsyncChatCompletions.chat_request_body: the model name, the messages after templating and
  trimming, max_tokens, temperature, extra_body fields such as top_p or stop, ...), its query parameters and the
  run's seed. Never the API key (it travels in a header, which is not part of the key: a rotated key keeps its
  answers), nor how hard the model is called (concurrency, rate, timeout, retries). Any other change misses.
  The model behind an endpoint name is taken as fixed: a server that now serves other weights under the same name
  needs the cache off for its evaluations (`params.prediction_cache`).
- Where: the SQLite table `predictions` (kvstore.SqliteKeyValueStore: WAL, busy timeout; shared by the processes
  of the machine), in the file the run is given (`Evaluation(prediction_cache=...)`: the server's and `aieval
  run`'s `<data dir>/prediction-cache.sqlite`), named with the run's seed and the model's abbreviation in the
  model's config (config_builder; `prediction_cache=` of an OpenAI-compatible model), the way the judge cache is.
  A spec with `params.prediction_cache: false` gets no such field: its run neither reads nor writes the cache.
- When (oc_pool.ContinuousGenInferencer through `PoolCache`): every prompt of a task is looked up at once, before
  any request and so before the limiter: a hit costs no slot. Only answers the model actually gave are kept, after
  they arrive (never an error, nor a message `status_code_mappings` puts in place of one), written in one
  transaction per chunk of predictions. Requests OpenCompass' own GenInferencer sends (multi-round chats, a proxy,
  ...), Dify apps and local models are not cached.
- Which predictions came from the cache: the pool appends their indices per dataset to
  `<job>/outputs/prediction_cache_hits/<model abbr>.jsonl` (the directory the runner names in HITS_DIR_ENV) as it
  writes their predictions, and the runner puts them in the manifest (`manifest_entry`). Their per-sample speed
  record is marked `cached` with no latency or usage (sample_metrics.cached_record): nothing was measured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .kvstore import SqliteKeyValueStore
from .sample_metrics import cached_record

logger = logging.getLogger(__name__)
TABLE = "predictions"
# Bumped whenever what goes into a key changes, so that old entries miss rather than answer the wrong request.
KEY_VERSION = 1
# The directory the OpenCompass process records its cache hits in: set by the runner (runner.py). Unset (a config
# run by hand), answers still come from the cache but nobody is told which.
HITS_DIR_ENV = "AIEVAL_PREDICTION_CACHE_HITS_DIR"


def cache_file(data_dir: Path) -> Path:
    """The cache file of a data dir: the server's and `aieval run`'s."""
    return Path(data_dir) / "prediction-cache.sqlite"


class PredictionCache:
    """One model's view of the cache file: keys with the run's `seed`, fresh answers buffered by `remember` until
    `flush` (one transaction for many answers), hits recorded under the model's abbreviation `model`."""

    def __init__(self, path: str | Path, seed: int, model: str | None = None, environ: dict[str, str] | None = None):
        self.store = SqliteKeyValueStore(path, TABLE)
        self.seed = int(seed)
        hits_dir = (os.environ if environ is None else environ).get(HITS_DIR_ENV)
        self.hits_file = Path(hits_dir) / f"{model}.jsonl" if hits_dir and model else None
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, settings: dict[str, Any] | None) -> PredictionCache | None:
        """The cache a model config names (`{'path', 'seed', 'model'}`), or None."""
        if not settings:
            return None
        return cls(settings["path"], settings.get("seed", 0), settings.get("model"))

    def key(self, endpoint: str, body: dict[str, Any], query: dict[str, Any]) -> str:
        data = {"v": KEY_VERSION, "endpoint": endpoint.rstrip("/"), "body": body, "query": query, "seed": self.seed}
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def request_key(self, model, prompt, max_out_len: int) -> str:
        """The key of the request an endpoint model (oc_async.AsyncChatCompletions) sends for `prompt`."""
        # chat_request_body may trim a prompt's turns in place: the caller's prompt stays as OpenCompass records it
        body, _headers, query = model.chat_request_body(copy.deepcopy(prompt), max_out_len)
        return self.key(str(model.openai_api_base), body, query)

    def lookup(self, keys: list[str]) -> dict[str, str]:
        return self.store.get_many(keys)

    def remember(self, key: str, answer: str) -> None:
        """Keep an answer the model gave (written at the next `flush`)."""
        if isinstance(answer, str):
            with self._lock:
                self._pending[key] = answer

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        self.store.put_many(pending)

    def record_hits(self, dataset: str, indices: list[int]) -> None:
        """Append which predictions of `dataset` (their indices) came from the cache."""
        if self.hits_file is None or not indices:
            return
        line = (json.dumps({"dataset": dataset, "indices": indices}) + "\n").encode()
        self.hits_file.parent.mkdir(parents=True, exist_ok=True)
        # one write to a file opened for appending: the inference processes of several datasets may share the file
        fd = os.open(self.hits_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class PoolCache:
    """The cache's part in one task of the continuous pool (oc_pool.ContinuousGenInferencer): the prompts `parsed`
    (from index `start` of `dataset`) are looked up at once; `answers` holds the hits by position, `key(position)`
    gives a miss's key for agenerate to remember its answer under, and `saved(upto)` (called whenever the pool
    writes its predictions up to position `upto`) stores the fresh answers and records the hits written."""

    def __init__(self, model, parsed: list, max_out_len: int, start: int, dataset: str):
        self.cache: PredictionCache | None = getattr(model, "prediction_cache", None)
        self.start = start
        self.dataset = dataset
        self.answers: dict[int, str] = {}
        self._keys: list[str] = []
        self._recorded = 0  # positions below this have had their hits recorded
        if self.cache is None:
            return
        self._keys = [self.cache.request_key(model, prompt, max_out_len) for prompt in parsed]
        try:
            known = self.cache.lookup(self._keys)
        except sqlite3.Error as exc:  # a cache that cannot be read costs its answers, not the run
            logger.warning(f"the prediction cache {self.cache.store.path} cannot be read ({exc}): asking the model")
            known = {}
        metrics = getattr(model, "_metrics", None)
        for position, key in enumerate(self._keys):
            if key in known:
                self.answers[position] = known[key]
                if metrics is not None and metrics.enabled:
                    metrics.write(parsed[position], cached_record())

    def key(self, position: int) -> str | None:
        return self._keys[position] if self.cache is not None else None

    def saved(self, upto: int) -> None:
        if self.cache is None:
            return
        try:
            self.cache.flush()
        except sqlite3.Error as exc:
            logger.warning(f"answers not kept in the prediction cache {self.cache.store.path}: {exc}")
        hits = [self.start + p for p in range(self._recorded, upto) if p in self.answers]
        self.cache.record_hits(self.dataset, hits)
        self._recorded = max(self._recorded, upto)


# ---- what the manifest says --------------------------------------------------------------------------------
def index_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as inclusive [first, last] runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    ranges: list[list[int]] = []
    for index in sorted(set(indices)):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ranges


def read_hits(hits_dir: Path) -> dict[tuple[str, str], set[int]]:
    """(model abbr, dataset abbr) -> the indices of predictions that came from the cache."""
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for path in sorted(hits_dir.glob("*.jsonl")) if hits_dir.is_dir() else []:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    found[(path.stem, str(record["dataset"]))].update(int(i) for i in record["indices"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut off by a crash
    return found


def manifest_entry(enabled: bool, hits_dir: Path) -> dict[str, Any]:
    """The manifest's `prediction_cache`: whether the run used the cache, and per (model, dataset) how many
    predictions came from it and which (index ranges as in the predictions files)."""
    pairs = [{"model": model, "dataset": dataset, "cached": len(indices), "index_ranges": index_ranges(indices)}
             for (model, dataset), indices in sorted(read_hits(hits_dir).items())]
    return {"enabled": enabled, "cached": sum(pair["cached"] for pair in pairs), "pairs": pairs}
