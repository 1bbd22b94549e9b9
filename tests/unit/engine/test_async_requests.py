"""The async request path of SecretKeyOpenAISDK (oc_async.py) against a real loopback endpoint whose answers hash
the exact request: it sends what OpenAISDK's own sync path sends (and asks for a stream: `stream`, `stream_options`)
and returns what it returns; it honours Retry-After;
its connections obey the outbound policy like the sync client's (netpolicy.GuardedAsyncTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from body_hash_openai import BodyHashEndpoint, without_stream_fields
from pool_inference import API_META_TEMPLATE

from aieval_engine.netpolicy import GuardedAsyncTransport, OutboundPolicy, OutboundPolicyError
from aieval_engine.oc_ext import SecretKeyOpenAISDK
from aieval_engine.sample_metrics import METRICS_DIR_ENV

PROMPTS = [
    "A plain prompt, é 中文",
    [{"role": "SYSTEM", "prompt": "Be brief."}, {"role": "HUMAN", "prompt": "Q1?"}, {"role": "BOT", "prompt": "A1"},
     {"role": "HUMAN", "prompt": "Q2, \"quoted\" and \\ backslashed?"}],
]


def agenerate(model, prompt, max_out_len=20):
    async def run():
        async with model.async_client() as client:
            return await model.agenerate(client, prompt, max_out_len)
    return asyncio.run(run())


@pytest.fixture
def endpoint():
    server = BodyHashEndpoint()
    yield server
    server.close()


@pytest.mark.parametrize("settings", [
    {},
    {"temperature": 0.3, "extra_body": {"top_k": 5, "temperature": 1.0}, "openai_extra_kwargs": {"top_p": 0.9}},
    {"path": "o1-mini", "extra_body": {"reasoning_effort": "low"}},  # OpenAISDK's reasoning-model branch
    {"max_seq_len": 125},  # the output length is cut to what the prompt leaves
])
def test_the_async_request_and_answer_are_the_sync_ones(endpoint, monkeypatch, settings):
    monkeypatch.setenv("POOL_TEST_KEY", "sk-pool-test")
    settings = {"path": "m", **settings}
    model = SecretKeyOpenAISDK(openai_api_base=endpoint.url, meta_template=API_META_TEMPLATE, key_env="POOL_TEST_KEY",
                               **settings)
    for prompt in PROMPTS:
        sync_answer = model.generate([json.loads(json.dumps(prompt))], max_out_len=20)[0]
        sync_body = endpoint.bodies[-1]
        async_answer = agenerate(model, json.loads(json.dumps(prompt)))
        async_body = endpoint.bodies[-1]
        assert without_stream_fields(async_body) == sync_body
        # the same fields in the same order, then the stream's
        assert list(async_body) == [*sync_body, "stream", "stream_options"]
        assert (async_body["stream"], async_body["stream_options"]) == (True, {"include_usage": True})
        assert async_answer == sync_answer and len(async_answer) == 24  # the answer hashes body and key


def test_reasoning_content_and_mapped_error_statuses_are_handled_as_opencompass_does(monkeypatch):
    endpoint = BodyHashEndpoint(reasoning=True)
    try:
        model = SecretKeyOpenAISDK(path="m", openai_api_base=endpoint.url, meta_template=API_META_TEMPLATE,
                                   think_tag="</think>", status_code_mappings={400: "refused by the test"})
        answer = agenerate(model, "Why?")
        assert answer == model.generate(["Why?"], max_out_len=20)[0]
        assert answer.startswith("thinking about Why?</think>")
        endpoint.fail_questions.add("Blocked?")
        assert agenerate(model, "Blocked?") == model.generate(["Blocked?"], max_out_len=20)[0] == "refused by the test"
    finally:
        endpoint.close()


def test_a_refusal_is_retried_after_its_retry_after_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    endpoint = BodyHashEndpoint(refuse_first=True, retry_after="0.4")
    try:
        model = SecretKeyOpenAISDK(path="m", openai_api_base=endpoint.url, meta_template=API_META_TEMPLATE,
                                   sample_metrics="m")
        assert model.retry_backoff_s == 1.0  # without Retry-After the wait would be a second
        assert len(agenerate(model, "Once refused?")) == 24
        (refused, refused_status), (retried, retried_status) = [(t, s) for t, _, s in endpoint.arrivals]
        assert (refused_status, retried_status) == (429, 200)
        assert 0.4 <= retried - refused < 0.9
        (record,) = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
        assert record["retries"] == 1 and record["prompt_tokens"] == 7 and record["completion_tokens"] == 3
    finally:
        endpoint.close()


def test_a_failure_that_persists_ends_in_opencompass_error_after_its_retries(endpoint):
    endpoint.fail_questions.add("Never?")
    model = SecretKeyOpenAISDK(path="m", openai_api_base=endpoint.url, meta_template=API_META_TEMPLATE, retry=2)
    model.retry_backoff_s = 0.01
    with pytest.raises(RuntimeError, match="failed after retrying for 2 times"):
        agenerate(model, "Never?")
    assert [s for _, q, s in endpoint.arrivals] == [400, 400]  # a 400 is not retried by the client itself


def resolver_of(table):
    def resolve(host, port):
        if host not in table:
            raise OSError(f"unknown test host {host}")
        return table[host]
    return resolve


def test_the_async_transport_checks_every_address_before_connecting(endpoint):
    port = endpoint.server.server_port
    policy = OutboundPolicy(resolver=resolver_of({"model.test": ["127.0.0.1"],
                                                  "rebound.test": ["127.0.0.1", "169.254.169.254"]}))
    closed = OutboundPolicy.build(allow_loopback=False, allow_private=False)

    async def run():
        async with httpx.AsyncClient(transport=GuardedAsyncTransport(policy)) as client:
            ok = await client.post(f"http://model.test:{port}/v1/chat/completions",
                                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            assert ok.status_code == 200
            with pytest.raises(OutboundPolicyError, match="rebound.test resolves to 169.254.169.254"):
                await client.post(f"http://rebound.test:{port}/v1/chat/completions", json={})
            with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.test"):
                await client.get("http://nowhere.test/v1")
        async with httpx.AsyncClient(transport=GuardedAsyncTransport(closed)) as client:
            with pytest.raises(OutboundPolicyError, match="loopback"):
                await client.post(f"{endpoint.url}/chat/completions", json={})

    asyncio.run(run())
    assert len(endpoint.bodies) == 1  # only the allowed request reached the server


def test_the_infer_partitioner_swaps_in_the_pool_for_gen_inferencer_only():
    from mmengine.config import Config
    from opencompass.openicl.icl_inferencer import GenInferencer, PPLInferencer

    from aieval_engine.oc_pool import CONTINUOUS_INFERENCER, use_continuous_pool

    kinds = [GenInferencer, "opencompass.openicl.icl_inferencer.icl_gen_inferencer.GenInferencer", "GenInferencer",
             PPLInferencer, "my_package.GenInferencer"]
    task = Config({"datasets": [[{"abbr": str(i), "infer_cfg": {"inferencer": {"type": kind, "max_out_len": 5}}}
                                 for i, kind in enumerate(kinds)] + [{"abbr": "no-infer-cfg"}]]})
    use_continuous_pool([[task]])
    swapped = [d.get("infer_cfg", {}).get("inferencer", {}).get("type") for d in task["datasets"][0]]
    assert swapped[:3] == [CONTINUOUS_INFERENCER] * 3
    assert swapped[3:] == [PPLInferencer, "my_package.GenInferencer", None]
    assert task["datasets"][0][0]["infer_cfg"]["inferencer"]["max_out_len"] == 5
