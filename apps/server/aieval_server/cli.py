"""`aieval serve`: the embedded default — API, UI files and a worker from one command.

Registered in the `aieval.commands` entry point group (see aieval_engine.cli)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path


def add_serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="start the web server and a worker (embedded default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", dest="serve_data_dir", default=None,
                       help="database, storage, jobs and the demo model live here (same as aieval --data-dir)")
    serve.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    serve.add_argument("--workers", type=int, default=1, help="evaluations run at the same time by the worker")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args) -> int:
    # `aieval serve --data-dir D` and `aieval --data-dir D serve` both work; the engine's default otherwise.
    data_dir = args.serve_data_dir or args.data_dir
    os.environ["AIEVAL_DATA_DIR"] = str(Path(data_dir).resolve())
    return serve(args.host, args.port, worker=not args.no_worker, concurrency=args.workers)


def _stop_with_parent() -> None:
    """In the worker child: receive SIGTERM when `serve` ends, however it ends. uvicorn re-raises the SIGTERM
    it caught once it has shut down, so `serve`'s own cleanup may never run."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(host: str, port: int, *, worker: bool = True, concurrency: int = 1) -> int:
    import uvicorn

    from .config import get_settings
    from .main import create_app
    from .services.bootstrap import prepare_database

    settings = get_settings()
    prepare_database(settings)  # before the worker starts, so the two never race on migrations
    child = None
    if worker:
        child = subprocess.Popen([sys.executable, "-m", "aieval_server.worker", "--concurrency", str(concurrency)],
                                 env={**os.environ, "AIEVAL_DATA_DIR": str(settings.data_dir)},
                                 preexec_fn=_stop_with_parent)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aieval-server")
    parser.add_argument("--data-dir", default=os.environ.get("AIEVAL_DATA_DIR") or str(Path.home() / ".cache" / "aieval"))
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
