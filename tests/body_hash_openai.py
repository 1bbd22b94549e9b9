"""A loopback OpenAI-compatible chat endpoint whose answer is a hash of the exact request it was sent (body as parsed
JSON, and the Authorization header): two clients get the same answers only if they send the same requests (apart from
the two fields that ask for a stream, `stream` and `stream_options`, which change how the answer is sent, not what it
is: a streamed request is answered with the same text as server-sent events, fake_openai.send_chat_reply). It also
counts requests in flight (peak, and how many were in flight when each arrived), can take a fixed time per answer,
and can refuse requests with 429 + Retry-After. Used by the continuous request pool's tests (oc_pool.py)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable

from fake_openai import send_chat_reply

from aieval_engine.local_server import free_port

STREAM_FIELDS = ("stream", "stream_options")


def without_stream_fields(body: dict) -> dict:
    return {key: value for key, value in body.items() if key not in STREAM_FIELDS}


def answer_for(body: dict, authorization: str) -> str:
    canonical = json.dumps(without_stream_fields(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{authorization}\n{canonical}".encode()).hexdigest()[:24]


def question_of(body: dict) -> str:
    return str(body["messages"][-1]["content"])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a pool opens dozens of connections at once; the default backlog of 5 drops some


class BodyHashEndpoint:
    """`latency_s`: time each answer takes (a number, or a function of the question). `refuse_above`: requests arriving while that many are in flight get 429
    with `Retry-After: retry_after` (none refused when None). `refuse_first`: each question's first request gets that
    429 whatever the load. `fail_questions`: questions answered 400 (a permanent failure). `reasoning`: answers
    carry a reasoning_content as well."""

    def __init__(self, *, latency_s: float | Callable[[str], float] = 0.0, refuse_above: int | None = None, refuse_first: bool = False,
                 retry_after: str = "0.3", reasoning: bool = False):
        endpoint = self
        self.latency_s = latency_s
        self.refuse_above, self.refuse_first, self.retry_after = refuse_above, refuse_first, retry_after
        self.reasoning = reasoning
        self.fail_questions: set[str] = set()
        self.bodies: list[dict] = []  # every request body, in arrival order (refused ones included)
        self.arrivals: list[tuple[float, str, int]] = []  # (time, question, status sent)
        self.in_flight = self.peak_in_flight = 0
        self.in_flight_at_arrival: list[int] = []  # requests already in flight when each answered one arrived
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                question = question_of(body)
                with endpoint.lock:
                    endpoint.bodies.append(body)
                    seen_before = any(q == question for _, q, _ in endpoint.arrivals)
                    refuse = ((endpoint.refuse_above is not None and endpoint.in_flight >= endpoint.refuse_above)
                              or (endpoint.refuse_first and not seen_before))
                    status = 429 if refuse else 400 if question in endpoint.fail_questions else 200
                    endpoint.arrivals.append((time.monotonic(), question, status))
                    if status == 200:
                        endpoint.in_flight_at_arrival.append(endpoint.in_flight)
                        endpoint.in_flight += 1
                        endpoint.peak_in_flight = max(endpoint.peak_in_flight, endpoint.in_flight)
                if status != 200:
                    self.reply(status, {"error": {"message": "slow down" if status == 429 else "bad question"}},
                               {"Retry-After": endpoint.retry_after} if status == 429 else {})
                    return
                try:
                    latency = endpoint.latency_s
                    time.sleep(latency(question) if callable(latency) else latency)
                    message = {"role": "assistant", "content": answer_for(body, self.headers.get("Authorization", ""))}
                    if endpoint.reasoning:
                        message["reasoning_content"] = "thinking about " + question[:20]
                    send_chat_reply(self, body, {
                        "id": "c", "object": "chat.completion", "created": 0, "model": body.get("model"),
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def questions_answered(self) -> list[str]:
        with self.lock:
            return [q for _, q, status in self.arrivals if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
