"""Dify chat apps: the one place that knows the request and response shape of Dify's chat-messages API.

Used both by the OpenCompass model class (oc_ext.DifyChatModel, one call per sample) and by the server's
connection test, so the two can never disagree. Imports nothing of OpenCompass.

Request: POST {base_url}chat-messages, `Authorization: Bearer <app key>`,
`{"inputs": {...}, "query": ..., "response_mode": "blocking", "user": ...}` without a conversation_id,
so every query starts a fresh conversation. Response: `{"answer": ..., "conversation_id": ...,
"message_id": ..., ...}`; errors are `{"code": ..., "message": ..., "status": ...}` with a 4xx/5xx status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from .netpolicy import OutboundPolicy, OutboundPolicyError, guarded_client
from .sample_metrics import token_count

# Dify identifies the "end user" of each message; evaluations show up under this name in the app's logs.
EVAL_USER = "aieval"
TEST_USER = "aieval-test"
# Worth retrying: rate limits, server errors and gateways in front of Dify.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DifyError(Exception):
    """A failed chat-messages call: a readable message (never containing the key) and whether trying
    again may help (rate limits, 5xx, network trouble)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class DifyReply:
    answer: str
    conversation_id: str | None
    message_id: str | None
    # the app's own count (metadata.usage), None when it sends none: recorded per sample (sample_metrics.py)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def chat_messages_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/chat-messages"


def chat_message_request(
    base_url: str, query: str, api_key: str | None, *, inputs: dict[str, str] | None = None, user: str = EVAL_USER
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, JSON body) of one blocking chat-messages request."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = {"inputs": dict(inputs or {}), "query": query, "response_mode": "blocking", "user": user}
    return chat_messages_url(base_url), headers, body


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "****") if secret else text


def _error_detail(response: httpx.Response) -> str:
    """Dify's `code: message` when the body is its error JSON, else the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        code = data.get("code")
        return f"{code}: {data['message']}" if isinstance(code, str) and code else data["message"]
    return response.text[:500].strip() or "(empty body)"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def parse_answer(response: httpx.Response, url: str) -> DifyReply:
    """The app's reply from a chat-messages response; DifyError for an HTTP error or a body without `answer`."""
    if response.status_code >= 400:
        raise DifyError(
            f"HTTP {response.status_code} from {url}: {_error_detail(response)}",
            retryable=response.status_code in RETRYABLE_STATUS,
            status=response.status_code,
            retry_after=_retry_after(response),
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("answer"), str):
        raise DifyError(
            f"unexpected response from {url} (no 'answer'; is this a Dify chat app's API?): {response.text[:500]}",
            retryable=False,
            status=response.status_code,
        )
    conversation, message = data.get("conversation_id"), data.get("message_id", data.get("id"))
    metadata = data.get("metadata")
    usage = metadata.get("usage") if isinstance(metadata, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return DifyReply(
        answer=data["answer"],
        conversation_id=conversation if isinstance(conversation, str) else None,
        message_id=message if isinstance(message, str) else None,
        prompt_tokens=token_count(usage.get("prompt_tokens")),
        completion_tokens=token_count(usage.get("completion_tokens")),
    )


def send_chat_message(
    base_url: str,
    query: str,
    api_key: str | None,
    *,
    inputs: dict[str, str] | None = None,
    user: str = EVAL_USER,
    timeout: float = 120,
    client: httpx.Client | None = None,
) -> DifyReply:
    """Send one query to a Dify chat app and return its answer; DifyError (key redacted) otherwise.

    `client` should be a netpolicy.guarded_client; without one, a client guarded by this process's
    outbound policy (AIEVAL_OUTBOUND_POLICY) is used for this one call."""
    url, headers, body = chat_message_request(base_url, query, api_key, inputs=inputs, user=user)
    try:
        if client is None:
            with guarded_client(OutboundPolicy.from_env(os.environ)) as one_off:
                response = one_off.post(url, json=body, headers=headers, timeout=timeout)
        else:
            response = client.post(url, json=body, headers=headers, timeout=timeout)
        return parse_answer(response, url)
    except OutboundPolicyError as exc:
        raise DifyError(str(exc), retryable=False) from None
    except DifyError as exc:
        raise DifyError(_redact(str(exc), api_key), retryable=exc.retryable, status=exc.status,
                        retry_after=exc.retry_after) from None
    except httpx.TimeoutException as exc:
        raise DifyError(f"timed out after {timeout:g} s waiting for {url} ({type(exc).__name__})", retryable=True) from None
    except httpx.RequestError as exc:
        raise DifyError(_redact(f"cannot connect to {url}: {exc}", api_key), retryable=True) from None
