"""Issue 8 finding 5: the outbound policy for model URLs (aieval_engine/netpolicy.py).

Nothing here connects anywhere but loopback: refusals are checked before any connection is made, and an
audit hook records every socket.connect of this process to prove it."""

from __future__ import annotations

import http.server
import sys
import threading

import httpcore
import httpx
import pytest

from aieval_engine.netpolicy import (
    POLICY_ENV,
    GuardedTransport,
    OutboundPolicy,
    OutboundPolicyError,
    check_url_form,
    guarded_client,
)
from aieval_engine.spec import SpecError, parse_spec

METADATA_URL = "http://169.254.169.254/latest/meta-data/"
PRODUCTION = OutboundPolicy.build(allow_loopback=False, allow_private=False, allow_networks=["10.20.0.0/16"])

# ---- every socket.connect of this process, while a test listens -------------------------------------
_connects: list | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and _connects is not None:
        _connects.append(args[1][:2])


sys.addaudithook(_audit)


@pytest.fixture
def connects():
    global _connects
    _connects = []
    yield _connects
    _connects = None


class RedirectToMetadata:
    """A loopback HTTP server answering every request with a 302 to the cloud metadata address."""

    def __init__(self):
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _redirect(self):
                owner.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(302)
                self.send_header("Location", METADATA_URL)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _redirect  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirect_server():
    server = RedirectToMetadata()
    yield server
    server.close()


class RecordingBackend(httpcore.SyncBackend):
    """httpcore's real backend, noting each (host, port) it is asked to connect to."""

    def __init__(self):
        self.targets: list[tuple[str, int]] = []

    def connect_tcp(self, host, port, *args, **kwargs):
        self.targets.append((host, port))
        return super().connect_tcp(host, port, *args, **kwargs)


def resolver_of(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown test host {host}")
        return table[host]
    return resolve


# ---- the decision --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, engine_default, production",
    [
        ("169.254.169.254", False, False),  # link-local / AWS, GCP, Azure, OCI metadata
        ("169.254.0.1", False, False),
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),  # AWS metadata over IPv6 (inside the private fc00::/7)
        ("100.100.100.200", False, False),  # Alibaba Cloud metadata (inside carrier-grade NAT 100.64/10)
        ("::ffff:169.254.169.254", False, False),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 of 169.254.169.254
        ("0.0.0.0", False, False),  # reaches this machine
        ("::", False, False),
        ("224.0.0.1", False, False),
        ("240.0.0.1", False, False),
        ("255.255.255.255", False, False),
        ("127.0.0.1", True, False),
        ("127.8.9.10", True, False),
        ("::1", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("10.0.0.5", True, False),
        ("172.16.3.4", True, False),
        ("192.168.1.20", True, False),
        ("100.64.0.1", True, False),  # carrier-grade NAT
        ("fd12:3456::1", True, False),  # unique local
        ("10.20.3.4", True, True),  # listed in PRODUCTION's allow_networks
        ("8.8.8.8", True, True),
        ("2606:4700:4700::1111", True, True),
    ],
)
def test_decision_on_literal_addresses(address, engine_default, production):
    for policy, allowed in ((OutboundPolicy(), engine_default), (PRODUCTION, production)):
        if allowed:
            assert policy.resolve(address, 80)
        else:
            with pytest.raises(OutboundPolicyError, match="refused by the outbound policy"):
                policy.resolve(address, 80)


