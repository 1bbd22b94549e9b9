"""The web UI in real Chromium against a real server and worker: wizard → live progress → results → samples
→ exports, language switching, cancelling a running job, and server errors shown as readable messages."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.request
import zipfile

import pytest
from playwright.sync_api import Page, expect
from waiting import wait_until

pytestmark = pytest.mark.timeout(300)
RUN_TIMEOUT_MS = 240_000  # the first job of a fresh worker also pays the OpenCompass import


def api(server, path: str, body: dict | None = None, method: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + "/api/v1" + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def demo_ids(server) -> tuple[int, list[int]]:
    model = next(m["id"] for m in api(server, "/models") if m["is_demo"])
    datasets = [d["id"] for d in api(server, "/datasets") if d["is_demo"]]
    return model, datasets


CAPITALS = [("What is the capital of France? Answer with one word.", "Paris"),
            ("What is the capital of Japan? Answer with one word.", "Tokyo"),
            ("What is the capital of Italy? Answer with one word.", "Rome")]


@pytest.fixture(scope="module")
def wizard_run(browser, server, tiny_model_dir, tmp_path_factory):
    """Create an evaluation through the wizard (registering the tiny model inline on the way) and follow it on
    its detail page until it is done. Returns what was observed."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US", base_url=server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/evaluations/new")

    # Step 1: the demo model is pre-selected; register the tiny model inline and test its connection.
    demo_model, _ = demo_ids(server)
    expect(page.locator(f"[data-test=model-choice-{demo_model}]")).to_be_checked()
    page.click("[data-test=register-model-inline] .n-collapse-item__header")
    page.fill("[data-test=model-name] input", "tiny e2e model")
    page.click("[data-test=kind-hf]")
    page.fill("[data-test=model-path] input", str(tiny_model_dir))
    page.click("[data-test=model-save]")
    tiny = next(m for m in wait_until(lambda: [m for m in api(server, "/models") if m["name"] == "tiny e2e model"], 10, what="the tiny model"))
    expect(page.locator(f"[data-test=model-choice-{tiny['id']}]")).to_be_checked()
    page.click("[data-test=model-test]")
    # For a local checkpoint the server loads it and generates once: seconds, more on a cold process.
    expect(page.locator("[data-test=model-test-result]")).to_be_visible(timeout=120_000)
    test_result_text = page.locator("[data-test=model-test-result]").inner_text()
    # This run only needs the demo model (its answers are partly right, which the wrong-only filter needs).
    page.click(f"[data-test=model-choice-{tiny['id']}]")
    expect(page.locator(f"[data-test=model-choice-{tiny['id']}]")).not_to_be_checked()
    page.click("[data-test=wizard-next]")

    # Step 2: the demo datasets are pre-selected and shown as available; a third one is uploaded right here
    # (previewed first), which is what makes the radar chart appear in the results.
    expect(page.locator("[data-test=step-datasets]")).to_be_visible()
    expect(page.locator("[data-test=step-datasets]")).to_contain_text("available")
    page.click("[data-test=step-datasets] .n-tabs-tab[data-name=upload]")
    upload = tmp_path_factory.mktemp("upload") / "e2e-capitals.jsonl"
    upload.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in CAPITALS), encoding="utf-8")
    page.set_input_files("[data-test=dataset-file]", str(upload))
    expect(page.locator("[data-test=dataset-preview] tbody tr")).to_have_count(len(CAPITALS))  # the server's dry run
    expect(page.locator("[data-test=dataset-problem]")).to_have_count(0)
    expect(page.locator("[data-test=dataset-detected]")).to_have_text("Detected: QA")
    # Free-form answers: score by "answer contained in the prediction" (exact match would need "Paris" alone).
    page.click("[data-test=dataset-scorer]")
    page.click(".n-base-select-option:has-text('Answer contained in prediction')")
    page.click("[data-test=dataset-upload]")
    uploaded = wait_until(lambda: [d for d in api(server, "/datasets") if d["name"] == "e2e-capitals"], 10, what="the uploaded dataset")[0]
    assert (uploaded["data_type"], uploaded["scorer"], uploaded["rows"]) == ("qa", "contains", len(CAPITALS))
    page.click("[data-test=step-datasets] .n-tabs-tab[data-name=registered]")
    expect(page.locator(f"[data-test=dataset-choice-{uploaded['id']}]")).to_be_checked()
    expect(page.locator("[data-test=step-datasets] .n-card-header")).to_contain_text("3 selected")
    page.click("[data-test=wizard-next]")

    # Step 3: parameters small enough for a run of seconds.
    page.fill("[data-test=evaluation-name] input", "e2e wizard run")
    page.fill("[data-test=param-limit] input", "4")
    page.fill("[data-test=param-max-out] input", "16")
    page.click("[data-test=step-params] .n-card-header")  # blur: NInputNumber commits on blur
    page.click("[data-test=wizard-next]")

    # Step 4: review, submit, land on the detail page.
    expect(page.locator("[data-test=step-review]")).to_contain_text("e2e wizard run")
    page.click("[data-test=wizard-submit]")
    page.wait_for_url(re.compile(r"^http://[^/#]+/evaluations/\d+$"), timeout=30_000)  # a clean URL, no #/
    evaluation_id = int(page.url.rsplit("/", 1)[1])

    # Watch the progress bar: record every value it shows until the job is final.
    percents: list[float] = []
    statuses: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    detail = page.locator("[data-test=evaluation-detail]")
    while time.monotonic() < deadline:
        status = detail.get_attribute("data-status")
        percent = float(page.locator("[data-test=detail-progress]").get_attribute("data-percent") or 0)
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if not percents or percents[-1] != percent:
            percents.append(percent)
        if status in ("succeeded", "failed", "cancelled"):
            break
        page.wait_for_timeout(200)
    live_mode = page.locator("[data-live-mode]").first.get_attribute("data-live-mode")
    yield {"id": evaluation_id, "page": page, "percents": percents, "statuses": statuses, "tiny": tiny,
           "test_result": test_result_text, "live_mode": live_mode, "errors": errors}
    context.close()


