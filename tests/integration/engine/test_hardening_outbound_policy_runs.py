"""Issue 8 finding 5: the OpenCompass process of a real evaluation connects only where its outbound policy
allows (all traffic on loopback)."""

from __future__ import annotations

import pytest
from fake_openai import FakeChatEndpoint

from aieval_engine.demo import DEMO_DATA
from aieval_engine.netpolicy import OutboundPolicy
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow


def test_an_allowed_loopback_endpoint_is_evaluated_and_a_refused_one_is_never_called(tmp_path, warm_launcher):
    endpoint = FakeChatEndpoint(answer="Paris")
    try:
        spec = parse_spec({
            "models": [{"kind": "openai", "name": "fake", "base_url": endpoint.url, "model": "m", "retries": 1}],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(DEMO_DATA / "demo_qa.jsonl")}],
            "params": {"limit": 2},
        })
        allowed = Evaluation(spec, tmp_path / "allowed", launcher=warm_launcher,
                             outbound_policy=OutboundPolicy.build(allow_loopback=False, allow_private=False,
                                                                  allow_networks=["127.0.0.1"])).run()
        assert allowed.status == "succeeded", allowed.error
        calls = len(endpoint.authorizations)
        assert calls == 2

        refused = Evaluation(spec, tmp_path / "refused", launcher=warm_launcher,
                             outbound_policy=OutboundPolicy.build(allow_loopback=False, allow_private=False)).run()
        assert refused.status == "failed"
        assert "refused by the outbound policy: 127.0.0.1 is a loopback address" in refused.error, refused.error
        assert len(endpoint.authorizations) == calls  # OpenCompass never reached the endpoint
    finally:
        endpoint.close()