def test_host_names_are_judged_on_every_address_they_resolve_to():
    resolve = resolver_of({
        "metadata.test": ["169.254.169.254"],
        "mixed.test": ["8.8.8.8", "10.0.0.1"],  # one public, one private address
        "public.test": ["8.8.8.8", "2606:4700:4700::1111"],
        "internal.test": ["10.20.0.7"],
    })
    engine = OutboundPolicy(resolver=resolve)
    production = OutboundPolicy.build(allow_loopback=False, allow_private=False, allow_networks=["10.20.0.0/16"],
                                      resolver=resolve)
    for policy in (engine, production):
        with pytest.raises(OutboundPolicyError, match="metadata.test resolves to 169.254.169.254, a link-local"):
            policy.check_url("http://metadata.test/latest/")
        assert len(policy.check_url("https://public.test/v1")) == 2
        assert policy.check_url("http://internal.test:8000/v1")
    assert engine.check_url("http://mixed.test/v1")
    with pytest.raises(OutboundPolicyError, match="mixed.test resolves to 10.0.0.1, a private address"):
        production.check_url("http://mixed.test/v1")
    # `localhost` through the system resolver
    with pytest.raises(OutboundPolicyError, match="localhost resolves to .*loopback"):
        PRODUCTION.check_url("http://localhost:8000/v1")
    # numeric forms the C library reads as 169.254.169.254 and 127.0.0.1
    for url in ("http://2852039166/", "http://0xa9.0xfe.0xa9.0xfe/", "http://169.254.43518/"):
        with pytest.raises(OutboundPolicyError, match="169.254.169.254 is a link-local"):
            OutboundPolicy().check_url(url)
    with pytest.raises(OutboundPolicyError, match="127.0.0.1 is a loopback"):
        PRODUCTION.check_url("http://0x7f.1/")


