"""The throughput benchmark's model server (bench/capacity_model_server.py) is only a fair yardstick if it really
serves at most `capacity` requests at once (the rest wait, none are dropped), refuses above `refuse_above` with a
Retry-After, and gives every client the same deterministic answers. Counted, not timed."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import httpx

from aieval_engine.local_server import free_port

_SPEC = importlib.util.spec_from_file_location(
    "capacity_model_server", Path(__file__).resolve().parents[3] / "bench" / "capacity_model_server.py")
capacity_model_server = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(capacity_model_server)


async def _ask_all(count: int, **server_options) -> tuple[list[httpx.Response], dict]:
    server = capacity_model_server.CapacityServer(retry_after=1, **server_options)
    port = free_port(19000, 19999)
    ready = asyncio.Event()
    serving = asyncio.create_task(capacity_model_server.serve("127.0.0.1", port, server, ready))
    await ready.wait()
    try:
        async def ask(number: int, client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": capacity_model_server.question_text(number)}]})

        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count)) as client:
            responses = await asyncio.gather(*(ask(n, client) for n in range(count)))
            stats = (await client.get(f"http://127.0.0.1:{port}/stats")).json()
        return list(responses), stats
    finally:
        serving.cancel()


def test_serves_at_most_capacity_at_once_and_answers_deterministically():
    responses, stats = asyncio.run(_ask_all(12, capacity=4, latency=1.0, refuse_above=None))
    assert [r.status_code for r in responses] == [200] * 12  # the ones beyond capacity waited
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert answers == [capacity_model_server.served_answer(n) for n in range(12)]
    assert stats["peak"] == 4 and stats["answered"] == 12 and stats["questions_answered"] == 12
    correct = sum(a == capacity_model_server.reference_answer(n) for n, a in enumerate(answers))
    assert 0 < correct < 12
    assert 100.0 * correct / 12 == capacity_model_server.expected_percent(12)


def test_refuses_above_the_limit_with_retry_after():
    responses, stats = asyncio.run(_ask_all(6, capacity=64, latency=2.0, refuse_above=2))
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 4 and all(r.headers["Retry-After"] == "1" for r in refused)
    assert stats["peak"] == 2 and stats["refused"] == 4 and stats["questions_answered"] == 2


def test_question_numbers_differ_across_datasets():
    rows = capacity_model_server.qa_rows(3, first=1000)
    assert [r["question"] for r in rows] == [capacity_model_server.question_text(n) for n in (1000, 1001, 1002)]
    assert all(r["answer"] == capacity_model_server.reference_answer(n) for r, n in zip(rows, (1000, 1001, 1002),
                                                                                         strict=True))
