"""Send a test task (a script, not a test module): `python apps/server/test_eval_task.py [--api URL]`.

By default it submits a small evaluation through the running API (the demo model and the first demo dataset,
4 samples; `--model-id`, `--dataset-id`, `--limit` choose others), follows it with a progress line and prints
the scores: exit 0 when it succeeded, 1 when it failed (with the server's error), 2 when there is no API or
nothing to evaluate. Start the platform first (`make run`, or debug_fastapi_server.py and a worker).

`--evaluation-id N --broker-only` sends "run evaluation N" straight to the broker instead, with the server's
own submit function and settings (the AIEVAL_* environment of the worker), to check that the broker reaches
the worker without the API; it then follows the evaluation's row in the database."""

from __future__ import annotations

import argparse
import sys
import time

FINAL = ("succeeded", "failed", "cancelled", "timeout")


class Problem(Exception):
    """Something the user can fix; the message says what."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def server_error(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict) and "detail" in body:
        problems = [p for p in body.get("problems") or [] if p not in str(body["detail"])]
        return f"HTTP {response.status_code}: {body['detail']}" + "".join(f"\n  - {p}" for p in problems)
    return f"HTTP {response.status_code}: {body}"


class Api:
    def __init__(self, base: str, timeout: float = 30):
        import httpx

        self.base = base.rstrip("/")
        self.httpx = httpx
        self.client = httpx.Client(base_url=self.base + "/api/v1", timeout=timeout)

    def call(self, method: str, path: str, **kwargs):
        try:
            response = self.client.request(method, path, **kwargs)
        except self.httpx.HTTPError as exc:
            raise Problem(f"cannot reach the API at {self.base} ({type(exc).__name__}: {exc}).\n"
                          "Start it with `make run` (or python apps/server/debug_fastapi_server.py and a worker), "
                          "or point --api at it.", code=2) from None
        if response.status_code >= 400:
            raise Problem(f"{method} {path} was refused: {server_error(response)}")
        return response.json() if response.content else None


def pick(items: list[dict], wanted: int | None, what: str, option: str) -> dict:
    if wanted is not None:
        for item in items:
            if item["id"] == wanted:
                return item
        raise Problem(f"no {what} with id {wanted}; there are: "
                      + (", ".join(f"{i['id']} ({i['name']})" for i in items) or "none"), code=2)
    demos = [i for i in items if i.get("is_demo") and i.get("available", True)]
    if not demos:
        raise Problem(f"no demo {what} is registered (AIEVAL_REGISTER_DEMO=false?): choose one with {option}; "
                      "there are: " + (", ".join(f"{i['id']} ({i['name']})" for i in items) or "none"), code=2)
    return demos[0]


def progress_line(detail: dict, started: float) -> str:
    line = f"[{time.monotonic() - started:5.0f} s] {detail['status']}"
    if detail.get("fraction") is not None:
        line += f" {100 * detail['fraction']:3.0f}%"
    progress = detail.get("progress") or {}
    if progress.get("samples_total"):
        line += f" ({progress.get('samples_done', 0)}/{progress['samples_total']} samples)"
    if detail.get("stage") and detail["stage"] != detail["status"]:
        line += f" {detail['stage']}"
    return line


def report(detail: dict) -> int:
    if detail["status"] != "succeeded":
        print(f"evaluation {detail['id']} {detail['status']}: {detail.get('error') or '(no error text)'}")
        if detail.get("log_excerpt"):
            print("last lines of its log:\n" + "\n".join(detail["log_excerpt"].splitlines()[-20:]))
        return 1
    duration = f" in {detail['duration_s']:.1f} s" if detail.get("duration_s") is not None else ""
    print(f"evaluation {detail['id']} succeeded{duration}:")
    for score in detail.get("scores") or []:
        print(f"  {score['model']} / {score['dataset']}: {score['metric']} = {score['value']:.2f}")
    return 0


def follow(load, evaluation_id: int, timeout: float, interval: float) -> dict:
    started, last = time.monotonic(), None
    while True:
        detail = load()
        line = progress_line(detail, started)
        if line.split("] ", 1)[1] != last:
            print(line, flush=True)
            last = line.split("] ", 1)[1]
        if detail["status"] in FINAL:
            return detail
        if time.monotonic() - started > timeout:
            raise Problem(f"evaluation {evaluation_id} is still {detail['status']} after {timeout:.0f} s "
                          "(is a worker running? `make run` starts one)")
        time.sleep(interval)


def through_api(args: argparse.Namespace) -> int:
    api = Api(args.api)
    health = api.call("GET", "/health")
    print(f"API {api.base}: {health.get('status')} ({health.get('database')}, broker {health.get('broker')})")
    model = pick(api.call("GET", "/models"), args.model_id, "model", "--model-id")
    dataset = pick(api.call("GET", "/datasets"), args.dataset_id, "dataset", "--dataset-id")
    body = {"name": "test_eval_task", "model_ids": [model["id"]], "dataset_ids": [dataset["id"]],
            "params": {"limit": args.limit, "max_out_len": args.max_out_len}}
    created = api.call("POST", "/evaluations", json=body)
    evaluation_id = created["id"]
    print(f"submitted evaluation {evaluation_id}: model {model['name']} (id {model['id']}), dataset "
          f"{dataset['name']} (id {dataset['id']}), limit {args.limit}; queue {created['queue']}", flush=True)
    try:
        detail = follow(lambda: api.call("GET", f"/evaluations/{evaluation_id}"), evaluation_id, args.timeout,
                        args.interval)
    except KeyboardInterrupt:
        print(f"\nstopped following; evaluation {evaluation_id} goes on (cancel it: "
              f"POST {api.base}/api/v1/evaluations/{evaluation_id}/cancel)")
        return 130
    return report(detail)


def through_broker(args: argparse.Namespace) -> int:
    from aieval_server.config import get_settings
    from aieval_server.db import session_scope
    from aieval_server.services.accounts import SYSTEM_CALLER
    from aieval_server.services.errors import NotFound
    from aieval_server.services.evaluations import show
    from aieval_server.services.submission import submit

    settings = get_settings()
    evaluation_id = args.evaluation_id
    where = f"the {settings.public_summary()['database']} database of {settings.data_dir}"

    if not settings.db_url and not (settings.data_dir / "aieval.db").exists():
        raise Problem(f"no database in {settings.data_dir}: set AIEVAL_DATA_DIR (or AIEVAL_DB_URL) as for the "
                      "worker (`make run` uses var/)", code=2)

    def load() -> dict:
        try:
            with session_scope(settings.database_url) as session:
                # Read as the server itself (this script stands beside the worker, not behind a sign-in).
                return show(session, evaluation_id, SYSTEM_CALLER).model_dump(mode="json")
        except NotFound:
            raise Problem(f"there is no evaluation {evaluation_id} in {where} (same AIEVAL_* settings as the "
                          "worker?)", code=2) from None
        except Exception as exc:
            raise Problem(f"cannot read {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}", code=2) from None

    current = load()
    if not submit(settings, evaluation_id, current["queue"]):
        raise Problem(f"the broker ({settings.public_summary()['broker']}) did not take the message (see above)")
    print(f"sent 'run evaluation {evaluation_id}' to the {settings.public_summary()['broker']} broker, "
          f"queue {current['queue']}", flush=True)
    if current["status"] != "queued":
        print(f"evaluation {evaluation_id} is {current['status']}, not queued: the worker that receives the message "
              f"logs \"evaluation {evaluation_id}: skipped\" and leaves it as it is")
        return 0
    if args.no_follow:
        return 0
    return report(follow(load, evaluation_id, args.timeout, args.interval))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send a test evaluation to ai-eval-system and follow it.")
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL")
    parser.add_argument("--model-id", type=int, help="default: the demo model")
    parser.add_argument("--dataset-id", type=int, help="default: the first demo dataset")
    parser.add_argument("--limit", type=int, default=4, help="samples per dataset (default 4)")
    parser.add_argument("--max-out-len", type=int, default=32, help="tokens generated per sample (default 32)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the end (default 1800)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    broker = parser.add_argument_group("broker only (no API)")
    broker.add_argument("--evaluation-id", type=int, help="the evaluation to send to the broker")
    broker.add_argument("--broker-only", action="store_true",
                        help="send 'run evaluation N' to the broker directly (needs --evaluation-id and the "
                             "worker's AIEVAL_* settings)")
    broker.add_argument("--no-follow", action="store_true", help="with --broker-only: only send")
    args = parser.parse_args(argv)
    if args.broker_only != (args.evaluation_id is not None):
        parser.error("--broker-only and --evaluation-id go together")
    try:
        return through_broker(args) if args.broker_only else through_api(args)
    except Problem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