@pytest.mark.parametrize(
    "url",
    ["http://localhost@169.254.169.254/", "http://user:secret@api.example.com/v1", "https://@api.example.com/v1",
     METADATA_URL, "http://[fe80::1]:8000/v1", "http://[fd00:ec2::254]/", "http://2852039166/v1",
     "http://100.100.100.200/latest", "http://0.0.0.0:8000/v1"],
)
def test_userinfo_and_never_allowed_literal_hosts_are_refused_by_the_spec(url):
    with pytest.raises(OutboundPolicyError):
        check_url_form(url)
    for kind, extra in (("openai", {"model": "m"}), ("dify", {})):
        with pytest.raises(SpecError) as info:
            parse_spec({"models": [{"kind": kind, "name": "x", "base_url": url, **extra}],
                        "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}]})
        (problem,) = info.value.problems
        assert problem.startswith(f"models.0.{kind}.base_url: ") and "refused by the outbound policy" in problem
    if "@" in url:
        assert "user name or password" in problem


def test_static_checks_leave_names_and_allowed_literals_to_connect_time():
    for url in ("http://127.0.0.1:8000/v1", "http://10.0.0.5/v1", "https://api.example.com/v1", "http://vllm:8000/v1"):
        check_url_form(url)  # no DNS here, and the server's loopback/private rules apply when connecting


def test_the_policy_travels_as_json_and_a_broken_value_is_an_error():
    assert OutboundPolicy.from_env({POLICY_ENV: PRODUCTION.to_env()}) == PRODUCTION
    assert OutboundPolicy.from_env({}) == OutboundPolicy()  # the engine's default
    for broken in ("{", '{"allow_loopback": true}', '{"allow_loopback": 1, "allow_private": 0, "allow_networks": ["x"]}'):
        with pytest.raises(ValueError, match=POLICY_ENV):
            OutboundPolicy.from_env({POLICY_ENV: broken})
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP network"):
        OutboundPolicy.build(allow_loopback=False, allow_private=False, allow_networks=["10.0.0.0/33"])


# ---- enforcement when connecting ------------------------------------------------------------------
def test_a_redirect_to_the_metadata_address_is_refused_before_connecting(redirect_server, connects):
    backend = RecordingBackend()
    with httpx.Client(transport=GuardedTransport(OutboundPolicy(), inner=backend), follow_redirects=True) as client:
        with pytest.raises(OutboundPolicyError, match="169.254.169.254 is a link-local"):
            client.post(redirect_server.url + "/chat/completions", json={})
    assert redirect_server.hits == 1
    assert backend.targets == [("127.0.0.1", redirect_server.port)]
    assert connects == [("127.0.0.1", redirect_server.port)]  # no socket ever opened towards 169.254.169.254


def test_the_address_checked_is_the_address_connected_to(redirect_server, connects):
    # Names are resolved once, by the policy, at connect time; the connection goes to the checked address.
    resolve = resolver_of({"model.test": ["127.0.0.1"], "rebound.test": ["169.254.169.254"]})
    backend = RecordingBackend()
    transport = GuardedTransport(OutboundPolicy(resolver=resolve), inner=backend)
    with httpx.Client(transport=transport) as client:
        response = client.get(f"http://model.test:{redirect_server.port}/v1/models")
        assert response.status_code == 302 and response.request.headers["host"] == f"model.test:{redirect_server.port}"
        with pytest.raises(OutboundPolicyError, match="rebound.test resolves to 169.254.169.254"):
            client.get(f"http://rebound.test:{redirect_server.port}/v1/models")
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.test"):
            client.get("http://nowhere.test/v1")
    assert backend.targets == [("127.0.0.1", redirect_server.port)]
    assert connects == [("127.0.0.1", redirect_server.port)]


def test_a_refused_loopback_is_not_connected(redirect_server, connects):
    with guarded_client(PRODUCTION) as client, pytest.raises(OutboundPolicyError, match="loopback"):
        client.get(redirect_server.url)
    assert redirect_server.hits == 0 and connects == []


# ---- the OpenCompass-side model classes -------------------------------------------------------------
META = {"round": [{"role": "HUMAN", "api_role": "HUMAN"}, {"role": "BOT", "api_role": "BOT", "generate": True}]}


def test_openai_sdk_model_obeys_the_policy_in_its_environment(monkeypatch, redirect_server, connects):
    from aieval_engine.oc_ext import SecretKeyOpenAISDK

    monkeypatch.setenv(POLICY_ENV, PRODUCTION.to_env())
    with pytest.raises(OutboundPolicyError, match="127.0.0.1 is a loopback"):
        SecretKeyOpenAISDK(path="m", openai_api_base=redirect_server.url, meta_template=META)
    monkeypatch.setenv(POLICY_ENV, OutboundPolicy().to_env())
    with pytest.raises(OutboundPolicyError, match="link-local"):
        SecretKeyOpenAISDK(path="m", openai_api_base="http://169.254.169.254/v1", meta_template=META)
    assert connects == []

    model = SecretKeyOpenAISDK(path="m", openai_api_base=redirect_server.url, meta_template=META)
    assert model.outbound_policy == OutboundPolicy()
    client = model.openai_client.with_options(max_retries=0)
    # a redirect, followed: the next hop is checked (OpenAISDK._generate logs the error and retries)
    with pytest.raises(OutboundPolicyError, match="169.254.169.254 is a link-local"):
        client.get("/models", cast_to=object, options={"follow_redirects": True})
    assert redirect_server.hits == 1 and connects == [("127.0.0.1", redirect_server.port)]


def test_dify_model_obeys_the_policy_in_its_environment(monkeypatch, connects):
    from fake_dify import FakeDify

    from aieval_engine.oc_ext import DifyChatModel

    with FakeDify({"Capital of Japan?": "Tokyo"}) as fake:
        monkeypatch.setenv(POLICY_ENV, PRODUCTION.to_env())
        with pytest.raises(OutboundPolicyError, match="127.0.0.1 is a loopback"):
            DifyChatModel(base_url=fake.base_url, meta_template=META)
        monkeypatch.setenv(POLICY_ENV, OutboundPolicy.build(allow_loopback=False, allow_private=False,
                                                            allow_networks=["127.0.0.1/32"]).to_env())
        model = DifyChatModel(base_url=fake.base_url, meta_template=META, retry=0)
        monkeypatch.delenv("AIEVAL_API_KEY_0", raising=False)
        model._key = fake.api_key
        assert model.generate(["Capital of Japan?"]) == ["Tokyo"]
        # the same client refuses what the policy does not list (127.0.0.2 is loopback, not listed)
        other = fake.base_url.replace("127.0.0.1", "127.0.0.2")
        model.base_url = other
        with pytest.raises(RuntimeError, match="refused by the outbound policy: 127.0.0.2 is a loopback"):
            model.generate(["Capital of Japan?"])
    assert all(host == "127.0.0.1" for host, _ in connects) and len(fake.requests) == 1
