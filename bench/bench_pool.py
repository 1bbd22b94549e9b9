#!/usr/bin/env python
"""Rough measure of the continuous request pool (issue 11; not a timed test): 1,000 QA prompts against the loopback
capacity server (bench/capacity_model_server.py: 0.5 s per answer, 64 at once = 128 requests/s) at concurrency 64,
with OpenCompass' GenInferencer (batch-and-wait, sync openai client) and with oc_pool.ContinuousGenInferencer (async
client, continuous pool). Both build the same dataset, retriever and prompts as OpenICLInferTask does; only the
inference is timed. Each runs in its own process.

    .venv/bin/python bench/bench_pool.py [--rows 1000] [--concurrency 64] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
META = {"round": [{"role": "HUMAN", "api_role": "HUMAN"}, {"role": "BOT", "api_role": "BOT", "generate": True}]}


def run_one(kind: str, data: str, url: str, out: str, concurrency: int) -> None:
    """In a fresh process: build everything as OpenICLInferTask does, time the inference, print JSON."""
    from opencompass.datasets.custom import make_custom_dataset_config
    from opencompass.openicl.icl_inferencer import GenInferencer
    from opencompass.registry import ICL_PROMPT_TEMPLATES, ICL_RETRIEVERS
    from opencompass.utils import build_dataset_from_cfg

    from aieval_engine.oc_ext import SecretKeyOpenAISDK
    from aieval_engine.oc_pool import ContinuousGenInferencer

    cfg = make_custom_dataset_config({"path": data, "abbr": "q", "data_type": "qa", "infer_method": "gen"})
    dataset = build_dataset_from_cfg(cfg)
    retriever = ICL_RETRIEVERS.build({**cfg["infer_cfg"]["retriever"], "dataset": dataset})
    template = ICL_PROMPT_TEMPLATES.build(cfg["infer_cfg"]["prompt_template"])
    model = SecretKeyOpenAISDK(path="m", openai_api_base=url, meta_template=META, max_workers=concurrency,
                               query_per_second=10_000, retry=2)
    inferencer = (ContinuousGenInferencer if kind == "continuous" else GenInferencer)(
        model=model, max_out_len=32, batch_size=concurrency, output_json_filepath=out, output_json_filename="q.json")
    started, cpu = time.perf_counter(), time.process_time()
    predictions = inferencer.inference(retriever, prompt_template=template)
    print(json.dumps({"kind": kind, "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
                      "predictions": len(predictions)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, data, url, out, concurrency = args.one
        run_one(kind, data, url, out, int(concurrency))
        return

    sys.path.insert(0, str(HERE))
    from capacity_model_server import qa_rows, write_jsonl

    from aieval_engine.local_server import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "capacity_model_server.py"), "--port", str(port),
                               "--capacity", str(args.concurrency), "--latency", str(args.latency)])
    capacity = args.concurrency / args.latency
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as scratch:
            data = Path(scratch) / "q.jsonl"
            write_jsonl(data, qa_rows(args.rows))
            print(f"{args.rows} prompts, concurrency {args.concurrency}, server capacity {capacity:g} requests/s "
                  f"(ideal {args.rows / capacity:.1f} s)")
            for kind in ("stock", "continuous"):
                completed = subprocess.run(
                    [sys.executable, __file__, "--one", kind, str(data), f"http://127.0.0.1:{port}/v1",
                     str(Path(scratch) / kind), str(args.concurrency)], capture_output=True, text=True)
                lines = [line for line in completed.stdout.splitlines() if line.startswith('{"kind"')]
                if completed.returncode or not lines:
                    print(kind, "failed:", completed.stderr[-2000:])
                    continue
                result = json.loads(lines[-1])
                share = args.rows / result["wall_s"] / capacity
                print(f"{kind:>10}: wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s, "
                      f"share of capacity {share:.2f}, predictions {result['predictions']}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
