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

Answers are streamed (`stream: true` with `stream_options.include_usage`, the only two fields added to the body) unless
the model is told not to (`stream=False`, for servers that cannot stream), so the time to the first token can be
recorded. The streamed deltas are joined into the completion the server would have sent whole (content and
reasoning_content concatenated, the last finish_reason, the final usage chunk's usage), and that completion goes
through the same extraction, so predictions do not change. The stream is looked at chunk by chunk only until the
first delta that carries text (its arrival is the TTFT); the rest is kept as bytes and parsed once at the end. An error
event inside the stream, or a stream cut before its end, is a failed attempt, as an error raised while the openai
client iterates a stream is for OpenAISDK. A server that ignores `stream` and answers with one JSON completion is read
as such (no TTFT).
"""

from __future__ import annotations

import asyncio
import contextlib
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
# What a streamed request adds to OpenAISDK's body: the stream, and its token usage in a final chunk (vLLM, SGLang,
# llama.cpp's server and OpenAI send it when asked; without it the record's token counts stay null).
STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}
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

    def _least_busy(self) -> list:
        shard = min(self._shards, key=lambda s: s[1], default=None)
        if shard is None or shard[1] >= SHARD_CONNECTIONS:
            shard = [self._make_client(), 0]
            self._shards.append(shard)
        return shard

    async def post(self, url: str, **kwargs) -> httpx.Response:
        shard = self._least_busy()
        shard[1] += 1
        try:
            return await shard[0].post(url, **kwargs)
        finally:
            shard[1] -= 1

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, **kwargs):
        """httpx.AsyncClient.stream on the least busy shard, which counts the request until its body is read."""
        shard = self._least_busy()
        shard[1] += 1
        try:
            async with shard[0].stream(method, url, **kwargs) as response:
                yield response
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


def _sse_data(lines: bytes) -> list[bytes]:
    """The payload of each `data:` line of server-sent events (OpenAI-compatible streams send one JSON chunk per
    line). Splitting lines is several times cheaper than a regular expression over the body."""
    return [line[5:].strip() for line in lines.splitlines() if line.startswith(b"data:")]


def _carries_text(lines: bytes) -> bool:
    """Whether a chunk among these complete SSE lines has a delta with text (content or reasoning_content)."""
    if b'content"' not in lines:  # a chunk with only a role, a finish_reason or usage: nothing to parse
        return False
    for payload in _sse_data(lines):
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue  # [DONE], or a broken chunk that completion_of_stream reports
        for choice in (chunk.get("choices") or ()) if isinstance(chunk, dict) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")):
                return True
    return False


def completion_of_stream(body: bytes) -> tuple[dict | None, str | None]:
    """(the completion a streamed answer adds up to, None) or (None, why it is not one). The completion has what
    OpenAISDK reads from a whole one: choices[0] with the message (the deltas' content and reasoning_content joined)
    and the last finish_reason, and the usage of the stream's usage chunk ({} without one). The chunks are parsed in
    one go (one JSON array), not one call per chunk.

    A stream without a finish_reason is not a completion, even when it ends with [DONE]: servers send one with the
    last token, and a server that stops a stream early may still send [DONE] (llama-cpp-python's does when it
    interrupts a stream for a newer request), so joining it would pass a truncated answer off as the prediction."""
    payloads = _sse_data(body)
    if b"[DONE]" in payloads:
        payloads = payloads[:payloads.index(b"[DONE]")]
    try:
        chunks = json.loads(b"[" + b",".join(payloads) + b"]")
    except ValueError:
        return None, f"the stream holds a chunk that is not JSON: {body[:500]!r}"
    content: list[str] = []
    reasoning: list[str] = []
    finish_reason = None
    usage: Any = None
    answered = False
    for chunk in chunks:
        if not isinstance(chunk, dict):
            return None, f"the stream holds a chunk that is not an object: {str(chunk)[:200]}"
        if chunk.get("error"):  # what the openai client raises APIError for
            return None, f"error event in the stream: {json.dumps(chunk['error'], ensure_ascii=False)[:500]}"
        if chunk.get("usage"):
            usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if choices and isinstance(choices, list) else None
        if not isinstance(choice, dict):
            continue
        answered = True
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if text and isinstance(text, str):
                content.append(text)
            text = delta.get("reasoning_content")
            if text and isinstance(text, str):
                reasoning.append(text)
        if choice.get("finish_reason"):
            finish_reason = choice["finish_reason"]
    if finish_reason is None:
        return None, ("the stream ended before its last chunk (no finish_reason): cut short, or a server that never "
                      "sends one, which needs the model's `stream` turned off")
    message = {"role": "assistant", "content": "".join(content), "reasoning_content": "".join(reasoning)}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}] if answered else [],
            "usage": usage if isinstance(usage, dict) else {}}, None


class AsyncChatCompletions(RetryPolicy):
    """Mixed into an OpenAISDK subclass with `outbound_policy` and, optionally, `_budget` / `_metrics` (oc_ext), and
    `stream_answers` (False: requests are not streamed, for servers that cannot stream; TTFT is then not recorded)."""

    prediction_cache = None  # prediction_cache.PredictionCache, set by the model class when its config names one

    @property
    def supports_async_pool(self) -> bool:
        # A proxy makes the connection for us, out of the outbound policy's sight: such configs keep the sync path.
        return not getattr(self, "proxy_url", None)

    def async_client(self) -> ShardedAsyncClient:
        """The pool's client: the outbound policy's transport and OpenAISDK's timeout, in shards (ShardedAsyncClient)."""
        limits = httpx.Limits(max_keepalive_connections=SHARD_CONNECTIONS, max_connections=SHARD_CONNECTIONS)
        return ShardedAsyncClient(lambda: httpx.AsyncClient(
            transport=GuardedAsyncTransport(self.outbound_policy, limits=limits),
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
                        limiter: Limiter | None = None, rate: RequestRate | None = None,
                        cache_key: str | None = None) -> str:
        """The answer OpenAISDK._generate would give for `prompt` (a prompt as parse_template returns it).
        `cache_key`: an answer the model gives (never an error, nor a status_code_mappings message) is kept under it
        in the model's prediction cache (prediction_cache.py)."""
        failed = RuntimeError(f"Calling OpenAI API failed after retrying for {self.retry} times. "
                              "Check the logs for details.")
        if self.retry <= 0:
            raise failed  # OpenAISDK._generate sends nothing at all then
        body, extra_headers, params = self.chat_request_body(prompt, max_out_len)
        # A body that already says how to stream (the model's extra_body or openai_extra_kwargs) is sent as it is.
        stream = getattr(self, "stream_answers", True) and not STREAM_FIELDS.keys() & body.keys()
        if stream:
            body = {**body, **STREAM_FIELDS}
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = str(self.openai_api_base).rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.openai_client.api_key}", "Content-Type": "application/json",
                   "Accept": "application/json", **extra_headers}
        attempts: list[Attempt] = []
        sent = 0
        failures = sdk_retries = 0
        retries = 0
        while True:
            reply = await self._attempt(client, url, content, headers, params, limiter, rate, attempts, stream)
            sent += 1
            if reply.outcome.status == "ok":
                answer = self._answer_of(reply.payload)
                if answer is not None:
                    self._record(prompt, attempts, sent)
                    if cache_key is not None and self.prediction_cache is not None:
                        self.prediction_cache.remember(cache_key, answer)
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

    async def _attempt(self, client, url, content, headers, params, limiter, rate, attempts, stream) -> _Reply:
        if limiter is not None:
            await limiter.acquire()
        outcome = Outcome(0.0, "error")
        try:
            if rate is not None:
                await rate.wait()
            holder = await self._take_budget_slot()
            started = time.perf_counter()
            try:
                if stream:
                    reply = await self._streamed_exchange(client, url, content, headers, params, started, attempts)
                else:
                    response = await client.post(url, content=content, headers=headers, params=params or None)
                    reply = self._reply_of(response, time.perf_counter() - started, attempts)
            except httpx.TimeoutException as exc:
                reply = _Reply(Outcome(time.perf_counter() - started, "timeout"), None,
                               error=f"request timed out: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - the openai client retries any failure to get an answer
                reply = _Reply(Outcome(time.perf_counter() - started, "error"), None, error=f"connection error: {exc!r}")
            finally:
                if holder is not None:
                    await asyncio.to_thread(self._budget.release, holder)
            outcome = reply.outcome
            return reply
        finally:
            if limiter is not None:
                limiter.release(outcome)

    def _reply_of(self, response: httpx.Response, latency: float, attempts: list[Attempt]) -> _Reply:
        """The attempt whose response was read whole: a JSON completion, or an error status."""
        status = response.status_code
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
        return _Reply(Outcome(latency, kind, retry_after_of(response)), status, payload,
                      error=f"Error code: {status} - {response.text[:500]}")

    async def _streamed_exchange(self, client, url, content, headers, params, started, attempts) -> _Reply:
        """One streamed attempt. Until the first chunk with text has come, each complete line received is looked at
        (_carries_text); after that the bytes are only kept, and parsed once the stream has ended."""
        async with client.stream("POST", url, content=content, headers=headers, params=params or None) as response:
            status = response.status_code
            if not 200 <= status < 300 or not response.headers.get("content-type", "").startswith("text/event-stream"):
                await response.aread()  # an error status, or a server that answered without streaming
                return self._reply_of(response, time.perf_counter() - started, attempts)
            pieces: list[bytes] = []
            unchecked = b""
            first_token_s = None
            try:
                async for piece in response.aiter_bytes():
                    pieces.append(piece)
                    if first_token_s is None:
                        unchecked += piece
                        end = unchecked.rfind(b"\n") + 1
                        if end and _carries_text(unchecked[:end]):
                            first_token_s = time.perf_counter() - started
                        unchecked = unchecked[end:]
            except httpx.TimeoutException as exc:
                # A failed attempt like an error event: the openai client does not retry inside an iterated stream.
                return _Reply(Outcome(time.perf_counter() - started, "timeout"), status,
                              error=f"the stream timed out: {exc!r}")
            except httpx.HTTPError as exc:
                return _Reply(Outcome(time.perf_counter() - started, "error"), status,
                              error=f"the stream was cut: {exc!r}")
            latency = time.perf_counter() - started
        completion, problem = completion_of_stream(b"".join(pieces))
        if completion is None:
            return _Reply(Outcome(latency, "error"), status, error=problem)
        usage = completion["usage"]
        attempts.append(Attempt(status, latency, token_count(usage.get("prompt_tokens")),
                                token_count(usage.get("completion_tokens")), first_token_s))
        return _Reply(Outcome(latency, "ok"), status, completion)

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
