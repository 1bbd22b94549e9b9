"""A local HTTP server that speaks the OpenAI chat-completions shape, and the reply helper every loopback chat server of
the tests shares (`send_chat_reply`): one JSON completion, or, when the request asks for `stream`, the same completion
as a real server-sent event stream as vLLM and OpenAI send it. Shared by the engine's, the server's and the e2e tests."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Literal

from aieval_engine.local_server import free_port

# Characters of text per streamed chunk: several chunks per answer, so the client has to join them.
PIECE_CHARS = 3
# What a streamed reply can be told to go wrong with: an error event after the first text, or a connection closed
# there (before the last chunk).
StreamFault = Literal["error-event", "cut"]


def completion_of(model: str | None, answer: str, *, usage: dict | None = None,
                  reasoning: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion answering `answer` (usage 1 + 1 tokens unless given; none when usage is {})."""
    message = {"role": "assistant", "content": answer}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    completion = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2} if usage is None else usage
    if usage:
        completion["usage"] = usage
    return completion


def chat_completion(model: str | None, answer: str) -> bytes:
    """The body of an OpenAI chat completion answering `answer`."""
    return json.dumps(completion_of(model, answer)).encode()


def stream_chunks(completion: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """The chunks a server streams for `completion`: a chunk with the role only, the reasoning_content then the
    content in pieces of PIECE_CHARS, a chunk with the finish_reason, and (include_usage) a last chunk without
    choices that carries the usage."""
    choice = completion["choices"][0]
    message = choice["message"]
    head = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for field in ("reasoning_content", "content"):
        text = message.get(field) or ""
        chunks += [chunk({field: text[i:i + PIECE_CHARS]}) for i in range(0, len(text), PIECE_CHARS)]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage and completion.get("usage"):
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


def send_chat_reply(handler: http.server.BaseHTTPRequestHandler, request: dict, completion: dict[str, Any], *,
                    first_token_delay_s: float = 0.0, answer_delay_s: float = 0.0,
                    fault: StreamFault | None = None) -> None:
    """Answer `request` with `completion` (status 200). Not streamed: after both delays, one JSON body. Streamed: the
    headers and the role-only chunk at once, the first text chunk after `first_token_delay_s`, the rest after
    `answer_delay_s` more, then `data: [DONE]`; chunked transfer encoding on HTTP/1.1, else the body ends when the
    connection closes (HTTP/1.0)."""
    if not request.get("stream"):
        time.sleep(first_token_delay_s + answer_delay_s)
        body = json.dumps(completion).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    role, *rest = stream_chunks(completion, include_usage=include_usage)
    chunked = handler.protocol_version == "HTTP/1.1"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()

    def send(data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        handler.wfile.flush()

    def event(chunk: dict) -> bytes:
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    send(event(role))
    time.sleep(first_token_delay_s)
    for position, chunk in enumerate(rest):
        if position == 1 and fault == "cut":
            handler.close_connection = True  # closed without the stream's end (nor the last chunk's, if chunked)
            return
        if position == 1 and fault == "error-event":  # as vLLM reports an error met while generating
            send(event({"error": {"object": "error", "message": "the engine failed mid-answer", "code": 500}}))
            break
        send(event(chunk))
        if position == 0:
            time.sleep(answer_delay_s)
    send(b"data: [DONE]\n\n")
    if chunked:
        handler.wfile.write(b"0\r\n\r\n")
    else:
        handler.close_connection = True


class FakeChatEndpoint:
    """A real HTTP server speaking the OpenAI chat-completions shape, answering a fixed text and recording the
    Authorization headers it received (to prove the key reaches the endpoint and nothing else), when each request
    arrived (time.monotonic(): the cold-start benchmark's clock) and the request bodies. Streams when asked to
    (send_chat_reply): the first text after `first_token_delay_s`, the rest `answer_delay_s` later; each entry of
    `faults` spoils one streamed reply, in order; with `ignores_stream`, it answers one JSON body whatever is asked
    (as a server that does not stream)."""

    def __init__(self, answer: str, *, first_token_delay_s: float = 0.0, answer_delay_s: float = 0.0,
                 protocol_version: str = "HTTP/1.0"):

        endpoint = self
        self.answer = answer
        self.first_token_delay_s, self.answer_delay_s = first_token_delay_s, answer_delay_s
        self.faults: list[StreamFault] = []
        self.ignores_stream = False
        self.authorizations: list[str] = []
        self.arrivals: list[float] = []
        self.bodies: list[dict] = []
        # What GET /v1/models lists (the `data` array), as vLLM serves it; tests change it to "deploy" a new version.
        # Its requests' Authorization headers are kept apart from the chat requests' (`authorizations`).
        self.served_models: list[dict[str, Any]] = [{"id": "fake-model", "object": "model", "created": 1700000000,
                                                     "owned_by": "vllm", "root": "/models/fake-model",
                                                     "max_model_len": 4096}]
        self.listing_authorizations: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if not self.path.rstrip("/").endswith("/models"):
                    self.send_error(404)
                    return
                endpoint.listing_authorizations.append(self.headers.get("Authorization", ""))
                body = json.dumps({"object": "list", "data": endpoint.served_models}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                endpoint.arrivals.append(time.monotonic())
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                endpoint.authorizations.append(self.headers.get("Authorization", ""))
                endpoint.bodies.append(request)
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                if endpoint.ignores_stream:
                    request = {**request, "stream": False}
                fault = endpoint.faults.pop(0) if request.get("stream") and endpoint.faults else None
                send_chat_reply(self, request, completion_of(request.get("model"), endpoint.answer),
                                first_token_delay_s=endpoint.first_token_delay_s,
                                answer_delay_s=endpoint.answer_delay_s, fault=fault)

            def log_message(self, *args):
                pass

        Handler.protocol_version = protocol_version
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
