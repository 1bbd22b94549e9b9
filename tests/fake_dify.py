"""A local HTTP server that speaks Dify's chat-messages API (blocking mode) and answers from a table.

Shared by the engine's unit and integration tests. It checks requests the way Dify does (Bearer app
key, `query`, `inputs`, `user`, `response_mode`) and answers errors with Dify's `{code, message, status}`.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeDify:
    def __init__(self, answers: dict[str, str], api_key: str = "app-fake-key", default: str = "I do not know."):
        self.answers = answers
        self.api_key = api_key
        self.default = default
        self.requests: list[dict] = []  # {"path", "authorization", "body"} of every request, in order
        self.fail_next: list[tuple[int, dict | str]] = []  # (status, body) served before any real answer
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer_for(self, query: str) -> str:
        return self.answers.get(query.strip(), self.default)

    def __enter__(self) -> FakeDify:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict | str) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if isinstance(payload, dict) else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"code": code, "message": message, "status": status})

            def do_POST(self):  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                          "body": body})
                    scripted = fake.fail_next.pop(0) if fake.fail_next else None
                if self.path != "/v1/chat-messages":
                    return self._error(404, "not_found", "The requested URL was not found on the server.")
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._error(401, "unauthorized", "Access token is invalid")
                if scripted is not None:
                    return self._send(*scripted)
                if not isinstance(body, dict):
                    return self._error(400, "invalid_param", "Invalid JSON body")
                if body.get("response_mode") != "blocking":
                    return self._error(400, "invalid_param", "this fake only serves response_mode=blocking")
                if not isinstance(body.get("inputs"), dict) or not isinstance(body.get("user"), str) or not body["user"]:
                    return self._error(400, "invalid_param", "inputs (object) and user (string) are required")
                query = body.get("query")
                if not isinstance(query, str) or not query:
                    return self._error(400, "invalid_param", "query is required")
                self._send(200, {
                    "event": "message",
                    "task_id": str(uuid.uuid4()),
                    "id": (message_id := str(uuid.uuid4())),
                    "message_id": message_id,
                    "conversation_id": str(uuid.uuid4()),
                    "mode": "chat",
                    "answer": (answer := fake.answer_for(query)),
                    # as Dify reports it; one "token" per character here, so a test knows the counts
                    "metadata": {"usage": {"prompt_tokens": len(query), "completion_tokens": len(answer),
                                           "total_tokens": len(query) + len(answer), "latency": 0.001}},
                    "created_at": 1700000000,
                })

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-dify").start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
