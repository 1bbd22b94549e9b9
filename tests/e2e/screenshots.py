"""Screenshots of every page, both languages, desktop (1440x900) and narrow (390x844), for a human to look at.

    .venv/bin/python tests/e2e/screenshots.py [--url http://127.0.0.1:18401] [--out /tmp/aieval-shots]

Without --url it starts its own `aieval serve` (fresh data dir), runs one short demo evaluation so the
results pages have content, and stops the server afterwards. PNGs are written to --out, never committed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import launch_chromium, running_server  # noqa: E402

VIEWPORTS = {"desktop": (1440, 900), "narrow": (390, 844)}


def api(base: str, path: str, body: dict | None = None):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def finished_evaluation(base: str, name: str = "screenshot demo") -> int:
    """The newest succeeded evaluation called `name`, running a short demo one when there is none."""
    done = [e for e in api(base, "/api/v1/evaluations?status=succeeded&page_size=100")["items"] if e["name"] == name]
    if done:
        return done[0]["id"]
    models = [m["id"] for m in api(base, "/api/v1/models") if m["is_demo"]]
    datasets = [d["id"] for d in api(base, "/api/v1/datasets") if d["is_demo"]]
    created = api(base, "/api/v1/evaluations", {"name": name, "model_ids": models, "dataset_ids": datasets,
                                                "params": {"limit": 4, "max_out_len": 16}})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = api(base, f"/api/v1/evaluations/{created['id']}")["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return created["id"]
        time.sleep(1)
    raise RuntimeError("demo evaluation did not finish in 5 minutes")


BAD_UPLOAD = "question,A,B,C,D,answer\nWhat is 2+2?,3,4,5,6,B\nq2,a,b,c,d,E\n,a,b,c,d,A\n"


def upload_bad_file(page, tmp: Path) -> None:
    bad = tmp / "bad-upload.csv"
    bad.write_text(BAD_UPLOAD, encoding="utf-8")
    page.set_input_files("[data-test=dataset-file]", str(bad))
    page.wait_for_selector("[data-test=dataset-problem]")  # the server's dry run (Upload stays disabled)


def wizard_to(step: int):
    def go(page, _tmp):
        for _ in range(step - 1):
            page.click("[data-test=wizard-next]")
            page.wait_for_timeout(200)
    return go


def open_model_form(page, _tmp):
    page.click("[data-test=add-model]")
    page.wait_for_selector("[data-test=model-name]")


def open_catalogue(page, _tmp):
    page.click(".n-tabs-tab[data-name=builtin]")
    page.wait_for_timeout(1500)  # the grouped catalogue loads on first open


def open_schedule_form(page, _tmp):
    page.click("[data-test=schedule-new]")
    page.wait_for_selector(".n-modal, .n-drawer")


def open_channel_form(page, _tmp):
    page.click("[data-test=channel-new]")
    page.wait_for_selector(".n-modal, .n-drawer")


def open_samples(page, _tmp):
    page.click("[data-test=results] .n-tabs-tab[data-name=samples]")
    # Rows, or the readable error the browser shows when the server cannot list them.
    page.wait_for_selector("[data-test=sample-browser] tbody tr, [data-test=sample-browser] [role=alert]")


def pages(evaluation_id: int, running_id: int | None, failed_id: int, rerun_id: int) -> list[tuple[str, str, object]]:
    """(name, route, optional action run before the shot)."""
    shots = [
        ("dashboard", "/", None),
        ("wizard-models", "/evaluations/new", None),
        ("wizard-datasets", "/evaluations/new", wizard_to(2)),
        ("wizard-params", "/evaluations/new", wizard_to(3)),
        ("wizard-review", "/evaluations/new", wizard_to(4)),
        ("evaluations", "/evaluations", None),
        ("detail", f"/evaluations/{evaluation_id}", None),
        ("detail-samples", f"/evaluations/{evaluation_id}", open_samples),
        ("detail-failed", f"/evaluations/{failed_id}", None),
        ("models", "/models", None),
        ("models-form", "/models", open_model_form),
        ("datasets", "/datasets", None),
        ("datasets-upload-errors", "/datasets", upload_bad_file),
        ("compare", "/compare", None),
        ("leaderboard", "/leaderboard", None),
        ("paired", f"/compare/paired?a={evaluation_id}&b={rerun_id}", None),
        ("datasets-catalogue", "/datasets", open_catalogue),
        ("schedules", "/schedules", None),
        ("schedules-form", "/schedules", open_schedule_form),
        ("notifications", "/notifications", None),
        ("notifications-form", "/notifications", open_channel_form),
        ("not-found", "/no-such-page", None),
    ]
    if running_id is not None:
        shots.insert(7, ("detail-running", f"/evaluations/{running_id}", None))
    return shots


def failed_evaluation(base: str) -> int:
    """A job that fails within seconds: an OpenAI-compatible model whose endpoint does not answer."""
    from harness import free_port

    name = "unreachable endpoint (screenshot)"
    model = next((m for m in api(base, "/api/v1/models") if m["name"] == name), None)
    if model is None:
        model = api(base, "/api/v1/models", {"name": name, "kind": "openai", "model": "nothing",
                                             "base_url": f"http://127.0.0.1:{free_port(18900, 18999)}/v1"})
    dataset = next(d["id"] for d in api(base, "/api/v1/datasets") if d["is_demo"])
    created = api(base, "/api/v1/evaluations", {"name": "screenshot failure", "model_ids": [model["id"]],
                                                "dataset_ids": [dataset], "params": {"limit": 1, "max_out_len": 8}})
    deadline = time.monotonic() + 180
    while api(base, f"/api/v1/evaluations/{created['id']}")["status"] not in ("failed", "succeeded", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError("the failing job did not finish in 3 minutes")
        time.sleep(1)
    return created["id"]


def start_running_evaluation(base: str) -> int:
    """A long job (no sample limit) so the running detail page can be photographed; cancelled afterwards."""
    models = [m["id"] for m in api(base, "/api/v1/models") if m["is_demo"]]
    datasets = [d["id"] for d in api(base, "/api/v1/datasets") if d["is_demo"]]
    created = api(base, "/api/v1/evaluations", {"name": "screenshot running", "model_ids": models,
                                                "dataset_ids": datasets, "params": {"max_out_len": 256}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        detail = api(base, f"/api/v1/evaluations/{created['id']}")
        if detail["status"] == "running" and (detail.get("progress") or {}).get("samples_done"):
            break
        time.sleep(1)
    return created["id"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--out", default="/tmp/aieval-shots")
    parser.add_argument("--only", help="comma-separated page names")
    parser.add_argument("--no-running", action="store_true", help="skip the running-job shot (no job started)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with (nullcontext(None) if args.url else running_server()) as server:
        base = args.url or server.url
        evaluation_id = finished_evaluation(base)
        rerun_id = finished_evaluation(base, "screenshot demo, again")  # the same settings: a paired comparison
        failed_id = failed_evaluation(base)
        running_id = None if args.no_running else start_running_evaluation(base)
        tmp = Path(tempfile.mkdtemp(prefix="aieval-shots-"))
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                for language in ("zh", "en"):
                    for size_name, (width, height) in VIEWPORTS.items():
                        context = browser.new_context(viewport={"width": width, "height": height},
                                                      locale="zh-CN" if language == "zh" else "en-US")
                        page = context.new_page()
                        for name, route, action in pages(evaluation_id, running_id, failed_id, rerun_id):
                            if args.only and name not in args.only.split(","):
                                continue
                            page.goto("about:blank")  # a fresh app per shot: no state carried over
                            page.goto(f"{base}{route}")
                            page.wait_for_load_state("networkidle")
                            if action:
                                action(page, tmp)
                            page.wait_for_timeout(700)  # transitions and chart animation
                            path = out / f"{name}-{language}-{size_name}.png"
                            # The app shell scrolls inside its content pane, so "full page" means: grow the
                            # viewport to the content's height for the shot, then restore it.
                            content_height = page.evaluate(
                                "Math.max(...[...document.querySelectorAll('.n-layout-scroll-container')]"
                                ".map(e => e.scrollHeight + e.getBoundingClientRect().top))")
                            page.set_viewport_size({"width": width, "height": max(height, int(content_height) + 8)})
                            page.wait_for_timeout(300)
                            page.screenshot(path=str(path))
                            page.set_viewport_size({"width": width, "height": height})
                            print(path)
                        context.close()
            finally:
                browser.close()
                if running_id is not None:
                    with contextlib.suppress(urllib.error.HTTPError):  # 409: it finished during the shots
                        api(base, f"/api/v1/evaluations/{running_id}/cancel", {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
