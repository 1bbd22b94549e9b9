"""Issue 9: a registered model's shared request budget. Three real evaluations (three OpenCompass processes forked
by the warm launcher, running at the same time) against one model server whose row says max_concurrency=4, each
with a concurrency of its own of 4: the server never has more than 4 requests in flight, and every sample is
answered. The budget lives in the real Redis on 127.0.0.1:6379, under a key prefix of this test's own; the model
server is a loopback fake that counts the requests it is answering."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
from fake_openai import chat_completion

from aieval_engine.local_server import free_port
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec
from aieval_server.config import Settings
from aieval_server.models import Model
from aieval_server.services.models import engine_spec

pytestmark = pytest.mark.slow
REDIS_URL = "redis://127.0.0.1:6379/0"
ROWS = 24
JOB_CONCURRENCY = 4
MODEL_CAP = 4


class CountingChatEndpoint:
    """An OpenAI-compatible chat endpoint that takes `delay_s` per answer and records the most requests it was
    answering at once. It answers 'What is N times 3?' with N*3, so each answer proves which question it got."""

    def __init__(self, delay_s: float):
        endpoint = self
        self.in_flight = self.peak = self.requests = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real clients use

            def do_POST(self):  # noqa: N802 (http.server's naming)
                with endpoint.lock:
                    endpoint.in_flight += 1
                    endpoint.requests += 1
                    endpoint.peak = max(endpoint.peak, endpoint.in_flight)
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                    question = request["messages"][-1]["content"]
                    number = re.search(r"What is (\d+) times 3", question)
                    time.sleep(delay_s)
                    answer = str(int(number.group(1)) * 3) if number else "no idea"
                    body = chat_completion(request.get("model"), answer)
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    endpoint = CountingChatEndpoint(delay_s=0.15)
    yield endpoint
    endpoint.close()


@pytest.fixture
def key_prefix():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it: redis-server --daemonize yes")
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def questions_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "times3.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {n} times 3?", "answer": str(n * 3)}) + "\n"
                            for n in range(1, ROWS + 1)), encoding="utf-8")
    return path


def three_jobs_at_once(tmp_path: Path, launcher, model_spec, data: Path, budget_store: str) -> list:
    """Three evaluations of the same model, started together, each in its own OpenCompass process."""
    results: list = [None] * 3

    def run(i: int) -> None:
        spec = parse_spec({
            "name": f"job {i}",
            "models": [model_spec.model_dump(mode="json")],
            "datasets": [{"kind": "custom", "name": "times3", "path": str(data), "scorer": "contains"}],
            "params": {"max_out_len": 8},
        })
        results[i] = Evaluation(spec, tmp_path / f"job{i}", launcher=launcher, budget_store=budget_store).run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return results


def registered_model(model_id: int, url: str, max_concurrency: int | None) -> Model:
    return Model(id=model_id, name="shared vllm", kind="openai", max_concurrency=max_concurrency,
                 settings={"base_url": url, "model": "m", "concurrency": JOB_CONCURRENCY, "query_per_second": 1000,
                           "retries": 1})


def assert_every_sample_answered(results) -> None:
    for result in results:
        assert result is not None and result.ok, result and result.error
        assert [s.value for s in result.scores if s.metric == "accuracy"] == [100.0]
        samples = list(iter_samples(result.run_dir, result.pairs[0].model_abbr, result.pairs[0].dataset_abbr))
        assert len(samples) == ROWS


def test_three_jobs_share_the_model_cap_instead_of_tripling_it(tmp_path, warm_launcher, endpoint, key_prefix):
    data = questions_file(tmp_path / "data")
    settings = Settings(key_prefix=key_prefix, data_dir=tmp_path / "server")

    # Without a cap the three jobs together send up to 3 x 4 requests at once: the endpoint can see it.
    uncapped = engine_spec(registered_model(7, endpoint.url, None), settings)
    assert uncapped.shared_budget is None
    assert_every_sample_answered(three_jobs_at_once(tmp_path / "uncapped", warm_launcher, uncapped, data, REDIS_URL))
    assert endpoint.peak > MODEL_CAP, f"the jobs never overlapped (peak {endpoint.peak}): this test proves nothing"

    endpoint.peak = endpoint.requests = 0
    capped = engine_spec(registered_model(7, endpoint.url, MODEL_CAP), settings)
    assert capped.shared_budget.key == f"{key_prefix}budget:model:7"
    # The row's own settings cannot name another budget (or a larger cap): the server sets it from the row.
    sneaky = registered_model(7, endpoint.url, MODEL_CAP)
    sneaky.settings = {**sneaky.settings, "shared_budget": {"key": "budget:model:1", "max_concurrency": 1000}}
    assert engine_spec(sneaky, settings).shared_budget == capped.shared_budget
    started = time.monotonic()
    results = three_jobs_at_once(tmp_path / "capped", warm_launcher, capped, data, REDIS_URL)
    took = time.monotonic() - started
    assert_every_sample_answered(results)
    assert endpoint.requests == 3 * ROWS
    assert endpoint.peak == MODEL_CAP, f"{endpoint.peak} requests were in flight at once; the cap is {MODEL_CAP}"
    print(f"3 jobs x {ROWS} samples, cap {MODEL_CAP}: peak in flight {endpoint.peak}, {took:.1f} s")


def test_without_redis_the_jobs_of_one_machine_share_the_cap_through_lock_files(tmp_path, warm_launcher, endpoint,
                                                                                key_prefix):
    data = questions_file(tmp_path / "data")
    capped = engine_spec(registered_model(8, endpoint.url, MODEL_CAP), Settings(key_prefix=key_prefix))
    results = three_jobs_at_once(tmp_path / "capped", warm_launcher, capped, data, str(tmp_path / "budget"))
    assert_every_sample_answered(results)
    assert endpoint.requests == 3 * ROWS
    assert endpoint.peak == MODEL_CAP, f"{endpoint.peak} requests were in flight at once; the cap is {MODEL_CAP}"
