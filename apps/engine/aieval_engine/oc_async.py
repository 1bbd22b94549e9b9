"""The async request path of the project's OpenAI-compatible model class, for the continuous request pool (oc_pool.py).

OpenCompass' OpenAISDK answers a prompt with a blocking openai-SDK call on one thread of a pool made per batch;
`AsyncChatCompletions.agenerate` answers the same prompt with one coroutine on an httpx.AsyncClient, so hundreds of
requests can be in flight from one thread at a fraction of the CPU. What is sent and what is returned do not change:
- the request body is OpenAISDK._generate's: its own helpers turn the prompt into messages and the output length
  (`_preprocess_messages`, `_messages_to_chat_completions`), and `chat_request_body` assembles the same `query_data`
  as _generate does inline (mirrored there, with the lines it mirrors named) and serialises it as the openai client
  does (create() parameters, then `extra_body` merged over them, compact UTF-8 JSON);
- the answer is extracted as _generate extracts it (content, reasoning_content joined by think_tag, '' for an empty
  answer that stopped or was filtered, `status_code_mappings` for mapped error statuses);
- retries keep both of OpenAISDK's layers: OpenCompass' `retry` attempts, each of which the openai client itself
  retries `SDK_RETRIES` times on a timeout, a network error or a transient status (408, 409, 429, >= 500). Between
  attempts the engine's one wait rule applies (`RetryPolicy`, shared with DifyChatModel): Retry-After when the
  server sends it, else a doubling backoff, capped.
Around every HTTP attempt: a slot of the pool's limiter (concurrency.py), the model's request rate (`query_per_second`), a slot of
the shared budget when the config names one (budget.py), and a latency/usage record (sample_metrics.py) per answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from .budget import MAX_WAIT_STEP_S
from .concurrency import Limiter, Outcome, classify_status, parse_retry_after
from .netpolicy import GuardedAsyncTransport
from .sample_metrics import Attempt, record_of, token_count

# The openai client's own retries per call (its max_retries default, which OpenAISDK keeps).
SDK_RETRIES = 2
# Keyword arguments of openai's create() that are not body fields.
_NOT_BODY = ("extra_body", "extra_headers", "extra_query", "timeout")
# OpenAISDK._generate switches to max_completion_tokens for these (its OAI_REASONING_MODEL_LIST).
try:
    from opencompass.models.openai_api import OAI_REASONING_MODEL_LIST
except ImportError:  # pragma: no cover - OpenCompass renamed it; the test of the body catches a difference
    OAI_REASONING_MODEL_LIST = ["o1", "o3", "o4", "gpt-5"]


class RetryPolicy:
    """The engine's one wait before retrying a request to a model endpoint: the server's Retry-After when it sends
    one, else `retry_backoff_s` doubled on each retry; never more than `max_backoff_s`."""

    retry_backoff_s = 1.0
    max_backoff_s = 30.0

    def retry_delay(self, retry: int, retry_after: float | None) -> float:
        """The wait before retry number `retry` (1, 2, ...)."""
        delay = retry_after if retry_after is not None else self.retry_backoff_s * 2 ** (retry - 1)
        return min(max(0.0, delay), self.max_backoff_s)


def retry_after_of(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait: retry-after-ms (which the openai client also reads), else Retry-After."""
    try:
        return max(0.0, float(response.headers["retry-after-ms"]) / 1000)
    except (KeyError, ValueError):
        return parse_retry_after(response.headers.get("retry-after"))


class RequestRate:
    """At most `per_second` request starts per second, bursts of up to `per_second` (the size of OpenCompass'
    TokenBucket, which starts empty like this one), computed from the clock instead of a thread adding tokens."""

    def __init__(self, per_second: float):
        self.per_second = float(per_second)
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now

    async def wait(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.per_second)
                self._refill()
            self._tokens -= 1


# Connections per shard of ShardedAsyncClient.
SHARD_CONNECTIONS = 8


