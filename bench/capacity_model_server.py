#!/usr/bin/env python
"""A loopback OpenAI-compatible chat server of known capacity, for the throughput benchmark (issue 11).

Every chat completion takes `--latency` seconds and at most `--capacity` are served at once; requests beyond that
wait their turn (a model server's queue), so the capacity is capacity / latency requests per second (64 / 0.5 s =
128/s). With `--refuse-above N` the server instead answers HTTP 429 with `Retry-After` to any request that would
make more than N in flight (a rate-limited provider).

Answers are deterministic: question "#n" gets `reference_answer(n)` when `answers_correctly(n)`, a wrong word
otherwise, so every client that sends the questions gets the same score (SCORE_PERCENT of any 0..N-1 range is
close to 62 %).

It is a raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies, optional SSE for `"stream": true`): it must
cost far less CPU than the clients it measures on a 2-core machine. `GET /stats` returns what it saw (requests,
refusals, peak and time-weighted concurrency, per-question attempts); `POST /reset` clears it.

    python bench/capacity_model_server.py --port 18555 [--capacity 64] [--latency 0.5] [--refuse-above 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter

QUESTION_NUMBER = re.compile(r"#(\d+)")


# ---- the workload: deterministic questions and the server's (partly right) answers ----------------------------

def reference_answer(number: int) -> str:
    return f"w{(number * 7919) % 10007}"


def answers_correctly(number: int) -> bool:
    return (number * 37) % 100 < 62


def served_answer(number: int) -> str:
    return reference_answer(number) if answers_correctly(number) else f"x{(number * 104729) % 10007}"


def question_text(number: int) -> str:
    return f"Question #{number}: what is the code word of item {number}?"


def qa_rows(count: int, first: int = 0) -> list[dict[str, str]]:
    """`count` question/answer rows numbered from `first` (numbers must differ across a run's datasets)."""
    return [{"question": question_text(n), "answer": reference_answer(n)} for n in range(first, first + count)]


def expected_percent(count: int, first: int = 0) -> float:
    """The exact-match accuracy (in %) any correct client gets on qa_rows(count, first)."""
    return 100.0 * sum(answers_correctly(n) for n in range(first, first + count)) / count


def write_jsonl(path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


# ---- the server -------------------------------------------------------------------------------------------------

def completion_body(model: str | None, answer: str) -> dict:
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}


def stream_body(model: str | None, answer: str, include_usage: bool) -> bytes:
    """The answer as one chunk, then the usage in a chunk of its own when asked (`stream_options.include_usage`)."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": answer},
                                    "finish_reason": "stop"}]}]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": completion_body(model, answer)["usage"]})
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks).encode() + b"data: [DONE]\n\n"


REASONS = {200: "OK", 404: "Not Found", 400: "Bad Request", 429: "Too Many Requests"}


class CapacityServer:
    def __init__(self, capacity: int, latency: float, refuse_above: int | None, retry_after: float):
        self.capacity, self.latency = capacity, latency
        self.refuse_above, self.retry_after = refuse_above, retry_after
        self.slots = asyncio.Semaphore(capacity)
        self.reset()

    def reset(self) -> None:
        self.active = 0  # requests being answered (holding a slot)
        self.requests = self.answered = self.refused = self.peak = 0
        self.attempts: Counter[str] = Counter()  # per question key (model + number)
        self.refusals: Counter[str] = Counter()
        self.answered_keys: set[str] = set()
        self.timeline: list[tuple[float, int]] = []  # (time, requests in flight) at every change
        self.first_request_at: float | None = None  # wall clock (time.time()), to line up with other processes' times
        self.last_answer_at: float | None = None

    def _mark(self, delta: int) -> None:
        self.active += delta
        self.peak = max(self.peak, self.active)
        self.timeline.append((time.monotonic(), self.active))

    def stats(self) -> dict:
        return {"requests": self.requests, "answered": self.answered, "refused": self.refused, "peak": self.peak,
                "capacity": self.capacity, "latency": self.latency, "refuse_above": self.refuse_above,
                "questions_answered": len(self.answered_keys), "questions_seen": len(self.attempts),
                "questions_refused_twice_or_more": sum(1 for c in self.refusals.values() if c >= 2),
                "max_attempts": max(self.attempts.values(), default=0),
                "first_request_at": self.first_request_at, "last_answer_at": self.last_answer_at,
                "concurrency_by_tenth": self.concurrency_by_tenth()}

    def concurrency_by_tenth(self) -> list[float]:
        """The time-weighted mean of requests in flight in each tenth of the time from the first to the last
        request: the last tenths show where an adaptive client settled."""
        if len(self.timeline) < 2:
            return []
        start, end = self.timeline[0][0], self.timeline[-1][0]
        width = (end - start) / 10 or 1e-9
        area = [0.0] * 10
        for (t0, level), (t1, _) in zip(self.timeline, self.timeline[1:], strict=False):
            while t0 < t1:
                index = min(9, int((t0 - start) / width))
                edge = t1 if index == 9 else min(t1, start + (index + 1) * width)
                edge = edge if edge > t0 else t1  # float rounding at a bucket's edge
                area[index] += level * (edge - t0)
                t0 = edge
        return [round(a / width, 2) for a in area]

    async def chat(self, request: dict) -> tuple[int, bytes, dict[str, str]]:
        messages = request.get("messages") or []
        text = str(messages[-1].get("content", "")) if messages else ""
        if isinstance(messages[-1].get("content") if messages else None, list):  # content parts
            text = " ".join(str(part.get("text", "")) for part in messages[-1]["content"])
        found = QUESTION_NUMBER.search(text)
        number = int(found.group(1)) if found else -1
        key = f"{request.get('model')}#{number}"
        self.requests += 1
        self.attempts[key] += 1
        if self.first_request_at is None:
            self.first_request_at = time.time()
        if self.refuse_above is not None and self.active >= self.refuse_above:
            self.refused += 1
            self.refusals[key] += 1
            body = b'{"error": {"message": "too many requests", "type": "rate_limit_exceeded"}}'
            return 429, body, {"Retry-After": f"{self.retry_after:g}"}
        async with self.slots:
            self._mark(+1)
            try:
                await asyncio.sleep(self.latency)
            finally:
                self._mark(-1)
        self.answered += 1
        self.answered_keys.add(key)
        self.last_answer_at = time.time()
        answer = served_answer(number) if number >= 0 else "no question number"
        if request.get("stream"):
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            return 200, stream_body(request.get("model"), answer, include_usage), {"Content-Type": "text/event-stream"}
        return 200, json.dumps(completion_body(request.get("model"), answer)).encode(), {}

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        path = path.split("?", 1)[0]
        if method == "POST" and path.endswith("/chat/completions"):
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                return 400, b'{"error": {"message": "the body is not JSON"}}', {}
            return await self.chat(request)
        if method == "GET" and path.endswith("/models"):
            return 200, b'{"object": "list", "data": [{"id": "capacity-fake", "object": "model"}]}', {}
        if method == "GET" and path == "/stats":
            return 200, json.dumps(self.stats()).encode(), {}
        if method == "POST" and path == "/reset":
            self.reset()
            return 200, b"{}", {}
        return 404, b'{"error": {"message": "not found"}}', {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                length, close = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip() or 0)
                    elif name == "connection" and value.strip().lower() == "close":
                        close = True
                    elif name == "expect" and value.strip().lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(length) if length else b""
                status, payload, headers = await self.route(method, path, body)
                headers = {"Content-Type": "application/json", **headers, "Content-Length": str(len(payload))}
                if close:
                    headers["Connection"] = "close"
                writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n".encode()
                             + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n" + payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def serve(host: str, port: int, server: CapacityServer, ready: asyncio.Event | None = None) -> None:
    listener = await asyncio.start_server(server.handle, host, port, backlog=1024)
    print(f"capacity server on http://{host}:{port}/v1 (capacity {server.capacity}, latency {server.latency} s"
          + (f", 429 above {server.refuse_above}" if server.refuse_above is not None else "") + ")", flush=True)
    if ready is not None:
        ready.set()
    async with listener:
        await listener.serve_forever()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--host", default="127.0.0.1")
    options.add_argument("--port", type=int, required=True)
    options.add_argument("--capacity", type=int, default=64, help="requests answered at once; more wait")
    options.add_argument("--latency", type=float, default=0.5, help="seconds per answer")
    options.add_argument("--refuse-above", type=int, default=None, help="answer 429 above this many in flight")
    options.add_argument("--retry-after", type=float, default=1, help="the Retry-After of a 429, in seconds")
    args = options.parse_args()
    try:
        import uvloop  # the benchmark's server must not be its bottleneck

        uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        await serve(args.host, args.port, CapacityServer(args.capacity, args.latency, args.refuse_above,
                                                         args.retry_after))

    asyncio.run(run())


if __name__ == "__main__":
    main()
