"""A notification receiver on loopback: a threaded HTTP server that records every POST it gets (path with query,
headers, raw body) and answers with the statuses and bodies it is told, in order (the last one repeats). Shared by the
server's unit and integration tests of notifications."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    def __init__(self, answers: list[tuple[int, str]] | None = None):
        self.answers = list(answers or [(200, "ok")])
        self.received: list[Received] = []
        self.lock = threading.Lock()
        # Cleared, every answer waits until it is set again: a test can hold a delivery in flight.
        self.answering = threading.Event()
        self.answering.set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status, text = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                payload = text.encode()
                receiver.answering.wait(30)
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if text.startswith("{") else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port, no race for it
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook-receiver")
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
