#!/usr/bin/env python
"""Leaderboard benchmark (issue 10): the time of GET /leaderboard with rank intervals, whose bootstrap reads every
averaged score's per-sample verdicts from the stored run outputs.

    python bench/bench_leaderboard.py [--models 10] [--datasets 5] [--samples 200] [--repeat 5]

Seeds a fresh SQLite data dir with one finished evaluation per model x dataset (scores, fingerprints, and the
OpenCompass prediction and result files the sample browser reads), then times the request in-process. The first
request also copies the files into the server's cache (local storage: a read of the stored file).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient


def seed(settings, models: int, datasets: int, samples: int) -> None:
    from aieval_server.db import session_scope
    from aieval_server.models import Dataset, Evaluation, Model, Score
    from aieval_server.storage import get_storage

    storage = get_storage(settings)
    rng = random.Random(0)
    scratch = Path(tempfile.mkdtemp(prefix="bench-leaderboard-"))
    with session_scope(settings.database_url) as session:
        model_rows = [Model(name=f"model-{m}", kind="openai", settings={}) for m in range(models)]
        dataset_rows = [Dataset(name=f"dataset-{d}", kind="custom") for d in range(datasets)]
        session.add_all([*model_rows, *dataset_rows])
        session.flush()
        for m, model in enumerate(model_rows):
            skill = 0.3 + 0.4 * m / max(1, models - 1)
            for dataset in dataset_rows:
                verdicts = [rng.random() < skill for _ in range(samples)]
                evaluation = Evaluation(name=f"{model.name} x {dataset.name}", status="succeeded", params={},
                                        queue="api", artifacts_stored=True, run_dir_name="run")
                session.add(evaluation)
                session.flush()
                prefix = f"evaluations/{evaluation.id}/outputs/run"
                predictions = {str(i): {"origin_prompt": f"q{i}", "prediction": "a", "gold": "a" if v else "b"}
                               for i, v in enumerate(verdicts)}
                results = {"accuracy": 100 * sum(verdicts) / samples,
                           "details": [{"pred": "a", "answer": "a" if v else "b", "correct": v} for v in verdicts]}
                for kind, body in (("predictions", predictions), ("results", results)):
                    local = scratch / f"{evaluation.id}-{kind}.json"
                    local.write_text(json.dumps(body), encoding="utf-8")
                    storage.put_file(f"{prefix}/{kind}/{model.name}/{dataset.name}.json", local)
                session.add(Score(evaluation_id=evaluation.id, model_id=model.id, dataset_id=dataset.id,
                                  model_name=model.name, dataset_name=dataset.name, model_abbr=model.name,
                                  dataset_abbr=dataset.name, metric="accuracy", value=results["accuracy"],
                                  n=samples, correct=sum(verdicts), scorer="exact",
                                  fingerprint=f"{dataset.id:016d}", fingerprint_parts={"data": str(dataset.id)}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from aieval_server.config import Settings
    from aieval_server.main import create_app

    data_dir = Path(tempfile.mkdtemp(prefix="bench-leaderboard-data-"))
    settings = Settings(data_dir=data_dir, register_demo=False, web_dist=data_dir / "no-web",
                        trusted_hosts=[*Settings.model_fields["trusted_hosts"].default, "testserver"])
    with TestClient(create_app(settings)) as client:
        seed(settings, args.models, args.datasets, args.samples)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            board = client.get("/api/v1/leaderboard").json()
            times.append(time.perf_counter() - start)
        ranges = [(board["rank_intervals"][str(m["id"])]["low"], board["rank_intervals"][str(m["id"])]["high"])
                  for m in board["models"]]
    print(f"{args.models} models x {args.datasets} datasets x {args.samples} samples, "
          f"{board['rank_resamples']} resamples: first {times[0] * 1000:.0f} ms, "
          f"median of the rest {statistics.median(times[1:] or times) * 1000:.0f} ms")
    print("rank ranges, best first:", ranges)
    return 0


if __name__ == "__main__":
    sys.exit(main())
