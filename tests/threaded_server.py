"""An ASGI app served by uvicorn in a thread of the test process: real sockets and HTTP on 127.0.0.1, while the
test can still reach into the process (event listeners, open descriptors)."""

from __future__ import annotations

import contextlib
import threading
import time


@contextlib.contextmanager
def uvicorn_in_thread(app, **options):
    """`app` served by uvicorn on a free 127.0.0.1 port in a thread of this process (real sockets, real HTTP)."""
    import uvicorn

    from aieval_engine.local_server import free_port

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