class ShardedAsyncClient:
    """httpx.AsyncClients of SHARD_CONNECTIONS connections each, opened as requests need them; each request goes to
    the least busy one. httpcore's pool (1.0) looks at every connection for each idle one whenever a request starts
    or ends, so its CPU grows with the square of its connections: one pool of 64 costs more CPU per request than the
    whole rest of the request path, eight pools of 8 very little."""

    def __init__(self, make_client):
        self._make_client = make_client
        self._shards: list[list] = []  # [client, requests in flight]

    async def post(self, url: str, **kwargs) -> httpx.Response:
        shard = min(self._shards, key=lambda s: s[1], default=None)
        if shard is None or shard[1] >= SHARD_CONNECTIONS:
            shard = [self._make_client(), 0]
            self._shards.append(shard)
        shard[1] += 1
        try:
            return await shard[0].post(url, **kwargs)
        finally:
            shard[1] -= 1

    async def aclose(self) -> None:
        for client, _ in self._shards:
            await client.aclose()
        self._shards = []

    async def __aenter__(self) -> ShardedAsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


class _Reply:
    """One HTTP attempt: its outcome for the limiter, its HTTP status (None without an answer), the completion."""

    def __init__(self, outcome: Outcome, status: int | None, payload: Any = None, error: str | None = None):
        self.outcome = outcome
        self.status = status
        self.payload = payload
        self.error = error

    @property
    def transient(self) -> bool:
        """What the openai client retries by itself: no answer, a timeout, 408, 409, 429, >= 500."""
        status = self.status
        return status is None or status in (408, 409, 429) or status >= 500


