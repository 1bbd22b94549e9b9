"""Dify chat apps: the spec, the generated config (hostile text stays inert data), the one request/answer
function shared with the server, and the OpenCompass model class, against a real local HTTP server that
speaks Dify's blocking chat-messages API (tests/fake_dify.py)."""

from __future__ import annotations

import ast
import json
import socket
import time

import pytest
from fake_dify import FakeDify
from test_config_builder import HOSTILE, HOSTILE_IDS, QA, assert_inert, assignments, data_file

from aieval_engine.config_builder import REFERENCES, build_config
from aieval_engine.dify import (
    EVAL_USER,
    DifyError,
    chat_message_request,
    send_chat_message,
)
from aieval_engine.spec import DifyModelSpec, EvalSpec, SpecError, parse_spec

DIFY = {"kind": "dify", "name": "my app", "base_url": "http://127.0.0.1:5001/v1"}
OPENAI = {"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}
CUSTOM = {"kind": "custom", "name": "qa", "path": "/data/qa.jsonl"}
APP_KEY = "app-DIFY-SECRET-do-not-leak-5c1e"


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


def spec_of(*models, datasets=None) -> dict:
    return {"models": list(models), "datasets": datasets or [CUSTOM]}


# ---- spec ----------------------------------------------------------------------------------------


def test_valid_dify_spec_defaults_and_normalises():
    (model,) = parse_spec(spec_of({**DIFY, "base_url": "https://api.dify.ai/v1///"})).models
    assert isinstance(model, DifyModelSpec) and model.kind == "dify"
    assert model.base_url == "https://api.dify.ai/v1/"
    # unset concurrency and rate: the config gives OpenCompass a modest fixed batch and no rate cap (config_builder)
    assert (model.concurrency, model.query_per_second, model.timeout, model.retries) == (None, None, 120, 2)
    assert model.inputs == {} and model.api_key is None and model.api_key_env is None


@pytest.mark.parametrize(
    "url",
    ["ftp://h.example/v1", "http:///v1", "not a url", "http://my host/v1", "http://host/v1\nX-Injected: 1",
     "https://api.dify.ai/v1?user=x", "https://api.dify.ai/v1#x", "http://host/v1\x00"],
)
def test_base_url_follows_exactly_the_openai_rules(url):
    (dify_problem,) = problems_of(spec_of({**DIFY, "base_url": url}))
    (openai_problem,) = problems_of(spec_of({**OPENAI, "base_url": url}))
    assert dify_problem.startswith("models.0.dify.base_url: ")
    assert dify_problem.removeprefix("models.0.dify.") == openai_problem.removeprefix("models.0.openai.")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("base_url", None, "models.0.dify.base_url: Input should be a valid string"),
        ("api_key_env", "MY-KEY", "models.0.dify.api_key_env: must be an environment variable name"),
        ("timeout", 0, "models.0.dify.timeout: Input should be greater than or equal to 1"),
        ("retries", 11, "models.0.dify.retries: Input should be less than or equal to 10"),
        ("query_per_second", 0, "models.0.dify.query_per_second: Input should be greater than or equal to 1"),
        ("concurrency", 4097, "models.0.dify.concurrency: Input should be less than or equal to 4096"),
        ("name", "a\nb", "models.0.dify.name: Value error, must not contain control characters"),
        ("model", "gpt", "models.0.dify.model: Extra inputs are not permitted"),
        ("temperature", 0.5, "models.0.dify.temperature: Extra inputs are not permitted"),
        ("inputs", {"1st": "x"}, "models.0.dify.inputs: '1st' is not a Dify variable name"),
        ("inputs", {"a b": "x"}, "models.0.dify.inputs: 'a b' is not a Dify variable name"),
        ("inputs", {"a\nb": "x"}, "is not a Dify variable name"),
        ("inputs", {"x": 3}, "models.0.dify.inputs.x: Input should be a valid string"),
        ("inputs", {"x": "y" * 10_001}, "models.0.dify.inputs.x: String should have at most 10000 characters"),
        ("inputs", {f"v{i}": "" for i in range(65)}, "models.0.dify.inputs: Dictionary should have at most 64 items"),
        ("inputs", ["x"], "models.0.dify.inputs: Input should be a valid dictionary"),
    ],
)
def test_bad_dify_settings_name_their_field(field, value, expected):
    problems = problems_of(spec_of({**DIFY, field: value}))
    assert len(problems) == 1 and expected.replace("Value error, ", "") in problems[0], problems


