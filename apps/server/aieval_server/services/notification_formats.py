"""What a notification looks like on the wire for each kind of channel, how it is signed, and how a receiver's answer
is read. Pure functions of the message: no database, no network (services/notifications.py sends).

The message (`payload`, built once when the event happens and stored with the delivery) is
{"event": ..., "evaluation": {"id", "name", "status", "url", "error", "finished_at", "scores", "scores_total"} or
None for a test message, "details": what the caller of notify() added (a gate's verdict) or None}.

- webhook: that message as JSON plus `delivery_id` and `sent_at`; headers X-AIEval-Event, X-AIEval-Delivery,
  X-AIEval-Timestamp (Unix seconds) and, with a secret, X-AIEval-Signature: "sha256=" + hex HMAC-SHA256 of
  `<timestamp>.<body>` keyed with the secret (the receiver recomputes it over the raw body; docs/OPERATIONS.md).
- feishu (Feishu / Lark custom bot): msg_type "post"; with a secret, `timestamp` (seconds) and `sign` in the body:
  base64 of HMAC-SHA256 keyed with "<timestamp>\\n<secret>" over an empty message (their documented algorithm).
- dingtalk (custom robot): msgtype "markdown"; with a secret, `timestamp` (milliseconds) and `sign` in the query:
  base64 of HMAC-SHA256 keyed with the secret over "<timestamp>\\n<secret>", URL-encoded.
- wecom (group robot): msgtype "markdown" (content at most 4096 bytes); no signature, the key is in the URL.
- slack (incoming webhook): {"text": a plain fallback, "blocks": [...]}; no signature, the URL is the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus

from ..enums import NotificationEvent, NotificationKind

EVENT_HEADER = "X-AIEval-Event"
DELIVERY_HEADER = "X-AIEval-Delivery"
TIMESTAMP_HEADER = "X-AIEval-Timestamp"
SIGNATURE_HEADER = "X-AIEval-Signature"
USER_AGENT = "aieval-notifications/1"
WECOM_MAX_BYTES = 4096  # their limit for a markdown message's content
SCORES_SHOWN_IN_CHAT = 10  # a chat message stays readable; the webhook's JSON carries every score of the summary

TITLES = {
    NotificationEvent.evaluation_succeeded: "Evaluation succeeded",
    NotificationEvent.evaluation_failed: "Evaluation failed",
    NotificationEvent.gate_failed: "Gate failed",
    NotificationEvent.test: "Test message",
}
# Error codes chat services answer with HTTP 200 that mean "sending too fast": worth trying again later.
RATE_LIMITED_CODES = {NotificationKind.feishu: {9499, 11232}, NotificationKind.dingtalk: {130101},
                      NotificationKind.wecom: {45009}}


@dataclass(frozen=True)
class OutgoingRequest:
    """One POST: where to, the exact bytes (what a signature covers) and the headers."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Verdict:
    """How a receiver's answer is taken: delivered, or not and whether trying again could help."""

    ok: bool
    retryable: bool
    error: str | None = None


