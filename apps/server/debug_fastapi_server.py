"""The API under a debugger: `python apps/server/debug_fastapi_server.py [--port 8000] [--debug-port 5678]
[--wait-for-client]`, then attach VS Code ("FastAPI: attach (debug_fastapi_server.py)" in .vscode/launch.json).

debugpy listens first, then the API runs in this one process (uvicorn, one worker, no reload), so breakpoints
in routers and services are hit. Settings come from the environment as for start_fastapi_server.py (the API
only: run a worker too, e.g. debug_celery_worker.py or start_celery_worker.py). debugpy comes with the `dev`
extra: `pip install -e ".[dev]"`."""

from __future__ import annotations

import argparse
import os
import sys

INSTALL_HINT = 'debugpy is not installed: .venv/bin/pip install -e ".[dev]"  (or: pip install "debugpy>=1.8,<2")'


def add_debug_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    group = parser.add_argument_group("debugger")
    group.add_argument("--debug-host", default="127.0.0.1",
                       help="interface debugpy listens on (0.0.0.0 exposes it: anyone reaching it can run code)")
    group.add_argument("--debug-port", type=int, default=default_port, help=f"debugpy port (default {default_port})")
    group.add_argument("--wait-for-client", action="store_true",
                       help="start only once the debugger has attached (to stop at breakpoints in startup code)")


def _under_debugpy() -> bool:
    pydevd = sys.modules.get("pydevd")
    return pydevd is not None and pydevd.get_global_debugger() is not None


def start_debugger(args: argparse.Namespace) -> str:
    """Make debugpy listen (exit 2 if it is missing or cannot listen); returns where, for the banner. Under a
    debugger already (VS Code launched this script), nothing is started."""
    # Its warning about frozen modules concerns only the standard library, not the code debugged here.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        import debugpy
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(2)
    if _under_debugpy():
        return "already under debugpy (started by VS Code or python -m debugpy)"
    # OpenCompass' own processes are not debugged: breakpoints are for this process's code.
    debugpy.configure(subProcess=False)
    try:
        debugpy.listen((args.debug_host, args.debug_port))
    except Exception as exc:  # the port is taken, the interface does not exist...
        print(f"debugpy cannot listen on {args.debug_host}:{args.debug_port}: {exc} (choose another --debug-port)",
              file=sys.stderr)
        sys.exit(2)
    where = f"debugpy listening on {args.debug_host}:{args.debug_port}"
    if args.wait_for_client:
        print(f"{where}: waiting for the debugger to attach...", flush=True)
        debugpy.wait_for_client()
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the ai-eval-system API under debugpy (one process).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    add_debug_options(parser, 5678)
    args = parser.parse_args()
    if args.port == args.debug_port:
        parser.error("--port and --debug-port must differ")
    where = start_debugger(args)

    import uvicorn

    print(f"{where}; API at http://{args.host}:{args.port} (docs: /docs)", flush=True)
    uvicorn.run("aieval_server.main:create_app", factory=True, host=args.host, port=args.port, workers=1,
                reload=False, access_log=not args.no_access_log)


if __name__ == "__main__":
    main()