def test_missing_base_url_names_the_field():
    assert problems_of(spec_of({"kind": "dify", "name": "x"})) == ["models.0.dify.base_url: Field required"]


def test_app_key_is_held_like_an_openai_key_and_never_dumped():
    spec = parse_spec(spec_of({**DIFY, "api_key": APP_KEY, "inputs": {"lang": "en"}}))
    model = spec.models[0]
    assert model.resolved_api_key({}) == APP_KEY
    for text in (json.dumps(spec.public_dict()), spec.model_dump_json(), repr(spec), str(spec)):
        assert APP_KEY not in text
    assert "api_key" not in spec.public_dict()["models"][0]
    again = EvalSpec.model_validate(spec.public_dict())  # a public dump is itself a valid spec (without the key)
    assert again.models[0].api_key is None and again.models[0].inputs == {"lang": "en"}
    from_env = DifyModelSpec(**{**DIFY, "api_key_env": "DIFY_KEY"})
    assert from_env.resolved_api_key({"DIFY_KEY": "env"}) == "env" and from_env.resolved_api_key({}) is None
    both = DifyModelSpec(**{**DIFY, "api_key_env": "DIFY_KEY", "api_key": "mem"})
    assert both.resolved_api_key({"DIFY_KEY": "env"}) == "mem"


# ---- config ----------------------------------------------------------------------------------------


def dify_cfg(text: str, index: int = 0) -> dict:
    return assignments(text)["models"][index]


