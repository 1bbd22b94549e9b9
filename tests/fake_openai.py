"""A local HTTP server that speaks the OpenAI chat-completions shape. Shared by the server's integration tests
and the e2e tests."""

from __future__ import annotations

import http.server
import json
import threading
import time

from aieval_engine.local_server import free_port


def chat_completion(model: str | None, answer: str) -> bytes:
    """The body of an OpenAI chat completion answering `answer`."""
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class FakeChatEndpoint:
    """A real HTTP server speaking the OpenAI chat-completions shape, answering a fixed text and recording the
    Authorization headers it received (to prove the key reaches the endpoint and nothing else) and when each request
    arrived (time.monotonic(): the cold-start benchmark's clock)."""

    def __init__(self, answer: str):

        endpoint = self
        self.answer = answer
        self.authorizations: list[str] = []
        self.arrivals: list[float] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                endpoint.arrivals.append(time.monotonic())
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                endpoint.authorizations.append(self.headers.get("Authorization", ""))
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                body = chat_completion(request.get("model"), endpoint.answer)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
