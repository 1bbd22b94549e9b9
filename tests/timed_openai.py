"""A loopback OpenAI-compatible chat endpoint whose answers take a known time, stream their first text after a known
time, and report a known usage: the per-sample latency, time-to-first-token and token records
(aieval_engine.sample_metrics) can be checked against it exactly (tokens) or within bounds (times). Shared by the
engine's and the server's tests of those records."""

from __future__ import annotations

import http.server
import json
import re
import threading

from fake_openai import send_chat_reply

from aieval_engine.local_server import free_port

FLAKY = 2  # the question whose first request is answered with HTTP 500 (once per endpoint, until reset)


def delay_of(n: int) -> float:
    """Seconds from request to the whole answer of question N."""
    return 0.1 + 0.08 * n


def first_token_delay_of(n: int) -> float:
    """Seconds from request to the first streamed text of question N (a streamed answer's rest follows by
    delay_of(N))."""
    return 0.05 + 0.04 * n


class TimedChatEndpoint:
    """Answers N*3 (and echoes the max_tokens it was sent, so a changed request would change the prediction) after
    delay_of(N) seconds, with usage prompt_tokens = 100 + N, completion_tokens = N; without usage when told so. A
    streamed answer's first text comes after first_token_delay_of(N)."""

    def __init__(self, *, send_usage: bool):
        endpoint = self
        self.requests = 0
        self.failed_once: set[int] = set()
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                number = int(re.search(r"What is (\d+) times 3", request["messages"][-1]["content"]).group(1))
                with endpoint.lock:
                    endpoint.requests += 1
                    fail = number == FLAKY and number not in endpoint.failed_once
                    endpoint.failed_once.add(number)
                if not fail:
                    answer = f"{number * 3} (max_tokens {request.get('max_tokens')})"
                    completion = {
                        "id": "c", "object": "chat.completion", "created": 0, "model": request.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                     "finish_reason": "stop"}],
                    }
                    if send_usage:
                        completion["usage"] = {"prompt_tokens": 100 + number, "completion_tokens": number,
                                               "total_tokens": 100 + 2 * number}
                    first_token = first_token_delay_of(number)
                    send_chat_reply(self, request, completion, first_token_delay_s=first_token,
                                    answer_delay_s=delay_of(number) - first_token)
                    return
                body = b'{"error": {"message": "try again"}}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
