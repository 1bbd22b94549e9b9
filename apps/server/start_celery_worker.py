"""Worker process: `python apps/server/start_celery_worker.py [--queues api,local] [--concurrency N]`.

A worker limited to `--queues api` runs only endpoint evaluations; `--queues local` only local checkpoints
(a GPU machine, say). Several workers on several machines share one broker, database and storage."""

from aieval_server.worker import main

if __name__ == "__main__":
    main()
