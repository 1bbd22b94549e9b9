"""Speed and size of each answer of an endpoint model: latency, token counts and retries per request.

Recorded inside the OpenCompass process by the project's remote model classes (oc_ext.py), one JSON line per
answered prompt, appended as requests finish to `<OpenCompass work dir>/sample_metrics/<model abbr>.jsonl` (the
work dir holds the timestamped run dirs, workdir.sample_metrics_file). A record is keyed by a hash of the prompt
OpenCompass sent, so `results.iter_samples` joins it to the sample whose `origin_prompt` is that prompt; a prompt
asked more than once (the same question twice in a dataset, or in two datasets) takes its records in order.

What is recorded, and why only that:
- latency_s: from sending the request of the successful attempt to having its whole response (seconds).
- prompt_tokens / completion_tokens: the endpoint's own `usage` (null when it sends none). Never estimated here.
- ttft_s: time to first token: from sending the request of the successful attempt to receiving the first streamed
  chunk that carries text (content or reasoning). Only the continuous pool's requests stream (oc_async.py); it is
  null where nothing streamed: OpenCompass' own sync path (its first byte arrives with the last token), a model with
  streaming turned off, a server that answered without streaming, an answer without any text, Dify apps.
- retries: attempts before the successful one (OpenAI client retries and OpenCompass' own both count).
Local Hugging Face models are not recorded: they generate a batch at a time, so a per-sample latency would be
invented.

Nothing here changes what is sent or what is predicted: the timing wraps the call, and the response body is read
once (the client reads the same bytes afterwards).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where the OpenCompass process writes its records: set by the runner (runner.py) for the process it starts.
# Unset (a config run by hand with the `opencompass` CLI), nothing is recorded.
METRICS_DIR_ENV = "AIEVAL_SAMPLE_METRICS_DIR"
RECORD_FIELDS = ("latency_s", "ttft_s", "prompt_tokens", "completion_tokens", "retries")


def prompt_key(prompt: Any) -> str:
    """A hash of a prompt as OpenCompass hands it to a model and writes it to `origin_prompt`: a string, or chat
    turns ({'role', 'prompt'}). Only the roles and texts count, so fields OpenCompass may add to a turn when writing
    predictions (e.g. input_length) do not change it."""
    if isinstance(prompt, (list, tuple)):
        canonical: Any = [
            [str(turn.get("role", "")), str(turn.get("prompt", ""))] if isinstance(turn, dict) else str(turn)
            for turn in prompt
        ]
    else:
        canonical = str(prompt)
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()[:32]


def token_count(value: Any) -> int | None:
    """A token count from a server's usage: a non-negative integer, else None (never guessed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return None
    return int(value) if value >= 0 else None


@dataclass
class Attempt:
    status: int
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None


class HttpAttempts:
    """httpx event hooks that time every HTTP attempt made on the current thread and read the `usage` of its JSON
    response, for whichever request `begin()` was called on this thread (OpenAISDK answers each prompt on one
    thread of its pool, and the OpenAI client sends on the calling thread)."""

    def __init__(self):
        self._local = threading.local()

    def event_hooks(self) -> dict[str, list]:
        return {"request": [self._on_request], "response": [self._on_response]}

    def begin(self) -> None:
        self._local.attempts = []
        self._local.requests = 0
        self._local.started = None

    def end(self) -> tuple[list[Attempt], int]:
        """The attempts answered since begin() and how many requests were sent (a connection that failed sends a
        request without an answer)."""
        attempts = getattr(self._local, "attempts", None) or []
        requests = getattr(self._local, "requests", 0)
        self._local.attempts = None
        return attempts, requests

    def _on_request(self, request) -> None:
        if getattr(self._local, "attempts", None) is not None:
            self._local.requests += 1
            self._local.started = time.perf_counter()

    def _on_response(self, response) -> None:
        attempts = getattr(self._local, "attempts", None)
        started = getattr(self._local, "started", None)
        if attempts is None or started is None:
            return
        prompt_tokens = completion_tokens = None
        if "json" in response.headers.get("content-type", ""):
            # The whole body, as the client would read it next anyway (httpx keeps it): the latency includes it.
            response.read()
            try:
                usage = json.loads(response.content).get("usage")
            except (ValueError, AttributeError):
                usage = None
            if isinstance(usage, dict):
                prompt_tokens = token_count(usage.get("prompt_tokens"))
                completion_tokens = token_count(usage.get("completion_tokens"))
        attempts.append(Attempt(response.status_code, time.perf_counter() - started, prompt_tokens, completion_tokens))
        self._local.started = None


