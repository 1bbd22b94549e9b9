"""Web UI benchmark: production bundle size, and time to first render of the evaluations list with 1,000
evaluations in the database, in headless Chromium against a real `aieval serve`.

    .venv/bin/python bench/bench_web.py [--count 1000] [--runs 5] [--build]

Bundle: every JS/CSS file in apps/web/dist/assets, raw and gzip (level 6, like typical servers), their total,
the largest chunk, and what the first page load needs (the files index.html references). First render: from
navigation start (performance.now() = 0) to the first evaluation row in the DOM, cold (new browser context:
empty cache) and warm (same context, reload). The rows are inserted through the server's own DB layer (the
seeding used by bench_api.py), the server runs with --no-worker so nothing changes under the measurement.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "apps" / "web" / "dist"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))


def bundle_figures() -> dict:
    files = sorted(p for p in (DIST / "assets").iterdir() if p.suffix in (".js", ".css"))
    sizes = {p.name: (p.stat().st_size, len(gzip.compress(p.read_bytes(), 6))) for p in files}
    index = (DIST / "index.html").read_text()
    initial = set(re.findall(r'(?:src|href)="\./assets/([^"]+)"', index))
    largest = max(sizes.items(), key=lambda item: item[1][1])
    return {
        "files": len(sizes),
        "total_raw_kb": round(sum(r for r, _ in sizes.values()) / 1024, 1),
        "total_gzip_kb": round(sum(g for _, g in sizes.values()) / 1024, 1),
        "js_gzip_kb": round(sum(g for n, (_, g) in sizes.items() if n.endswith(".js")) / 1024, 1),
        "largest_chunk": largest[0],
        "largest_raw_kb": round(largest[1][0] / 1024, 1),
        "largest_gzip_kb": round(largest[1][1] / 1024, 1),
        "initial_load_files": sorted(initial),
        "initial_load_gzip_kb": round(sum(sizes[n][1] for n in initial if n in sizes) / 1024, 1),
        "echarts_gzip_kb": round(sum(g for n, (_, g) in sizes.items() if n.startswith("echarts")) / 1024, 1),
    }


FIRST_ROW = "[data-test=evaluations-table] tbody tr[data-evaluation-id]"


# Installed before any page script: notes the moment the first evaluation row enters the DOM and the next
# frame after it (when it is painted), without the test driver's polling in the measurement.
WATCH_FIRST_ROW = """
new MutationObserver((_, observer) => {
  if (document.querySelector('%s')) {
    observer.disconnect();
    window.__firstRowInDom = performance.now();
    requestAnimationFrame(() => { window.__firstRowPainted = performance.now(); });
  }
}).observe(document, { childList: true, subtree: true });
""" % FIRST_ROW  # noqa: UP031 (JavaScript braces make str.format awkward)


def first_render_ms(page) -> tuple[float, float, float]:
    """(first row painted, list request sent, list response received), ms since navigation start."""
    page.wait_for_function("window.__firstRowPainted !== undefined", timeout=30_000)
    painted = page.evaluate("window.__firstRowPainted")
    request = page.evaluate("""performance.getEntriesByType('resource')
        .filter(e => /\\/api\\/v1\\/evaluations\\?/.test(e.name)).map(e => [e.startTime, e.responseEnd])[0] || [0, 0]""")
    return painted, request[0], request[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="run `npm run build` in apps/web first")
    args = parser.parse_args()
    if args.build:
        subprocess.run(["npm", "run", "build"], cwd=DIST.parent, check=True)
    if not (DIST / "index.html").is_file():
        sys.exit("apps/web/dist is missing: run `npm ci && npm run build` in apps/web (or pass --build)")

    bundle = bundle_figures()
    print("== production bundle (apps/web/dist) ==")
    print(f"files: {bundle['files']}  total: {bundle['total_raw_kb']} KB raw, {bundle['total_gzip_kb']} KB gzip "
          f"(JS {bundle['js_gzip_kb']} KB gzip)")
    print(f"largest chunk: {bundle['largest_chunk']}  {bundle['largest_raw_kb']} KB raw, {bundle['largest_gzip_kb']} KB gzip")
    print(f"first page load (index.html's own files): {bundle['initial_load_gzip_kb']} KB gzip; "
          f"ECharts (loaded only with a chart): {bundle['echarts_gzip_kb']} KB gzip")

    from bench_api import seed_database
    from harness import Server, free_port, launch_chromium
    from playwright.sync_api import sync_playwright

    data_dir = Path(tempfile.mkdtemp(prefix="aieval-bench-web-"))
    server = None
    try:
        seed_database(f"sqlite:///{data_dir / 'aieval.db'}", args.count, data_dir)
        server = Server(data_dir, free_port(), data_dir / "serve.log", worker=False)
        server.wait_ready()
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                cold, warm = [], []
                for _ in range(args.runs):
                    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US")
                    context.add_init_script(WATCH_FIRST_ROW)
                    page = context.new_page()
                    page.goto(f"{server.url}/evaluations")
                    cold.append(first_render_ms(page))
                    total = page.locator(".pager .muted").inner_text()
                    page.reload()
                    warm.append(first_render_ms(page))
                    context.close()
            finally:
                browser.close()
        print(f"\n== evaluations list, first render ({total.strip()} in the DB, page of 20; {args.runs} runs) ==")
        for label, runs in (("cold (empty cache)", cold), ("warm (cached assets)", warm)):
            painted = [r[0] for r in runs]
            sent = statistics.median(r[1] for r in runs)
            api_ms = statistics.median(r[2] - r[1] for r in runs)
            print(f"{label}: first row painted median {statistics.median(painted):.0f} ms (min {min(painted):.0f}, "
                  f"max {max(painted):.0f}); list request sent at {sent:.0f} ms, answered in {api_ms:.0f} ms")
        cold = [r[0] for r in cold]
        warm = [r[0] for r in warm]
        print(json.dumps({"bundle": {k: v for k, v in bundle.items() if k != "initial_load_files"},
                          "first_render_ms": {"cold_median": round(statistics.median(cold)),
                                              "warm_median": round(statistics.median(warm)), "evaluations": args.count}}))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
