"""Loopback OpenAI-compatible chat servers with a known capacity, for the concurrency limiter's tests (and the
idea behind bench/'s own copy): every answer takes `service_s`, and the server either

- refuses (HTTP 429, with a Retry-After) any request above `refuse_above` in flight, or
- serves `slots` at once and queues the rest (so latency grows with the queue, as a real server's does).

Each server is its own process (`python tests/capacity_server.py ...`), so its answers do not compete with the
client for the GIL: a server in the client's process would add the client's own CPU time to every latency the
limiter sees. GET /stats returns what it counted."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from aiohttp import web

from aieval_engine.local_server import free_port


def completion_body(model: str | None, answer: str) -> bytes:
    return json.dumps({
        "id": "c", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class CapacityServer:
    """Answers every POST (.../chat/completions or anything else) after `service_s` with the last message echoed.
    Counts what it saw: `served`, `refused`, `peak_in_flight` (most requests being served or queued at once)."""

    def __init__(self, *, service_s: float = 0.05, refuse_above: int | None = None, slots: int | None = None,
                 retry_after: str | None = "1", port: int | None = None):
        if (refuse_above is None) == (slots is None):
            raise ValueError("give exactly one of refuse_above (429 beyond) or slots (queue beyond)")
        self.service_s, self.refuse_above, self.slots, self.retry_after = service_s, refuse_above, slots, retry_after
        self.served = self.refused = self.in_flight = self.peak_in_flight = 0
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1/"
        self._semaphore: asyncio.Semaphore | None = None
        self._process: subprocess.Popen | None = None

    # ---- in the server's process -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.refuse_above is not None and self.in_flight >= self.refuse_above:
            self.refused += 1
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return web.json_response({"error": {"message": "too many requests"}}, status=429, headers=headers)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self._semaphore is not None:
                async with self._semaphore:
                    await asyncio.sleep(self.service_s)
            else:
                await asyncio.sleep(self.service_s)
        finally:
            self.in_flight -= 1
        self.served += 1
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        answer = str((payload.get("messages") or [{}])[-1].get("content", ""))
        return web.Response(body=completion_body(payload.get("model"), answer), content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"served": self.served, "refused": self.refused, "in_flight": self.in_flight,
                                  "peak_in_flight": self.peak_in_flight})

    async def serve_forever(self) -> None:
        self._semaphore = asyncio.Semaphore(self.slots) if self.slots is not None else None
        app = web.Application()
        app.router.add_route("GET", "/stats", self._stats)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # backlog: a burst of a few hundred connections must not be refused by the kernel
        await web.TCPSite(runner, "127.0.0.1", self.port, backlog=2048).start()
        await asyncio.Event().wait()

    # ---- in the test's process ---------------------------------------------------------------------------
    def stats(self) -> dict:
        """What the server counted so far (also sets served, refused, peak_in_flight on this object)."""
        stats = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10, trust_env=False).json()
        self.served, self.refused, self.peak_in_flight = stats["served"], stats["refused"], stats["peak_in_flight"]
        return stats

    def __enter__(self) -> CapacityServer:
        command = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                   "--service-s", str(self.service_s)]
        if self.refuse_above is not None:
            command += ["--refuse-above", str(self.refuse_above)]
        else:
            command += ["--slots", str(self.slots)]
        if self.retry_after is not None:
            command += ["--retry-after", self.retry_after]
        self._process = subprocess.Popen(command)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except httpx.HTTPError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("the capacity server did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--port", type=int, required=True)
    options.add_argument("--service-s", type=float, default=0.05)
    options.add_argument("--refuse-above", type=int)
    options.add_argument("--slots", type=int)
    options.add_argument("--retry-after")
    args = options.parse_args()
    server = CapacityServer(service_s=args.service_s, refuse_above=args.refuse_above, slots=args.slots,
                            retry_after=args.retry_after, port=args.port)
    asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
