"""The results pages in real Chromium against a real server and worker (issue 10): compare opens with the latest
comparable evaluations, puts comparable results side by side with rank ranges and marks the others "≠" with what
differs, links two models to their paired comparison, and the per-sample diff view filters by flips and shows both
answers side by side.

The data comes from real evaluations (real OpenCompass in the server's worker) of two OpenAI-compatible endpoints on
loopback that always answer the same text, on a tiny uploaded dataset scored "contains": which samples each model
gets right is known in advance."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from fake_openai import FakeChatEndpoint
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(600)

# Word i of WORDS is right for a model when its answer contains it.
BOTH, ONLY_A, ONLY_B, NEITHER = ["red", "green"], ["alpha", "bravo", "charlie"], ["zulu"], ["black"]
WORDS = ["alpha", "red", "zulu", "bravo", "black", "green", "charlie"]  # interleaved: paired by position
ANSWER_A, ANSWER_B = " ".join(BOTH + ONLY_A), " ".join(BOTH + ONLY_B)
PHRASES = ["one", "two", "three", "four"]


def api(server, path: str, body: dict | None = None, files: dict | None = None):
    if files is not None:  # a multipart upload, as the datasets page sends it
        boundary = "e2eboundary"
        name, content = files["file"]
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"scorer\"\r\n\r\ncontains\r\n"
                   f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                   f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(server.url + "/api/v1" + path, data=payload, method="POST",
                                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    else:
        request = urllib.request.Request(server.url + "/api/v1" + path, method="POST" if body is not None else "GET",
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _upload(server, name: str, answers: list[str]) -> int:
    body = "".join(json.dumps({"question": f"Say {i}", "answer": a}) + "\n" for i, a in enumerate(answers)).encode()
    return api(server, "/datasets", files={"file": (f"{name}.jsonl", body)})["dataset"]["id"]


def _finished(server, evaluation_id: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = api(server, f"/evaluations/{evaluation_id}")["status"]
        if status in ("succeeded", "failed", "cancelled", "timeout"):
            assert status == "succeeded", api(server, f"/evaluations/{evaluation_id}").get("error")
            return
        time.sleep(0.5)
    raise AssertionError(f"evaluation {evaluation_id} did not finish in 5 minutes")


@pytest.fixture(scope="module")
def two_models(server):
    endpoint_a, endpoint_b = FakeChatEndpoint(ANSWER_A), FakeChatEndpoint(ANSWER_B)
    try:
        words, phrases = _upload(server, "e2e-words", WORDS), _upload(server, "e2e-phrases", PHRASES)
        model_a = api(server, "/models", {"name": "e2e model A", "kind": "openai", "base_url": endpoint_a.url, "model": "m"})
        model_b = api(server, "/models", {"name": "e2e model B", "kind": "openai", "base_url": endpoint_b.url, "model": "m"})

        def run(model: dict, datasets: list[int], params: dict) -> int:
            created = api(server, "/evaluations", {"name": f"e2e {model['name']}", "model_ids": [model["id"]],
                                                   "dataset_ids": datasets, "params": params})
            _finished(server, created["id"])
            return created["id"]

        # A on both datasets; B on the words, then on the phrases with another sample limit (not comparable).
        a = run(model_a, [words, phrases], {})
        b = run(model_b, [words], {})
        b_limited = run(model_b, [phrases], {"limit": 2})
        yield {"a": a, "b": b, "b_limited": b_limited, "model_a": model_a, "model_b": model_b, "words": words,
               "phrases": phrases}
    finally:
        endpoint_a.close()
        endpoint_b.close()


def test_compare_opens_with_the_latest_comparable_models_and_marks_what_differs(two_models, server, page: Page):
    model_a, model_b = two_models["model_a"], two_models["model_b"]
    # The server's suggestion: the newest results of the two models that share a dataset with the same settings.
    suggestion = api(server, "/compare/suggested")
    assert suggestion["model_ids"] == [model_b["id"], model_a["id"]]
    assert suggestion["evaluation_ids"] == [two_models["b"], two_models["a"]]

    page.goto("/compare")
    expect(page.locator("[data-test=suggested-note]")).to_have_text("Showing the latest comparable evaluations of 2 models.")
    table = page.locator("[data-test=compare-table]")
    expect(table.locator("tbody tr")).to_have_count(2)
    # The words side by side, A (5 of 7) and B (3 of 7); the phrases column compares B's newest result (limit 2).
    expect(table.locator("[data-test=compare-cell]")).to_have_count(3)
    expect(table.locator("[data-test=compare-cell-incomparable]")).to_have_count(1)
    row_a = table.locator("tbody tr", has_text="e2e model A")
    expect(row_a.locator("[data-test=compare-cell]")).to_contain_text("71.43 %")
    expect(row_a.locator("[data-test=compare-cell]")).to_contain_text("n = 7 · contains")
    row_b_cells = table.locator("tbody tr", has_text="e2e model B").locator("[data-test=compare-cell]")
    expect(row_b_cells.nth(0)).to_contain_text("42.86 %")  # the words (the first column)
    expect(row_b_cells.nth(1)).to_contain_text("n = 2 · contains")  # the phrases, limit 2
    # The phrases: B's newest result (limit 2) sets the column; A's (every sample) is marked, with what differs.
    incomparable = row_a.locator("[data-test=compare-cell-incomparable]")
    expect(incomparable).to_contain_text("≠")
    incomparable.hover()
    expect(page.locator("[data-test=incomparable-reason]")).to_contain_text("limit all vs 2")
    expect(page.locator("[data-test=average-note]")).to_contain_text("e2e-words")
    # Rank ranges from the paired bootstrap: 3 samples A-only, 1 B-only of 7 cannot order them for sure.
    board = api(server, f"/compare?model_ids={model_a['id']}&model_ids={model_b['id']}")
    shown = [board["rank_intervals"][str(m["id"])] for m in board["models"]]
    expected = [f"{r['low']}–{r['high']}" if r["low"] != r["high"] else str(r["low"]) for r in shown]
    expect(table.locator("[data-test=rank-range]")).to_have_text(expected)
    assert expected == ["1–2", "1–2"]
    expect(page.locator("[data-test=rank-note]")).to_have_text("Not clearly ordered (their rank ranges overlap): e2e model A, e2e model B.")

    # Two models: a link to their sample-by-sample comparison on the dataset both have comparably, and only that one.
    links = page.locator("[data-test=paired-links] a")
    expect(links).to_have_count(1)
    expect(links).to_have_text("Sample by sample on e2e-words →")
    links.click()
    page.wait_for_url("**/compare/paired?**")
    expect(page.locator("[data-test=paired-row][data-dataset=e2e-words]")).to_be_visible()


def test_paired_view_filters_flips_and_shows_both_answers(two_models, page: Page):
    a, b = two_models["a"], two_models["b"]
    page.goto(f"/compare/paired?a={a}&b={b}")
    row = page.locator("[data-test=paired-row][data-dataset=e2e-words]")
    expect(row.locator("[data-test=paired-counts]")).to_contain_text("only A 3")
    expect(row.locator("[data-test=paired-counts]")).to_contain_text("only B 1")
    expect(page.locator("[data-test=paired-row][data-dataset=e2e-phrases] [data-test=paired-reason]")).to_contain_text(
        "only evaluation A has it")
    samples = page.locator("[data-test=paired-sample]")
    expect(samples).to_have_count(len(ONLY_A) + len(ONLY_B))  # it opens on the samples that changed
    page.click("[data-test=paired-flip-all]")
    expect(samples).to_have_count(len(WORDS))  # every sample, numbered from 1 in dataset order
    assert samples.evaluate_all("rows => rows.map(r => Number(r.dataset.index))") == list(range(1, len(WORDS) + 1))

    page.click("[data-test=paired-flip-a_only]")
    expect(samples).to_have_count(len(ONLY_A))
    expect(page.locator("[data-test=paired-total]")).to_have_text(f"{len(ONLY_A)} samples")
    indexes = [WORDS.index(word) + 1 for word in ONLY_A]
    assert samples.evaluate_all("rows => rows.map(r => Number(r.dataset.index))") == indexes
    for i in range(len(ONLY_A)):
        sample = samples.nth(i)
        # Both answers side by side: A right, B wrong, each with its own prediction.
        expect(sample.locator("[data-test=paired-answer-a]")).to_have_attribute("data-correct", "true")
        expect(sample.locator("[data-test=paired-answer-b]")).to_have_attribute("data-correct", "false")
        expect(sample.locator("[data-test=paired-answer-a] pre")).to_have_text(ANSWER_A)
        expect(sample.locator("[data-test=paired-answer-b] pre")).to_have_text(ANSWER_B)
        boxes = [sample.locator(f"[data-test=paired-answer-{side}]").bounding_box() for side in ("a", "b")]
        assert boxes[0]["x"] < boxes[1]["x"] and abs(boxes[0]["y"] - boxes[1]["y"]) < 2, "side by side on a desktop"

    page.click("[data-test=paired-flip-b_only]")
    expect(samples).to_have_count(1)
    expect(samples.first).to_have_attribute("data-index", str(WORDS.index("zulu") + 1))
    page.click("[data-test=paired-flip-changed]")
    expect(samples).to_have_count(len(ONLY_A) + len(ONLY_B))
    page.click("[data-test=paired-flip-neither]")
    expect(samples).to_have_count(len(NEITHER))
    expect(samples.first.locator("[data-test=paired-answer-a]")).to_have_attribute("data-correct", "false")
