"""What each kind of notification channel receives: body shapes, signatures recomputed independently with hmac
(from each service's documented algorithm, not from our helpers), how receivers' answers are read, the retry
policy, and the URL checks made before a channel is saved."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from aieval_server.enums import NotificationEvent, NotificationKind
from aieval_server.services import notification_formats as formats

NOW = 1_760_000_000.25
SECRET = "SECxyz-signing-secret"
PAYLOAD = {
    "event": "evaluation_failed",
    "evaluation": {"id": 42, "name": "nightly <ckpt> & co", "status": "failed",
                   "url": "https://eval.example.com/evaluations/42", "error": "model endpoint answered 500",
                   "finished_at": "2025-10-09T08:53:20+00:00",
                   "scores": [{"model": "m1", "dataset": "mmlu", "metric": "accuracy", "value": 61.25},
                              {"model": "m1", "dataset": "gsm8k", "metric": "accuracy", "value": 40.0}],
                   "scores_total": 2},
    "details": None,
}


def request(kind: str, secret: str | None = SECRET, url: str = "https://receiver.example/hook", payload=None):
    return formats.build_request(kind, url, secret, payload or PAYLOAD, 7, now=NOW)


def test_the_generic_webhook_is_the_message_as_json_signed_over_timestamp_and_body():
    sent = request("webhook")
    body = json.loads(sent.body)
    assert body == {"event": "evaluation_failed", "delivery_id": 7, "sent_at": "2025-10-09T08:53:20.250000Z",
                    "evaluation": PAYLOAD["evaluation"], "details": None}
    assert sent.headers["X-AIEval-Event"] == "evaluation_failed"
    assert sent.headers["X-AIEval-Delivery"] == "7"
    assert sent.headers["X-AIEval-Timestamp"] == "1760000000"
    expected = hmac.new(SECRET.encode(), b"1760000000." + sent.body, hashlib.sha256).hexdigest()
    assert sent.headers["X-AIEval-Signature"] == f"sha256={expected}"
    assert SECRET not in sent.body.decode() and SECRET not in json.dumps(sent.headers)
    assert "X-AIEval-Signature" not in request("webhook", secret=None).headers  # no secret: unsigned


def test_a_changed_body_no_longer_matches_the_signature():
    sent = request("webhook")
    tampered = sent.body.replace(b"failed", b"succeeded", 1)
    recomputed = hmac.new(SECRET.encode(), b"1760000000." + tampered, hashlib.sha256).hexdigest()
    assert sent.headers["X-AIEval-Signature"] != f"sha256={recomputed}"


def test_feishu_gets_a_post_message_with_timestamp_and_sign_in_the_body():
    body = json.loads(request("feishu").body)
    # Feishu's algorithm: HMAC-SHA256 keyed with "timestamp\nsecret" over an empty message, base64.
    key = f"1760000000\n{SECRET}".encode()
    assert body["timestamp"] == "1760000000"
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["msg_type"] == "post"
    post = body["content"]["post"]["zh_cn"]
    assert post["title"] == "Evaluation failed: nightly <ckpt> & co (#42)"
    texts = [element["text"] for line in post["content"] for element in line]
    assert "Status: failed" in texts and "m1 · mmlu · accuracy: 61.25" in texts
    assert "Error: model endpoint answered 500" in texts
    assert post["content"][-1] == [{"tag": "a", "text": "Open in AI Eval",
                                    "href": "https://eval.example.com/evaluations/42"}]
    assert "sign" not in json.loads(request("feishu", secret=None).body)


def test_dingtalk_gets_markdown_and_the_signature_in_the_query():
    sent = request("dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=abc")
    query = parse_qs(urlsplit(sent.url).query)
    assert query["access_token"] == ["abc"] and query["timestamp"] == ["1760000000250"]
    # DingTalk's algorithm: HMAC-SHA256 keyed with the secret over "timestamp\nsecret", base64, URL-encoded.
    digest = hmac.new(SECRET.encode(), f"1760000000250\n{SECRET}".encode(), hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]  # parse_qs undid the URL encoding
    body = json.loads(sent.body)
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "Evaluation failed: nightly <ckpt> & co (#42)"
    assert body["markdown"]["text"].startswith("### Evaluation failed")
    assert "[Open in AI Eval](https://eval.example.com/evaluations/42)" in body["markdown"]["text"]
    unsigned = request("dingtalk", secret=None, url="https://oapi.dingtalk.com/robot/send?access_token=abc")
    assert unsigned.url == "https://oapi.dingtalk.com/robot/send?access_token=abc"


def test_wecom_gets_markdown_within_its_size_limit():
    body = json.loads(request("wecom", secret=None).body)
    assert body["msgtype"] == "markdown"
    assert "m1 · gsm8k · accuracy: 40" in body["markdown"]["content"]
    many = {**PAYLOAD, "evaluation": {**PAYLOAD["evaluation"], "error": "x" * 10_000}}
    long = json.loads(request("wecom", secret=None, payload=many).body)["markdown"]["content"]
    assert len(long.encode()) <= formats.WECOM_MAX_BYTES


def test_slack_gets_text_and_blocks_with_markup_escaped():
    body = json.loads(request("slack", secret=None).body)
    assert body["text"] == "Evaluation failed: nightly <ckpt> & co (#42)"
    assert [block["type"] for block in body["blocks"]] == ["header", "section", "section"]
    assert body["blocks"][2]["text"]["text"] == "<https://eval.example.com/evaluations/42|Open in AI Eval>"
    summary = body["blocks"][1]["text"]
    assert summary["type"] == "mrkdwn" and "m1 · mmlu · accuracy: 61.25" in summary["text"]


def test_a_test_message_and_a_gate_verdict_read_as_such():
    test = {"event": "test", "evaluation": None, "details": {"channel": "team chat"}}
    assert formats.title(test) == "Test message from AI Eval"
    assert "team chat" in formats.lines(test)[0]
    assert json.loads(request("webhook", payload=test).body)["evaluation"] is None
    gate = {**PAYLOAD, "event": "gate_failed", "details": {"summary": "mmlu dropped by 3.1 points (p=0.01)"}}
    assert formats.title(gate).startswith("Gate failed: ")
    assert "mmlu dropped by 3.1 points (p=0.01)" in formats.lines(gate)
    assert set(formats.TITLES) == set(NotificationEvent)


@pytest.mark.parametrize(("kind", "status", "text", "ok", "retryable"), [
    ("webhook", 204, "", True, False),
    ("webhook", 500, "boom", False, True),
    ("webhook", 429, "slow down", False, True),
    ("webhook", 404, "no such hook", False, False),
    ("webhook", 302, "", False, False),
    ("slack", 200, "ok", True, False),
    ("slack", 400, "invalid_payload", False, False),
    ("feishu", 200, '{"code":0,"msg":"success","data":{}}', True, False),
    ("feishu", 200, '{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}',
     False, False),
    ("feishu", 200, '{"code":9499,"msg":"too many requests"}', False, True),
    ("dingtalk", 200, '{"errcode":0,"errmsg":"ok"}', True, False),
    ("dingtalk", 200, '{"errcode":310000,"errmsg":"sign not match"}', False, False),
    ("wecom", 200, '{"errcode":0,"errmsg":"ok"}', True, False),
    ("wecom", 200, '{"errcode":93000,"errmsg":"invalid webhook url"}', False, False),
])
def test_receivers_answers_are_read_as_delivered_refused_or_worth_another_try(kind, status, text, ok, retryable):
    verdict = formats.judge_answer(kind, status, text)
    assert (verdict.ok, verdict.retryable) == (ok, retryable)
    assert (verdict.error is None) == ok


def test_every_kind_has_a_request():
    for kind in NotificationKind:
        sent = request(kind.value, secret=None)
        assert json.loads(sent.body) and sent.headers["Content-Type"].startswith("application/json")


def test_retries_wait_four_times_longer_each_time_up_to_the_cap():
    from aieval_server.services.notifications import DeliveryRetries

    retries = DeliveryRetries(attempts=5, first_wait_s=2.0, max_wait_s=100.0)
    assert [retries.wait_after(n) for n in (1, 2, 3, 4)] == [2.0, 8.0, 32.0, 100.0]


def test_url_hints_show_where_but_not_the_token():
    from aieval_server.services.notifications import url_hint

    url = "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef0123456789abcdef"
    assert url_hint(url) == "https://oapi.dingtalk.com/…cdef"
    assert "0123456789" not in url_hint(url)
    assert url_hint("http://127.0.0.1:8080/h") == "http://127.0.0.1:8080/…"  # too short to show any of it


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.com/hook", "must be an http:// or https:// address"),
    ("not a url", "must be an http:// or https:// address"),
    ("http://user:pw@example.com/hook", "user name or password"),
    ("http://169.254.169.254/latest", "link-local"),
    ("http://[::ffff:169.254.169.254]/x", "link-local"),
])
def test_urls_the_outbound_policy_refuses_are_refused_before_saving(settings, url, problem):
    from aieval_server.services.notifications import _check_url

    problems = _check_url(settings, url)
    assert len(problems) == 1 and problem in problems[0], problems


def test_loopback_receivers_follow_the_policy_setting(settings):
    from aieval_server.services.notifications import _check_url

    assert _check_url(settings, "http://127.0.0.1:9000/hook") == []
    closed = settings.model_copy(update={"outbound_allow_loopback": False})
    (problem,) = _check_url(closed, "http://127.0.0.1:9000/hook")
    assert "loopback" in problem