@pytest.mark.parametrize("hostile", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_dify_names_urls_and_inputs_are_inert_data(hostile, tmp_path):
    path = data_file(tmp_path, "qa", QA)
    url = "https://dify.example:8443/v1/a'b\"c{}/%27/" + hostile.replace(" ", "_").replace("#", "_").replace("?", "_")
    try:
        spec = parse_spec({
            "models": [{**DIFY, "name": hostile, "base_url": url, "api_key": APP_KEY,
                        "inputs": {"persona": hostile, "x_" + str(len(hostile)): "'''" + hostile}}],
            "datasets": [{"kind": "custom", "name": hostile, "path": str(path)}],
        })
    except SpecError as exc:  # some hostile texts are not valid URLs: refused, never rendered
        assert all(p.startswith("models.0.dify.base_url:") for p in exc.problems), exc.problems
        spec = parse_spec({
            "models": [{**DIFY, "name": hostile, "api_key": APP_KEY, "inputs": {"persona": hostile}}],
            "datasets": [{"kind": "custom", "name": hostile, "path": str(path)}],
        })
    built = build_config(spec, tmp_path / "job")
    assert_inert(built.text, contains=[hostile, spec.models[0].base_url])
    cfg = dify_cfg(built.text)
    model = spec.models[0]
    assert cfg["type"] == "<DifyChatModel>"
    assert cfg["base_url"] == cfg["path"] == model.base_url  # byte for byte
    assert dict(cfg["inputs"]) == model.inputs and dict(cfg["inputs"])["persona"] == hostile
    assert cfg["key_env"] == "AIEVAL_API_KEY_0" and built.secret_env == {"AIEVAL_API_KEY_0": APP_KEY}
    assert APP_KEY not in built.text and APP_KEY not in built.path.read_text(encoding="utf-8")
    assert built.models == {cfg["abbr"]: hostile}
    assert REFERENCES["DifyChatModel"] in built.text.splitlines()


def test_dify_model_settings_in_the_config(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec({
        "models": [{**DIFY, "concurrency": 3, "query_per_second": 5, "timeout": 30, "retries": 4,
                    "api_key_env": "MY_DIFY_KEY"}, OPENAI],
        "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}],
        "params": {"max_out_len": 64},
    })
    built = build_config(spec, tmp_path / "job", {"MY_DIFY_KEY": APP_KEY})
    assert built.secret_env == {"AIEVAL_API_KEY_0": APP_KEY}
    assert "MY_DIFY_KEY" not in built.text and APP_KEY not in built.text
    cfg = dify_cfg(built.text)
    assert cfg == {
        "type": "<DifyChatModel>", "abbr": "my_app-" + cfg["abbr"].rsplit("-", 1)[1], "path": "http://127.0.0.1:5001/v1/",
        "base_url": "http://127.0.0.1:5001/v1/", "key_env": "AIEVAL_API_KEY_0", "inputs": [],
        "sample_metrics": cfg["abbr"],  # its latency and token records go under its abbr
        "meta_template": {"round": [{"role": "HUMAN", "api_role": "HUMAN"},
                                    {"role": "BOT", "api_role": "BOT", "generate": True}]},
        "query_per_second": 5, "batch_size": 3, "max_workers": 3, "retry": 4, "timeout": 30, "max_out_len": 64,
        "run_cfg": {"num_gpus": 0},
    }
    assert dify_cfg(built.text, 1)["type"] == "<SecretKeyOpenAISDK>"


def test_dify_import_only_when_a_dify_model_is_used(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    built = build_config(parse_spec(spec_of(OPENAI, datasets=[{"kind": "custom", "name": "qa", "path": str(path)}])),
                         tmp_path / "job")
    assert "DifyChatModel" not in built.text


def test_missing_dify_key_variable_is_a_spec_error(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(spec_of({**DIFY, "api_key_env": "ABSENT_DIFY_KEY"},
                              datasets=[{"kind": "custom", "name": "qa", "path": str(path)}]))
    with pytest.raises(SpecError) as info:
        build_config(spec, tmp_path / "job", {})
    assert info.value.problems == ["models[0] (my app): the environment variable ABSENT_DIFY_KEY is not set"]


def test_ppl_with_a_dify_app_is_refused(tmp_path):
    path = data_file(tmp_path, "mcq", [{"question": "q", "A": "x", "B": "y", "answer": "A"}])
    spec = parse_spec(spec_of(DIFY, datasets=[{"kind": "custom", "name": "m", "path": str(path), "infer_method": "ppl"}]))
    with pytest.raises(SpecError) as info:
        build_config(spec, tmp_path / "job")
    (problem,) = info.value.problems
    assert problem.startswith("models (my app): ppl datasets need the log-likelihood") and "Dify" in problem


def test_mmengine_loads_a_hostile_dify_config_without_executing_anything(tmp_path, monkeypatch):
    from mmengine.config import Config

    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "pwned"
    payload = f"'''\"\"\"); __import__('os').system('touch {canary}'); ('"
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(spec_of({**DIFY, "name": payload, "api_key": APP_KEY, "inputs": {"p": payload}},
                              datasets=[{"kind": "custom", "name": "qa", "path": str(path)}]))
    built = build_config(spec, tmp_path / "job")
    cfg = Config.fromfile(str(built.path), format_python_code=False)
    assert not canary.exists()
    (model,) = cfg.models
    assert model["inputs"] == [["p", payload]] and model["key_env"] == "AIEVAL_API_KEY_0"
    assert APP_KEY not in built.path.read_text(encoding="utf-8")


# ---- the request and its answer, over real HTTP ----------------------------------------------------


@pytest.fixture
def fake():
    with FakeDify({"Capital of Japan?": "Tokyo", "法国的首都？": "巴黎"}, api_key=APP_KEY) as server:
        yield server


def test_request_shape():
    url, headers, body = chat_message_request("https://api.dify.ai/v1/", "hi", "k", inputs={"a": "b"})
    assert url == "https://api.dify.ai/v1/chat-messages"
    assert headers == {"Content-Type": "application/json", "Authorization": "Bearer k"}
    assert body == {"inputs": {"a": "b"}, "query": "hi", "response_mode": "blocking", "user": EVAL_USER}
    assert "Authorization" not in chat_message_request("http://h/v1", "hi", None)[1]
    assert chat_message_request("http://h/v1", "hi", None)[0] == "http://h/v1/chat-messages"


def test_answer_conversation_and_message_ids(fake):
    reply = send_chat_message(fake.base_url + "/", "Capital of Japan?", APP_KEY, inputs={"lang": "en"})
    assert reply.answer == "Tokyo" and reply.conversation_id and reply.message_id
    (request,) = fake.requests
    assert request["path"] == "/v1/chat-messages" and request["authorization"] == f"Bearer {APP_KEY}"
    assert request["body"] == {"inputs": {"lang": "en"}, "query": "Capital of Japan?", "response_mode": "blocking",
                               "user": EVAL_USER}
    assert send_chat_message(fake.base_url, "法国的首都？", APP_KEY).answer == "巴黎"  # UTF-8 both ways
    assert send_chat_message(fake.base_url, "unknown", APP_KEY).answer == "I do not know."


def test_wrong_key_is_a_clear_final_error(fake):
    with pytest.raises(DifyError) as info:
        send_chat_message(fake.base_url, "Capital of Japan?", "app-wrong")
    assert not info.value.retryable and info.value.status == 401
    assert str(info.value) == f"HTTP 401 from {fake.base_url}/chat-messages: unauthorized: Access token is invalid"


@pytest.mark.parametrize(
    "status, body, retryable, fragment",
    [
        (400, {"code": "invalid_param", "message": "name is required in input form", "status": 400}, False,
         "HTTP 400 from {url}: invalid_param: name is required in input form"),
        (404, {"code": "app_unavailable", "message": "App unavailable", "status": 404}, False, "app_unavailable"),
        (429, {"code": "too_many_requests", "message": "slow down", "status": 429}, True, "HTTP 429"),
        (500, "<html>Internal Server Error</html>", True, "HTTP 500 from {url}: <html>Internal Server Error</html>"),
        (503, {"message": "upstream busy"}, True, "HTTP 503 from {url}: upstream busy"),
        (200, "<html>a login page</html>", False, "unexpected response from {url} (no 'answer'"),
        (200, {"event": "message", "answer": None}, False, "unexpected response"),
    ],
)
def test_dify_errors_are_readable_and_classified(fake, status, body, retryable, fragment):
    fake.fail_next.append((status, body))
    with pytest.raises(DifyError) as info:
        send_chat_message(fake.base_url, "Capital of Japan?", APP_KEY)
    assert info.value.retryable is retryable
    assert fragment.format(url=fake.base_url + "/chat-messages") in str(info.value)


def test_the_key_is_redacted_even_when_the_server_echoes_it(fake):
    fake.fail_next.append((400, {"code": "bad", "message": f"key {APP_KEY} is not allowed", "status": 400}))
    with pytest.raises(DifyError) as info:
        send_chat_message(fake.base_url, "q", APP_KEY)
    assert APP_KEY not in str(info.value) and "key **** is not allowed" in str(info.value)


def test_retry_after_is_read():
    # A 429 with Retry-After: the header travels through httpx into the error.
    import httpx

    from aieval_engine.dify import parse_answer

    response = httpx.Response(429, headers={"Retry-After": "7"}, json={"code": "rate", "message": "m", "status": 429})
    with pytest.raises(DifyError) as info:
        parse_answer(response, "http://h/v1/chat-messages")
    assert info.value.retryable and info.value.retry_after == 7.0


def test_network_failures_are_retryable(unused_port):
    with pytest.raises(DifyError) as info:
        send_chat_message(f"http://127.0.0.1:{unused_port}/v1", "q", APP_KEY, timeout=5)
    assert info.value.retryable and "cannot connect to" in str(info.value) and APP_KEY not in str(info.value)

    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        started = time.monotonic()
        with pytest.raises(DifyError) as info:
            send_chat_message(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "q", APP_KEY, timeout=0.5)
        assert time.monotonic() - started < 5
        assert info.value.retryable and "timed out after 0.5 s" in str(info.value)
    finally:
        silent.close()


# ---- the OpenCompass model class ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def oc_ext():
    from aieval_engine import oc_ext  # imports OpenCompass: seconds, once for the module

    return oc_ext


def make_model(oc_ext, fake, monkeypatch, **kwargs):
    monkeypatch.setenv("AIEVAL_API_KEY_5", APP_KEY)
    model = oc_ext.DifyChatModel(base_url=fake.base_url + "/", key_env="AIEVAL_API_KEY_5", query_per_second=100,
                                 meta_template=None, **kwargs)
    model.retry_backoff_s = 0.01
    return model


def test_dify_model_is_registered_and_counts_tokens_offline(oc_ext):
    from opencompass.registry import MODELS

    assert MODELS.get("DifyChatModel") is oc_ext.DifyChatModel
    model = oc_ext.DifyChatModel(base_url="http://127.0.0.1:9/v1/")
    assert model.get_token_len("巴黎 abcd") == 4 and model.path == "http://127.0.0.1:9/v1/"
    assert model._key is None


def test_prompt_to_query(oc_ext):
    assert oc_ext.prompt_to_query("plain") == "plain"
    assert oc_ext.prompt_to_query([{"role": "HUMAN", "prompt": "Capital of Japan?"}]) == "Capital of Japan?"
    transcript = oc_ext.prompt_to_query([
        {"role": "SYSTEM", "prompt": "Be brief."}, {"role": "HUMAN", "prompt": "1+1?"},
        {"role": "BOT", "prompt": "2"}, {"role": "HUMAN", "prompt": "2+2?"},
    ])
    assert transcript == "System: Be brief.\n\nUser: 1+1?\n\nAssistant: 2\n\nUser: 2+2?"


def test_dify_model_answers_every_prompt_in_order(oc_ext, fake, monkeypatch):
    from opencompass.utils.prompt import PromptList

    model = make_model(oc_ext, fake, monkeypatch, max_workers=4, inputs={"lang": "en"})
    prompts = [PromptList([{"role": "HUMAN", "prompt": "Capital of Japan?"}]), "法国的首都？", "other"] * 3
    assert model.generate(prompts, max_out_len=16) == ["Tokyo", "巴黎", "I do not know."] * 3
    assert model.generate(["Capital of Japan?"], max_out_len=16) == ["Tokyo"]
    assert len(fake.requests) == 10
    assert {r["authorization"] for r in fake.requests} == {f"Bearer {APP_KEY}"}
    assert all(r["body"]["inputs"] == {"lang": "en"} and r["body"]["user"] == EVAL_USER for r in fake.requests)


def test_dify_model_retries_rate_limits_and_server_errors(oc_ext, fake, monkeypatch):
    model = make_model(oc_ext, fake, monkeypatch, retry=2)
    fake.fail_next += [(429, {"code": "too_many_requests", "message": "slow down", "status": 429}),
                       (502, "<html>Bad Gateway</html>")]
    assert model.generate(["Capital of Japan?"], max_out_len=8) == ["Tokyo"]
    assert len(fake.requests) == 3


def test_dify_model_gives_up_after_its_retries_with_the_cause(oc_ext, fake, monkeypatch):
    model = make_model(oc_ext, fake, monkeypatch, retry=1)
    fake.fail_next += [(503, {"message": "busy"})] * 2
    with pytest.raises(RuntimeError, match=r"Calling Dify failed after 2 attempts: HTTP 503 from .*: busy"):
        model.generate(["Capital of Japan?"], max_out_len=8)
    assert len(fake.requests) == 2


def test_dify_model_stops_at_once_on_a_bad_key(oc_ext, fake, monkeypatch):
    model = make_model(oc_ext, fake, monkeypatch, retry=5)
    monkeypatch.setattr(model, "_key", "app-wrong")
    with pytest.raises(RuntimeError) as info:
        model.generate(["Capital of Japan?"], max_out_len=8)
    assert str(info.value) == (
        f"Calling Dify failed: HTTP 401 from {fake.base_url}/chat-messages: unauthorized: Access token is invalid")
    assert len(fake.requests) == 1


def test_config_uses_only_known_bare_names():
    # The new reference is importable exactly as written into configs.
    line = REFERENCES["DifyChatModel"]
    tree = ast.parse(line)
    assert isinstance(tree.body[0], ast.ImportFrom) and tree.body[0].module == "aieval_engine.oc_ext"
