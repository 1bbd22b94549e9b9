"""A worker under a debugger: `python apps/server/debug_celery_worker.py [--queues api,local] [--debug-port 5679]
[--wait-for-client]`, then attach VS Code ("Celery worker: attach (debug_celery_worker.py)").

The worker of start_celery_worker.py (same settings and options) with Celery's solo pool: one task at a time,
run in this process's main thread, so breakpoints in the task (aieval_server/tasks/evaluation.py), the services
it calls (services/runs.py) and the engine code running in the worker (aieval_engine.runner) are hit.
OpenCompass' inference itself runs in forked processes, which are not debugged.

While the debugger holds the job at a breakpoint its heartbeat stops too: past AIEVAL_STALE_AFTER_S (15 s) the
sweeper of any other worker requeues it. Raise it (e.g. AIEVAL_STALE_AFTER_S=3600) for the workers sharing the
database while you debug."""

from __future__ import annotations

from debug_fastapi_server import add_debug_options, start_debugger

from aieval_server import worker


def main() -> None:
    parser = worker.parser()
    parser.description = "Run an ai-eval-system worker under debugpy (solo pool: one task at a time, in-process)."
    for option in parser._actions:
        if option.dest == "concurrency":
            option.help = "ignored: the solo pool runs one task at a time"
    add_debug_options(parser, 5679)
    args = parser.parse_args()
    where = start_debugger(args)
    print(f"{where}; worker {args.name} (solo pool) consuming queues {args.queues}", flush=True)
    worker.run(args, pool="solo")


if __name__ == "__main__":
    main()
