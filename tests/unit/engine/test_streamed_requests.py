"""Streamed answers on the pool's async request path (oc_async.py), against real loopback servers that stream real
server-sent events (fake_openai.send_chat_reply): the time to the first token is recorded per sample, the prediction
is the one OpenCompass' own non-streamed OpenAISDK path gives, an error event or a cut stream is a failed attempt that
is retried like any other, a server that ignores `stream` is read as before, and streaming can be turned off.
Plus the per-result summary of those records (median and 95th percentile, against numpy)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest
from fake_openai import FakeChatEndpoint
from pool_inference import API_META_TEMPLATE
from timed_openai import TimedChatEndpoint, delay_of, first_token_delay_of

from aieval_engine.concurrency import FixedLimiter
from aieval_engine.oc_async import STREAM_FIELDS, completion_of_stream
from aieval_engine.oc_ext import SecretKeyOpenAISDK
from aieval_engine.sample_metrics import METRICS_DIR_ENV, summarize

ANSWER = "Paris is the capital of France, é 中文."
FIRST_TOKEN_S, REST_S = 0.4, 0.3
# How much later than the server's own delays a time may be read on a loaded 2-core machine.
SLACK_S = 0.35


def model_for(url: str, **settings) -> SecretKeyOpenAISDK:
    model = SecretKeyOpenAISDK(path="m", openai_api_base=url, meta_template=API_META_TEMPLATE, sample_metrics="m",
                               **settings)
    model.retry_backoff_s = 0.01
    return model


def agenerate(model, prompt, limiter=None):
    async def run():
        async with model.async_client() as client:
            return await model.agenerate(client, prompt, 20, limiter=limiter)
    return asyncio.run(run())


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "m.jsonl").read_text().splitlines()]


@pytest.fixture
def metrics_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("protocol_version", ["HTTP/1.0", "HTTP/1.1"])  # body until close; chunked
def test_the_first_token_is_timed_and_the_answer_is_the_non_streamed_one(metrics_dir, protocol_version):
    endpoint = FakeChatEndpoint(ANSWER, first_token_delay_s=FIRST_TOKEN_S, answer_delay_s=REST_S,
                                protocol_version=protocol_version)
    try:
        model = model_for(endpoint.url)
        prompt = [{"role": "HUMAN", "prompt": "What is the capital of France?"}]
        streamed = agenerate(model, json.loads(json.dumps(prompt)))
        streamed_body = endpoint.bodies[-1]
        assert streamed == ANSWER
        (record,) = records(metrics_dir)
        # The role-only chunk comes at once: the first token is the first chunk with text.
        assert FIRST_TOKEN_S <= record["ttft_s"] < FIRST_TOKEN_S + SLACK_S, record
        assert FIRST_TOKEN_S + REST_S <= record["latency_s"] < FIRST_TOKEN_S + REST_S + SLACK_S, record
        assert record["ttft_s"] < record["latency_s"]
        assert (record["prompt_tokens"], record["completion_tokens"], record["retries"]) == (1, 1, 0)  # usage chunk

        # OpenCompass' own sync path (not streamed) sends the same body but for the two stream fields, last.
        assert model.generate([json.loads(json.dumps(prompt))], max_out_len=20)[0] == streamed
        sync_body = endpoint.bodies[-1]
        assert list(streamed_body) == [*sync_body, *STREAM_FIELDS]
        assert {key: streamed_body[key] for key in STREAM_FIELDS} == {"stream": True,
                                                                       "stream_options": {"include_usage": True}}
        assert {key: value for key, value in streamed_body.items() if key not in STREAM_FIELDS} == sync_body
    finally:
        endpoint.close()


def test_a_server_without_a_usage_chunk_gets_null_tokens_and_still_a_first_token(metrics_dir):
    endpoint = TimedChatEndpoint(send_usage=False)
    try:
        answer = agenerate(model_for(endpoint.url), [{"role": "HUMAN", "prompt": "What is 4 times 3?"}])
        assert answer == "12 (max_tokens 20)"
        (record,) = records(metrics_dir)
        assert record["prompt_tokens"] is None and record["completion_tokens"] is None
        assert first_token_delay_of(4) <= record["ttft_s"] < first_token_delay_of(4) + SLACK_S
        assert delay_of(4) <= record["latency_s"]
    finally:
        endpoint.close()


@pytest.mark.parametrize(("fault", "protocol_version"), [("error-event", "HTTP/1.1"), ("cut", "HTTP/1.1"),
                                                         ("cut", "HTTP/1.0")])
def test_an_error_event_or_a_cut_stream_is_a_failed_attempt_that_is_retried(metrics_dir, fault, protocol_version):
    endpoint = FakeChatEndpoint(ANSWER, protocol_version=protocol_version)
    try:
        endpoint.faults = [fault]
        limiter = FixedLimiter(4)
        assert agenerate(model_for(endpoint.url, retry=2), "Capital?", limiter=limiter) == ANSWER
        assert len(endpoint.bodies) == 2 and endpoint.faults == []
        (record,) = records(metrics_dir)
        assert record["retries"] == 1 and record["ttft_s"] is not None  # the successful attempt's

        # Failing on every attempt ends as OpenCompass' own error after its `retry` attempts, none repeated by the
        # openai client's own retries (it does not retry inside an iterated stream either).
        endpoint.faults = [fault, fault]
        with pytest.raises(RuntimeError, match="failed after retrying for 2 times"):
            agenerate(model_for(endpoint.url, retry=2), "Capital?", limiter=limiter)
        assert len(endpoint.bodies) == 4
        assert limiter.in_flight == 0  # every slot came back
    finally:
        endpoint.close()


def test_streaming_turned_off_sends_opencompass_body_and_records_no_first_token(metrics_dir):
    endpoint = FakeChatEndpoint(ANSWER, first_token_delay_s=0.1)
    try:
        model = model_for(endpoint.url, stream=False)
        assert agenerate(model, "Capital?") == ANSWER
        async_body = endpoint.bodies[-1]
        assert model.generate(["Capital?"], max_out_len=20)[0] == ANSWER
        assert async_body == endpoint.bodies[-1] and "stream" not in async_body
        (record,) = records(metrics_dir)[:1]
        assert record["ttft_s"] is None and record["latency_s"] >= 0.1 and record["prompt_tokens"] == 1
    finally:
        endpoint.close()


def test_a_server_that_ignores_stream_is_read_as_one_completion(metrics_dir):
    endpoint = FakeChatEndpoint(ANSWER)
    endpoint.ignores_stream = True
    try:
        assert agenerate(model_for(endpoint.url), "Capital?") == ANSWER
        assert endpoint.bodies[-1]["stream"] is True
        (record,) = records(metrics_dir)
        assert record["ttft_s"] is None and record["completion_tokens"] == 1
    finally:
        endpoint.close()


def sse(*chunks, done=True) -> bytes:
    events = [f"data: {json.dumps(chunk)}\r\n\r\n".encode() for chunk in chunks]
    return b"".join(events) + (b"data: [DONE]\r\n\r\n" if done else b"")


def delta(finish_reason=None, **fields):
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish_reason}]}


def test_the_streamed_completion_is_what_a_whole_one_would_hold():
    completion, problem = completion_of_stream(sse(
        delta(role="assistant", content=""), delta(reasoning_content="think "), delta(reasoning_content="more"),
        delta(content="an"), delta(content="swer"), delta(content=None), delta("length"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}))
    assert problem is None
    assert completion == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "answer",
                                                               "reasoning_content": "think more"},
                                       "finish_reason": "length"}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": 4}}
    # SSE comments (a keep-alive) and a missing space after "data:" are part of the format
    completion, _ = completion_of_stream(b": ping\n\ndata:" + json.dumps(delta("stop", content="x")).encode()
                                         + b"\n\ndata: [DONE]\n\n")
    assert completion["choices"][0]["message"]["content"] == "x" and completion["usage"] == {}
    # a finished stream whose deltas hold no text: an empty message, which OpenAISDK takes as '' when it stopped
    assert completion_of_stream(sse(delta(role="assistant"), delta("stop")))[0]["choices"][0]["message"]["content"] == ""

    assert "error event" in completion_of_stream(sse(delta(content="a"), {"error": {"message": "boom"}}))[1]
    assert "ended before" in completion_of_stream(sse(delta(content="a"), done=False))[1]
    # [DONE] without a finish_reason: stopped early (llama-cpp-python sends [DONE] when it interrupts a stream)
    assert "ended before" in completion_of_stream(sse(delta(role="assistant"), delta(content="a")))[1]
    assert "not JSON" in completion_of_stream(b'data: {"choices": [\n\n')[1]
    # a stream that finished but sent no [DONE] (the openai client accepts that too)
    assert completion_of_stream(sse(delta("stop", content="a"), done=False))[1] is None


def test_the_summary_of_a_result_has_the_first_token_median_and_95th_percentile():
    first_tokens = list(np.random.default_rng(3).random(23) / 2)
    rows = [SimpleNamespace(latency_s=t + 1, ttft_s=t, prompt_tokens=None, completion_tokens=None, retries=0)
            for t in first_tokens]
    rows.append(SimpleNamespace(latency_s=2.0, ttft_s=None, prompt_tokens=None, completion_tokens=None, retries=0))
    summary = summarize(rows)
    assert summary["samples"] == 24
    assert summary["ttft_p50_s"] == pytest.approx(np.percentile(first_tokens, 50), abs=1e-12)
    assert summary["ttft_p95_s"] == pytest.approx(np.percentile(first_tokens, 95), abs=1e-12)