# ---- signatures (each one line, checked against an independent computation in the unit tests) -------------------
def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def feishu_sign(secret: str, timestamp: str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """The signature before URL encoding (the query carries it URL-encoded)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# ---- the human text ---------------------------------------------------------------------------------------------
def title(payload: dict[str, Any]) -> str:
    heading = TITLES[NotificationEvent(payload["event"])]
    evaluation = payload.get("evaluation")
    return f"{heading}: {evaluation['name']} (#{evaluation['id']})" if evaluation else f"{heading} from AI Eval"


def lines(payload: dict[str, Any]) -> list[str]:
    """The message's body as plain lines (no markup): what happened, the scores, the error, the gate's verdict."""
    evaluation = payload.get("evaluation")
    if evaluation is None:
        channel = (payload.get("details") or {}).get("channel")
        return [f"Channel {channel!r} works: this is how AI Eval notifications will arrive."]
    out = [f"Status: {evaluation['status']}"]
    details = payload.get("details") or {}
    if details.get("summary"):
        out.append(str(details["summary"]))
    for score in evaluation.get("scores", [])[:SCORES_SHOWN_IN_CHAT]:
        out.append(f"{score['model']} · {score['dataset']} · {score['metric']}: {score['value']:g}")
    hidden = evaluation.get("scores_total", 0) - min(len(evaluation.get("scores", [])), SCORES_SHOWN_IN_CHAT)
    if hidden > 0:
        out.append(f"… and {hidden} more score(s)")
    if evaluation.get("error"):
        out.append(f"Error: {evaluation['error']}")
    return out


def link(payload: dict[str, Any]) -> str | None:
    evaluation = payload.get("evaluation")
    return evaluation.get("url") if evaluation else None


def markdown(payload: dict[str, Any]) -> str:
    """DingTalk's and WeCom's markdown: a heading, one paragraph per line, the link."""
    parts = [f"### {title(payload)}", *[f"> {line}" if i == 0 else line for i, line in enumerate(lines(payload))]]
    if link(payload):
        parts.append(f"[Open in AI Eval]({link(payload)})")
    return "\n\n".join(parts)


def _slack_escape(text: str) -> str:
    # Slack reads &, < and > as markup (<!channel> would ping everyone).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


# ---- bodies per kind --------------------------------------------------------------------------------------------
def webhook_body(payload: dict[str, Any], delivery_id: int | None, sent_at: datetime) -> dict[str, Any]:
    return {"event": payload["event"], "delivery_id": delivery_id,
            "sent_at": sent_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "evaluation": payload.get("evaluation"), "details": payload.get("details")}


def feishu_body(payload: dict[str, Any]) -> dict[str, Any]:
    content = [[{"tag": "text", "text": line}] for line in lines(payload)]
    if link(payload):
        content.append([{"tag": "a", "text": "Open in AI Eval", "href": link(payload)}])
    return {"msg_type": "post", "content": {"post": {"zh_cn": {"title": title(payload), "content": content}}}}


def dingtalk_body(payload: dict[str, Any]) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"title": title(payload), "text": markdown(payload)}}


def wecom_body(payload: dict[str, Any]) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"content": _truncate_utf8(markdown(payload), WECOM_MAX_BYTES)}}


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    text = "\n".join(_slack_escape(line) for line in lines(payload))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(payload)[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
    ]
    if link(payload):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link(payload)}|Open in AI Eval>"}})
    return {"text": title(payload), "blocks": blocks}


def build_request(kind: str, url: str, secret: str | None, payload: dict[str, Any], delivery_id: int | None,
                  now: float) -> OutgoingRequest:
    """The request for one attempt at `now` (Unix time): signatures carry the attempt's own timestamp, which
    receivers check against their clock (Feishu and DingTalk: within an hour)."""
    kind = NotificationKind(kind)
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    seconds = str(int(now))
    if kind is NotificationKind.webhook:
        sent_at = datetime.fromtimestamp(now, timezone.utc)
        body = _json(webhook_body(payload, delivery_id, sent_at))
        headers.update({EVENT_HEADER: payload["event"], TIMESTAMP_HEADER: seconds})
        if delivery_id is not None:
            headers[DELIVERY_HEADER] = str(delivery_id)
        if secret:
            headers[SIGNATURE_HEADER] = webhook_signature(secret, seconds, body)
        return OutgoingRequest(url, body, headers)
    if kind is NotificationKind.feishu:
        message = feishu_body(payload)
        if secret:
            message = {"timestamp": seconds, "sign": feishu_sign(secret, seconds), **message}
        return OutgoingRequest(url, _json(message), headers)
    if kind is NotificationKind.dingtalk:
        if secret:
            millis = str(int(now * 1000))
            url = f"{url}{'&' if '?' in url else '?'}timestamp={millis}&sign={quote_plus(dingtalk_sign(secret, millis))}"
        return OutgoingRequest(url, _json(dingtalk_body(payload)), headers)
    if kind is NotificationKind.wecom:
        return OutgoingRequest(url, _json(wecom_body(payload)), headers)
    return OutgoingRequest(url, _json(slack_body(payload)), headers)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# ---- the receiver's answer --------------------------------------------------------------------------------------
def judge_answer(kind: str, status_code: int, text: str) -> Verdict:
    """Whether the receiver took the message. 5xx, 408, 425 and 429 are worth another attempt; another 4xx or a
    redirect is not (the same request would be refused again). Chat services also answer HTTP 200 with an error
    code in the body (a wrong signature, a keyword missing): that is a refusal too, except their rate limits."""
    kind = NotificationKind(kind)
    excerpt = text.strip()[:300]
    if 300 <= status_code < 400:
        return Verdict(False, False, f"HTTP {status_code}: redirects are not followed; give the final address")
    if status_code >= 500 or status_code in (408, 425, 429):
        return Verdict(False, True, f"HTTP {status_code}: {excerpt}".rstrip(": "))
    if status_code >= 400:
        return Verdict(False, False, f"HTTP {status_code}: {excerpt}".rstrip(": "))
    if kind in (NotificationKind.webhook, NotificationKind.slack):
        return Verdict(True, False)
    try:
        answer = json.loads(text)
    except ValueError:
        return Verdict(True, False)  # no error code to read: HTTP 2xx says it arrived
    if not isinstance(answer, dict):
        return Verdict(True, False)
    code = answer.get("code", answer.get("StatusCode")) if kind is NotificationKind.feishu else answer.get("errcode")
    if code in (None, 0, "0"):
        return Verdict(True, False)
    message = answer.get("msg") or answer.get("errmsg") or answer.get("StatusMessage") or ""
    retryable = isinstance(code, int) and code in RATE_LIMITED_CODES.get(kind, set())
    return Verdict(False, retryable, f"{kind.value} refused the message: code {code} {message}".strip())