def test_wizard_creates_an_evaluation_whose_progress_bar_reaches_done(wizard_run, server):
    detail = api(server, f"/evaluations/{wizard_run['id']}")
    assert detail["name"] == "e2e wizard run"
    assert detail["params"]["limit"] == 4 and detail["params"]["max_out_len"] == 16
    assert [m["name"] for m in detail["models"]] == ["SmolLM2-135M-Instruct (demo)"]
    assert [d["name"] for d in detail["datasets"]] == ["demo-mcq", "demo-qa", "e2e-capitals"]
    assert detail["status"] == "succeeded", detail.get("error")
    assert wizard_run["statuses"][-1] == "succeeded"
    assert "running" in wizard_run["statuses"] or "queued" in wizard_run["statuses"]
    assert wizard_run["percents"][-1] == 100
    assert wizard_run["percents"][0] < 100, "the bar should start below done and move"
    assert wizard_run["percents"] == sorted(wizard_run["percents"]), "progress never moves backwards"
    # The inline connection test answered in the page (an HF checkpoint: a local load check).
    assert wizard_run["test_result"].strip()
    assert not wizard_run["errors"]


def test_results_show_scores_charts_and_wrong_sample_filter(wizard_run, server):
    page: Page = wizard_run["page"]
    page.goto(f"/evaluations/{wizard_run['id']}")
    scores = api(server, f"/evaluations/{wizard_run['id']}/results")
    table = page.locator("[data-test=score-table] tbody tr")
    expect(table).to_have_count(len(scores))
    for score in scores:  # four significant digits, what it rests on beside it (utils/provenance.ts)
        expect(page.locator("[data-test=score-table]")).to_contain_text(f"{score['value']:.4g}")
        expect(page.locator("[data-test=score-table]")).to_contain_text(f"n = {score['n']} · {score['scorer']}")
    expect(page.locator("[data-test=bar-chart] canvas")).to_have_count(1)
    expect(page.locator("[data-test=radar-chart] canvas")).to_have_count(1)  # three datasets: a radar
    expect(page.locator("[data-test=pairs-table] tbody tr")).to_have_count(3)

    page.click("[data-test=results] .n-tabs-tab[data-name=samples]")
    browser_rows = page.locator("[data-test=sample-browser] tbody tr[data-correct]")
    all_samples = api(server, f"/evaluations/{wizard_run['id']}/samples?page_size=100")["items"]
    assert len(all_samples) == 4 + 4 + len(CAPITALS)  # limit 4 on each demo set, the whole 3-row upload
    expect(browser_rows).to_have_count(len(all_samples))
    wrong = [s for s in all_samples if s["correct"] is False]
    assert 0 < len(wrong) < len(all_samples), "the demo model gets some answers right and some wrong"

    page.click("[data-test=wrong-only]")
    expect(browser_rows).to_have_count(len(wrong))
    for value in browser_rows.evaluate_all("rows => rows.map(r => r.dataset.correct)"):
        assert value == "false"
    page.click("[data-test=wrong-only]")
    expect(browser_rows).to_have_count(len(all_samples))

    page.fill("[data-test=sample-search] input", "France")
    france = api(server, f"/evaluations/{wizard_run['id']}/samples?q=France")["total"]
    assert france == 2  # the demo MCQ question and the uploaded one
    expect(browser_rows).to_have_count(france)
    for text in browser_rows.all_inner_texts():
        assert "France" in text

    page.click("[data-test=results] .n-tabs-tab[data-name=manifest]")
    manifest = json.loads(page.locator("[data-test=manifest]").inner_text())
    assert manifest["opencompass"] and manifest["config_sha256"]


