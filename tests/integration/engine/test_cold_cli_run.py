"""A cold `aieval run` of an endpoint evaluation (issue 11: its first request early): the command starts OpenCompass'
process before it reads the spec (launchers.ColdLauncher.prestart), hands it the run once the job is written, and the
run predicts byte for byte what the `opencompass` CLI predicts on the stock config, against an endpoint whose answers
hash the exact request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint
from pool_inference import write_questions

from aieval_engine import workdir
from aieval_engine.cli import main as aieval_main
from aieval_engine.config_builder import build_config
from aieval_engine.launchers import ColdLauncher
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow
SECRET = "sk-cold-start-SECRET-4711"


def test_a_cold_cli_run_is_run_by_the_process_started_first_and_predicts_what_the_opencompass_cli_predicts(
        tmp_path, monkeypatch, capsys):
    data = write_questions(tmp_path / "data" / "q.jsonl", 12)
    endpoint = BodyHashEndpoint(latency_s=0.02)
    handed: list[tuple[int | None, int]] = []  # (the prestarted process, the process the run went to)
    original_start = ColdLauncher.start

    def start(self, *args, **kwargs):
        waiting = self._waiting.pid if self._waiting is not None else None
        process = original_start(self, *args, **kwargs)
        handed.append((waiting, process.pid))
        return process

    monkeypatch.setattr(ColdLauncher, "start", start)
    # The key travels over the pipe, as the fork server is given it; answers hash it, so the CLI's (given the key)
    # match only if the run had it.
    monkeypatch.setenv("COLD_START_KEY", SECRET)
    try:
        raw = {
            "models": [{"kind": "openai", "name": "hashing", "base_url": endpoint.url, "model": "m",
                        "api_key_env": "COLD_START_KEY", "concurrency": 4, "query_per_second": 1000, "retries": 2}],
            "datasets": [{"kind": "custom", "name": "questions", "path": str(data), "scorer": "contains"}],
            "params": {"max_out_len": 16},
        }
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(raw), encoding="utf-8")
        job = tmp_path / "job"
        code = aieval_main(["--data-dir", str(tmp_path / "aieval"), "run", str(spec_file), "--json",
                            "--no-prediction-cache", "--job-dir", str(job)])
        out = capsys.readouterr().out
        assert code == 0, out
        result = json.loads(out)
        assert result["status"] == "succeeded"
        ((waiting, ran),) = handed
        assert waiting is not None and waiting == ran
        log = (job / "run.log").read_text(errors="replace")
        assert "continuous pool" in log and SECRET not in log

        stock = build_config(parse_spec(raw), tmp_path / "stock", {"COLD_START_KEY": SECRET},
                             quick_pipeline=False)
        cli_dir = tmp_path / "cli"
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "opencompass"), str(stock.path), "--debug", "-w", str(cli_dir)],
            cwd=stock.path.parent, capture_output=True, text=True, timeout=900,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **stock.secret_env})
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        (cli_run,) = [p for p in cli_dir.iterdir() if p.is_dir()]
        run_dir = workdir.latest_run_dir(job)
        (pair,) = result["pairs"]
        ours = workdir.predictions_file(run_dir, pair["model_abbr"], pair["dataset_abbr"]).read_bytes()
        theirs = workdir.predictions_file(cli_run, pair["model_abbr"], pair["dataset_abbr"]).read_bytes()
        assert ours == theirs and len(json.loads(ours)) == 12
    finally:
        endpoint.close()