class AsyncChatCompletions(RetryPolicy):
    """Mixed into an OpenAISDK subclass with `outbound_policy` and, optionally, `_budget` / `_metrics` (oc_ext)."""

    @property
    def supports_async_pool(self) -> bool:
        # A proxy makes the connection for us, out of the outbound policy's sight: such configs keep the sync path.
        return not getattr(self, "proxy_url", None)

    def async_client(self) -> ShardedAsyncClient:
        """The pool's client: the outbound policy's transport and OpenAISDK's timeout, in shards (ShardedAsyncClient)."""
        limits = httpx.Limits(max_keepalive_connections=SHARD_CONNECTIONS, max_connections=SHARD_CONNECTIONS)
        ssl_context = httpx.create_ssl_context()
        return ShardedAsyncClient(lambda: httpx.AsyncClient(
            transport=GuardedAsyncTransport(self.outbound_policy, limits=limits, ssl_context=ssl_context),
            timeout=httpx.Timeout(self.timeout), trust_env=False))

    def chat_request_body(self, prompt, max_out_len: int) -> tuple[dict, dict, dict]:
        """(body, extra headers, query parameters) of the request OpenAISDK._generate sends for `prompt`."""
        messages, max_out_len = self._preprocess_messages(prompt, max_out_len, self.max_seq_len, self.mode,
                                                          self.get_token_len)
        messages = self._messages_to_chat_completions(messages)
        # Mirrors OpenAISDK._generate's `query_data` (openai_api.py, "if any(model in self.path for model in
        # OAI_REASONING_MODEL_LIST)" ... "query_data.update(self.openai_extra_kwargs)"), with `messages` placed
        # second as the openai client orders its body.
        if any(model in self.path for model in OAI_REASONING_MODEL_LIST):
            query_data = dict(model=self.path, messages=messages, max_completion_tokens=max_out_len, n=1,
                              extra_body=self.extra_body)
        else:
            query_data = dict(model=self.path, messages=messages, max_tokens=max_out_len, n=1,
                              temperature=self.temperature, extra_body=self.extra_body)
        if self.openai_extra_kwargs:
            query_data.update(self.openai_extra_kwargs)
        # The openai client: create()'s parameters (an explicit None is sent as null), then extra_body over them.
        body = {key: value for key, value in query_data.items() if key not in _NOT_BODY}
        body.update(query_data.get("extra_body") or {})
        return body, dict(query_data.get("extra_headers") or {}), dict(query_data.get("extra_query") or {})

    async def agenerate(self, client: ShardedAsyncClient | httpx.AsyncClient, prompt, max_out_len: int,
                        limiter: Limiter | None = None, rate: RequestRate | None = None) -> str:
        """The answer OpenAISDK._generate would give for `prompt` (a prompt as parse_template returns it)."""
        failed = RuntimeError(f"Calling OpenAI API failed after retrying for {self.retry} times. "
                              "Check the logs for details.")
        if self.retry <= 0:
            raise failed  # OpenAISDK._generate sends nothing at all then
        body, extra_headers, params = self.chat_request_body(prompt, max_out_len)
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = str(self.openai_api_base).rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.openai_client.api_key}", "Content-Type": "application/json",
                   "Accept": "application/json", **extra_headers}
        attempts: list[Attempt] = []
        sent = 0
        failures = sdk_retries = 0
        retries = 0
        while True:
            reply = await self._attempt(client, url, content, headers, params, limiter, rate, attempts)
            sent += 1
            if reply.outcome.status == "ok":
                answer = self._answer_of(reply.payload)
                if answer is not None:
                    self._record(prompt, attempts, sent)
                    return answer
            elif reply.transient and sdk_retries < SDK_RETRIES:
                sdk_retries += 1
                retries += 1
                await asyncio.sleep(self.retry_delay(retries, reply.outcome.retry_after_s))
                continue
            elif reply.status in self.status_code_mappings:
                self.logger.error(f"error occurs at {self.openai_api_base}")
                self.logger.info(f"Status Code: {reply.status}, \nOriginal Error Message: {reply.error}, "
                                 f"\nReturn Message: {self.status_code_mappings[reply.status]} ")
                return self.status_code_mappings[reply.status]
            else:
                self.logger.error(f"error occurs at {self.openai_api_base}")
                self.logger.error(reply.error)
            failures += 1
            sdk_retries = 0
            if failures >= self.retry:
                raise failed
            retries += 1
            await asyncio.sleep(self.retry_delay(retries, reply.outcome.retry_after_s))

    async def _attempt(self, client, url, content, headers, params, limiter, rate, attempts) -> _Reply:
        if limiter is not None:
            await limiter.acquire()
        outcome = Outcome(0.0, "error")
        try:
            if rate is not None:
                await rate.wait()
            holder = await self._take_budget_slot()
            started = time.perf_counter()
            try:
                response = await client.post(url, content=content, headers=headers, params=params or None)
            except httpx.TimeoutException as exc:
                outcome = Outcome(time.perf_counter() - started, "timeout")
                return _Reply(outcome, None, error=f"request timed out: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - the openai client retries any failure to get an answer
                outcome = Outcome(time.perf_counter() - started, "error")
                return _Reply(outcome, None, error=f"connection error: {exc!r}")
            finally:
                if holder is not None:
                    await asyncio.to_thread(self._budget.release, holder)
            latency = time.perf_counter() - started
            status = response.status_code
            retry_after = retry_after_of(response)
            try:
                payload = response.json()
            except ValueError:
                payload = None
            usage = payload.get("usage") if isinstance(payload, dict) else None
            usage = usage if isinstance(usage, dict) else {}
            attempts.append(Attempt(status, latency, token_count(usage.get("prompt_tokens")),
                                    token_count(usage.get("completion_tokens"))))
            kind = classify_status(status)
            if kind == "ok" and not isinstance(payload, dict):
                kind = "error"  # a 2xx that is not a completion: the openai client fails to read it too
            outcome = Outcome(latency, kind, retry_after)
            return _Reply(outcome, status, payload, error=f"Error code: {status} - {response.text[:500]}")
        finally:
            if limiter is not None:
                limiter.release(outcome)

    async def _take_budget_slot(self) -> str | None:
        budget = getattr(self, "_budget", None)
        if budget is None:
            return None
        while True:  # a blocking wait would hold one of asyncio's few worker threads per waiting request
            holder = await asyncio.to_thread(budget.acquire, 0)
            if holder is not None:
                return holder
            await asyncio.sleep(MAX_WAIT_STEP_S)

    def _answer_of(self, payload: dict) -> str | None:
        """OpenAISDK._generate's extraction from a completion; None where it would log and retry."""
        choices = payload.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else None
        message = choice.get("message") if choice else None
        message = message if isinstance(message, dict) else None
        content = (message or {}).get("content") or ""
        reasoning_content = (message or {}).get("reasoning_content") or ""
        if not message or not (content or reasoning_content):
            if choice and choice.get("finish_reason") in ("stop", "content_filter"):
                return ""
            self.logger.error("Failed to extract content from the responses. API responses: %s", payload)
            return None
        if reasoning_content:
            return reasoning_content + self.think_tag + content if content else reasoning_content
        return content

    def _record(self, prompt, attempts: list[Attempt], sent: int) -> None:
        metrics = getattr(self, "_metrics", None)
        if metrics is not None and metrics.enabled:
            metrics.write(prompt, record_of(attempts, sent))