def test_clean_urls_survive_a_reload_a_pasted_link_and_an_old_hash_bookmark(wizard_run, server, page: Page):
    evaluation_id = wizard_run["id"]
    detail_url = f"{server.url}/evaluations/{evaluation_id}"
    # Clicking through the app gives clean URLs.
    page.goto("/evaluations")
    page.locator(f"[data-evaluation-id='{evaluation_id}'] [data-test=evaluation-link]").first.click()
    page.wait_for_url(detail_url)
    expect(page.locator("[data-test=evaluation-detail] h1")).to_have_text(f"#{evaluation_id} e2e wizard run")
    # A reload asks the server for /evaluations/<id> itself: it answers with the app, which opens the same page.
    page.reload()
    assert page.url == detail_url
    expect(page.locator("[data-test=evaluation-detail] h1")).to_have_text(f"#{evaluation_id} e2e wizard run")
    # A link typed or pasted into the address bar opens its page too; Back returns to the detail page.
    page.goto("/models")
    expect(page.locator("h1")).to_have_text("Models")
    page.reload()
    expect(page.locator("h1")).to_have_text("Models")
    page.go_back()
    assert page.url == detail_url
    expect(page.locator("[data-test=evaluation-detail] h1")).to_have_text(f"#{evaluation_id} e2e wizard run")
    # A bookmark from the hash-routing days opens its page under the clean URL.
    page.goto(f"/#/evaluations/{evaluation_id}")
    page.wait_for_url(detail_url)
    expect(page.locator("[data-test=evaluation-detail] h1")).to_have_text(f"#{evaluation_id} e2e wizard run")
    # A missing asset is still a 404, not the app.
    assert page.request.get("/assets/missing.js").status == 404


def test_export_buttons_download_each_format(wizard_run):
    page: Page = wizard_run["page"]
    page.goto(f"/evaluations/{wizard_run['id']}")
    contents = {}
    for fmt in ("csv", "json", "md", "zip"):
        with page.expect_download() as download_info:
            page.click(f"[data-test=export-{fmt}]")
        download = download_info.value
        assert download.suggested_filename == f"evaluation-{wizard_run['id']}.{fmt}"
        with open(download.path(), "rb") as handle:
            contents[fmt] = handle.read()
    rows = list(csv.DictReader(io.StringIO(contents["csv"].decode("utf-8-sig"))))
    assert rows and any("demo-mcq" in json.dumps(r) for r in rows)
    assert json.loads(contents["json"])
    assert b"demo-qa" in contents["md"]
    with zipfile.ZipFile(io.BytesIO(contents["zip"])) as archive:
        assert archive.namelist()


def test_language_switch_and_browser_default(browser, server, page: Page):
    page.goto("/evaluations")
    expect(page.locator("h1")).to_have_text("Evaluations")
    page.click("[data-test=language-select]")
    page.click(".n-base-select-option:has-text('中文')")
    expect(page.locator("h1")).to_have_text("评测任务")
    expect(page.locator("[data-nav=models]")).to_have_text("模型")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.reload()
    expect(page.locator("h1")).to_have_text("评测任务")  # the choice is remembered
    page.click("[data-test=language-select]")
    page.click(".n-base-select-option:has-text('English')")
    expect(page.locator("h1")).to_have_text("Evaluations")

    # A browser that asks for Chinese gets Chinese without choosing anything.
    context = browser.new_context(locale="zh-CN", base_url=server.url)
    try:
        chinese = context.new_page()
        chinese.goto("/")
        expect(chinese.locator("h1")).to_have_text("概览")
    finally:
        context.close()


