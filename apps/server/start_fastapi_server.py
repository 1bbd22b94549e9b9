"""Production API process: `python apps/server/start_fastapi_server.py [--host H] [--port P] [--workers N]`.

Settings come from configs/environments/$AIEVAL_ENV.yaml, .env and AIEVAL_* variables. Workers run separately
(start_celery_worker.py)."""

from __future__ import annotations

import argparse

import uvicorn

from aieval_server.config import get_settings
from aieval_server.log_config import logging_config


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the ai-eval-system API.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    args = parser.parse_args()
    # Before uvicorn starts, not only in create_app: with --workers, uvicorn restarts worker processes that exit.
    settings = get_settings()
    settings.check_production_ready()
    # AIEVAL_LOG_FORMAT/_LOG_LEVEL, applied by uvicorn in each of its processes (access lines: API requests only).
    uvicorn.run("aieval_server.main:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                proxy_headers=True, access_log=not args.no_access_log, server_header=False,  # no `server: uvicorn`
                log_config=logging_config(settings))


if __name__ == "__main__":
    main()