def record_of(attempts: list[Attempt], requests: int) -> dict[str, Any] | None:
    """The record of one answered prompt from its HTTP attempts: the last successful one's latency, time to first
    token and usage, and how many requests were sent before it."""
    succeeded = [a for a in attempts if 200 <= a.status < 300]
    if not succeeded:
        return None
    last = succeeded[-1]
    ttft_s = None if last.ttft_s is None else round(last.ttft_s, 6)
    return {"latency_s": round(last.latency_s, 6), "ttft_s": ttft_s, "prompt_tokens": last.prompt_tokens,
            "completion_tokens": last.completion_tokens, "retries": max(requests, len(attempts)) - 1}


def cached_record() -> dict[str, Any]:
    """The record of a prompt answered from the prediction cache (prediction_cache.py): no request was sent, so
    there is no latency, usage or retry of this run to report."""
    return {**dict.fromkeys(RECORD_FIELDS), "cached": True}


class MetricsWriter:
    """Appends one JSON line per answered prompt to <dir>/<name>.jsonl. Thread-safe (a lock), and each record is a
    single write to a file opened for appending, so the inference processes of several datasets of one model
    (OpenCompass' workers) can share the file."""

    def __init__(self, name: str | None, environ: dict[str, str] | None = None):
        directory = (os.environ if environ is None else environ).get(METRICS_DIR_ENV)
        self.path = Path(directory) / f"{name}.jsonl" if directory and name else None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, prompt: Any, record: dict[str, Any] | None) -> None:
        if self.path is None or record is None:
            return
        line = (json.dumps({"key": prompt_key(prompt), **record}, ensure_ascii=False) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


class SampleMetrics:
    """The records of one model, handed out by prompt: `take(prompt)` gives the next unused record of that prompt
    (None when there is none)."""

    def __init__(self, records: Iterable[dict[str, Any]] = ()):
        self._by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                self._by_key[record["key"]].append(record)
        self._used: dict[str, int] = defaultdict(int)

    @classmethod
    def read(cls, path: Path) -> SampleMetrics:
        records = []
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut off by a crash: that sample has no record
        except OSError:
            pass
        return cls(records)

    def take(self, prompt: Any) -> dict[str, Any]:
        key = prompt_key(prompt)
        found = self._by_key.get(key) or []
        position = self._used[key]
        self._used[key] += 1
        record = found[position] if position < len(found) else {}
        return {field: _number(record.get(field), field) for field in RECORD_FIELDS}


def _number(value: Any, field: str) -> float | int | None:
    if field in ("prompt_tokens", "completion_tokens", "retries"):
        return token_count(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(rows: Iterable[Any]) -> dict[str, Any] | None:
    """Speed of one result (model x dataset) from its samples (objects with the RECORD_FIELDS attributes): latency
    p50/p95 and mean, time to first token p50/p95 (over the samples that have one), tokens per answer, total tokens,
    retries. None when no sample has a record (a local model, or
    a run from before recording)."""
    rows = list(rows)
    latencies = [r.latency_s for r in rows if r.latency_s is not None]
    if not latencies:
        return None
    first_tokens = [r.ttft_s for r in rows if r.ttft_s is not None]
    prompt_tokens = [r.prompt_tokens for r in rows if r.prompt_tokens is not None]
    completion_tokens = [r.completion_tokens for r in rows if r.completion_tokens is not None]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "samples": len(latencies),  # samples with a record
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_mean_s": mean(latencies),
        "ttft_p50_s": percentile(first_tokens, 50),
        "ttft_p95_s": percentile(first_tokens, 95),
        "prompt_tokens_mean": mean(prompt_tokens),
        "completion_tokens_mean": mean(completion_tokens),
        # only when every recorded sample has its usage: a sum over some of them would look like the whole
        "total_tokens": (sum(prompt_tokens) + sum(completion_tokens)
                         if len(prompt_tokens) == len(completion_tokens) == len(latencies) else None),
        "retries": sum(r.retries or 0 for r in rows),
    }