def test_cancel_a_running_job_from_the_list(browser, server, page: Page):
    model, datasets = demo_ids(server)
    # No sample limit and long answers: minutes of work, so it is surely still running when cancelled.
    created = api(server, "/evaluations", {"name": "e2e cancel me", "model_ids": [model], "dataset_ids": datasets,
                                            "params": {"max_out_len": 512}})
    page.goto("/evaluations")
    row = page.locator(f"[data-evaluation-id='{created['id']}']")
    expect(row).to_have_attribute("data-status", "running", timeout=120_000)  # pushed by the list WebSocket
    expect(page.locator("[data-live-mode]").first).to_have_attribute("data-live-mode", "websocket")

    # A second viewer whose WebSockets are refused (as behind a proxy without upgrade support) follows the
    # same job by polling.
    polling_context = browser.new_context(locale="en-US", base_url=server.url)
    polling_context.route_web_socket(re.compile(r".*/ws$"), lambda ws: ws.close())
    try:
        watcher = polling_context.new_page()
        watcher.goto(f"/evaluations/{created['id']}")
        expect(watcher.locator("[data-live-mode]").first).to_have_attribute("data-live-mode", "polling")
        expect(watcher.locator("[data-test=evaluation-detail]")).to_have_attribute("data-status", "running")

        row.locator("[data-test=cancel]").click()
        page.locator(".n-dialog").get_by_role("button", name="Yes").click()
        expect(row).to_have_attribute("data-status", "cancelled", timeout=60_000)
        expect(watcher.locator("[data-test=evaluation-detail]")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    finally:
        polling_context.close()
    assert api(server, f"/evaluations/{created['id']}")["status"] == "cancelled"

    # Retry and delete are offered for a finished job; delete removes the row.
    row.locator("[data-test=delete]").click()
    page.locator(".n-dialog").get_by_role("button", name="Yes").click()
    expect(row).to_have_count(0)
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(server, f"/evaluations/{created['id']}")
    assert gone.value.code == 404


def test_server_errors_are_readable_messages(server, page: Page, tmp_path):
    page.goto("/evaluations/987654")
    alert = page.locator("[role=alert]")
    expect(alert).to_be_visible()
    assert "987654" in alert.inner_text() or "not found" in alert.inner_text().lower()
    assert "Traceback" not in page.content()

    # A file the server would refuse: its dry run's line-numbered problems are shown and Upload stays disabled.
    bad = tmp_path / "bad.csv"
    bad.write_text("question,A,B,C,D,answer\nq1,a,b,c,d,A\nq2,a,b,c,d,E\n", encoding="utf-8")
    page.goto("/datasets")
    expect(page.locator("[data-test=dataset-file]")).to_have_attribute("accept", ".jsonl,.csv")  # the server's rules
    page.set_input_files("[data-test=dataset-file]", str(bad))
    problem = page.locator("[data-test=dataset-problem]").first
    expect(problem).to_contain_text("line 3:")
    expect(problem).to_contain_text("must be one of the options")
    expect(page.locator("[data-test=dataset-detected]")).to_have_text("Detected: MCQ")
    expect(page.locator("[data-test=dataset-upload]")).to_be_disabled()
    # A .txt is not read as JSONL: the server names the accepted extensions.
    text_file = tmp_path / "notes.txt"
    text_file.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    page.set_input_files("[data-test=dataset-file]", str(text_file))
    expect(page.locator("[data-test=dataset-problem]").first).to_contain_text("only .jsonl and .csv files are accepted")
    expect(page.locator("[data-test=dataset-upload]")).to_be_disabled()
    assert not [d for d in api(server, "/datasets") if d["name"] in ("bad", "notes")], "a dry run stores nothing"

    # Unknown routes show a page, not a blank screen.
    page.goto("/no/such/page")
    expect(page.locator(".n-result")).to_be_visible()
