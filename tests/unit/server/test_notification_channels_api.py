"""Notification channels through the API (in-process server on SQLite, sign-in off): create, list, edit, delete, the
test button against a receiver on loopback, the delivery log, and the refusals (422 with a sentence). The URL and
the secret are stored encrypted and never come back."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest
from webhook_receiver import WebhookReceiver

A = "/api/v1"
SECRET = "whsec-very-secret-value-123"


@pytest.fixture
def receiver():
    receiver = WebhookReceiver([(200, "thanks")])
    yield receiver
    receiver.close()


def create(client, **body):
    response = client.post(f"{A}/notification-channels", json={"name": "ci hook", "kind": "webhook", **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_channel_is_saved_with_its_secret_and_url_hidden(client, receiver, settings):
    channel = create(client, url=receiver.url("/hook?token=abcdefghijklmnop"), secret=SECRET,
                     events=["evaluation_failed", "gate_failed", "gate_failed"])
    assert channel["secret_set"] is True
    assert channel["events"] == ["evaluation_failed", "gate_failed"]
    assert channel["url_hint"] == f"http://127.0.0.1:{receiver.port}/…mnop"
    listed = client.get(f"{A}/notification-channels")
    shown = client.get(f"{A}/notification-channels/{channel['id']}")
    for response in (listed, shown):
        assert response.status_code == 200
        assert SECRET not in response.text and "abcdefghijkl" not in response.text
    # at rest: encrypted, not the plain values
    database = b"".join(path.read_bytes() for path in settings.data_dir.glob("aieval.db*"))  # with the WAL
    assert SECRET.encode() not in database and b"abcdefghijkl" not in database


def test_the_kinds_say_which_take_a_secret_as_creating_one_does(client, receiver):
    """The form offers a secret field by this answer: it must agree with what creating a channel accepts."""
    kinds = client.get(f"{A}/notification-channels/kinds")
    assert kinds.status_code == 200, kinds.text
    signed = {entry["kind"]: entry["signed"] for entry in kinds.json()}
    assert set(signed) == {"webhook", "feishu", "dingtalk", "wecom", "slack"}
    for kind, takes_secret in signed.items():
        response = client.post(f"{A}/notification-channels", json={
            "name": f"{kind} hook", "kind": kind, "url": receiver.url("/hook"), "secret": SECRET})
        assert response.status_code == (201 if takes_secret else 422), (kind, response.text)
    assert signed["webhook"] and not signed["slack"]


def test_the_test_button_sends_a_signed_message_and_reports_the_answer(client, receiver):
    channel = create(client, url=receiver.url(), secret=SECRET)
    result = client.post(f"{A}/notification-channels/{channel['id']}/test")
    assert result.status_code == 200, result.text
    answer = result.json()
    assert answer["ok"] is True and answer["status_code"] == 200 and answer["response"] == "thanks"
    (got,) = receiver.received
    expected = hmac.new(SECRET.encode(), got.headers["x-aieval-timestamp"].encode() + b"." + got.body,
                        hashlib.sha256).hexdigest()
    assert got.headers["x-aieval-signature"] == f"sha256={expected}"
    assert got.headers["x-aieval-event"] == "test"
    assert json.loads(got.body)["event"] == "test"
    log = client.get(f"{A}/notification-deliveries").json()
    assert [(d["id"], d["event"], d["status"], d["attempts"], d["response_status"]) for d in log] == [
        (answer["delivery_id"], "test", "delivered", 1, 200)]
    assert SECRET not in result.text


def test_a_refusing_receiver_is_reported_with_its_answer(client, caplog):
    caplog.set_level(logging.DEBUG)
    refusing = WebhookReceiver([(403, '{"errcode": 310000, "errmsg": "sign not match"}')])
    try:
        channel = create(client, kind="dingtalk", url=refusing.url("/robot/send?access_token=tok-0123456789abcdef"),
                         secret=SECRET)
        answer = client.post(f"{A}/notification-channels/{channel['id']}/test").json()
    finally:
        refusing.close()
    assert answer["ok"] is False and answer["status_code"] == 403
    assert "sign not match" in answer["error"]
    (got,) = refusing.received
    assert "timestamp=" in got.path and "sign=" in got.path  # DingTalk's signature rides in the query
    assert "tok-0123456789abcdef" not in json.dumps(answer)  # the robot's token is part of its secret URL
    assert "tok-0123456789abcdef" not in caplog.text and SECRET not in caplog.text  # httpx logs URLs at INFO
    (delivery,) = client.get(f"{A}/notification-deliveries", params={"channel_id": channel["id"]}).json()
    assert delivery["status"] == "failed" and delivery["attempts"] == 1


def test_an_unreachable_receiver_is_reported_not_raised(client):
    channel = create(client, url="http://127.0.0.1:9/hook")
    answer = client.post(f"{A}/notification-channels/{channel['id']}/test").json()
    assert answer["ok"] is False and answer["status_code"] is None
    assert "tried http://127.0.0.1:9/…" in answer["error"]


def test_editing_keeps_what_is_not_sent_and_can_clear_the_secret(client, receiver):
    channel = create(client, url=receiver.url(), secret=SECRET)
    renamed = client.patch(f"{A}/notification-channels/{channel['id']}", json={"name": "renamed", "enabled": False})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["secret_set"] is True and renamed.json()["enabled"] is False
    assert renamed.json()["url_hint"] == channel["url_hint"]
    cleared = client.patch(f"{A}/notification-channels/{channel['id']}", json={"clear_secret": True})
    assert cleared.json()["secret_set"] is False
    client.post(f"{A}/notification-channels/{channel['id']}/test")
    assert "x-aieval-signature" not in receiver.received[-1].headers  # unsigned without a secret
    to_slack = client.patch(f"{A}/notification-channels/{channel['id']}", json={"kind": "slack"})
    assert to_slack.status_code == 200 and to_slack.json()["kind"] == "slack"
    assert client.delete(f"{A}/notification-channels/{channel['id']}").status_code == 204
    assert client.get(f"{A}/notification-channels/{channel['id']}").status_code == 404
    assert client.get(f"{A}/notification-deliveries").json() == []  # the log went with the channel


@pytest.mark.parametrize(("body", "words"), [
    ({"kind": "webhook", "url": "ftp://example.com/x"}, "http:// or https://"),
    ({"kind": "webhook", "url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
    ({"kind": "webhook", "url": "https://user:pw@example.com/x"}, "user name or password"),
    ({"kind": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k", "secret": "s"},
     "not signed"),
])
def test_bad_channels_are_refused_with_a_reason(client, body, words):
    response = client.post(f"{A}/notification-channels", json={"name": "bad", **body})
    assert response.status_code == 422, response.text
    assert words in json.dumps(response.json())
    assert client.get(f"{A}/notification-channels").json() == []


@pytest.mark.parametrize("body", [
    {"name": "x", "kind": "telegram", "url": "https://example.com/x"},
    {"name": "x", "kind": "webhook", "url": "https://example.com/x", "events": ["test"]},
    {"name": "x", "kind": "webhook", "url": "https://example.com/x", "events": []},
    {"name": "x", "kind": "webhook", "url": "https://example.com/x", "events": ["evaluation_started"]},
])
def test_unknown_kinds_and_events_are_refused(client, body):
    response = client.post(f"{A}/notification-channels", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
