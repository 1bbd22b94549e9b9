"""Real OpenCompass evaluations through the engine, checked against the `opencompass` CLI itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aieval_engine import workdir
from aieval_engine.cli import main as aieval_main
from aieval_engine.demo import DEMO_DATA
from aieval_engine.launchers import ColdLauncher
from aieval_engine.results import iter_samples
from aieval_engine.runner import DataMissingError, Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow
OPENCOMPASS = str(Path(sys.executable).parent / "opencompass")


def tiny_spec(model_dir: Path, name: str = "tiny", limit: int = 6, **params) -> dict:
    return {
        "name": "tiny-run",
        "models": [{"kind": "huggingface", "name": name, "path": str(model_dir), "batch_size": 4}],
        "datasets": [
            {"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")},
            {"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl"), "scorer": "contains"},
        ],
        "params": {"limit": limit, "max_out_len": 16, **params},
    }


def endpoint_spec(base_url: str, datasets: list[dict], limit: int = 6) -> dict:
    return {
        "name": "endpoint-run",
        "models": [{"kind": "openai", "name": "smollm2 endpoint", "base_url": base_url, "model": "smollm2",
                    "concurrency": 4, "query_per_second": 50, "retries": 1}],
        "datasets": datasets,
        "params": {"limit": limit, "max_out_len": 24},
    }


def run_opencompass_cli(config: Path, work_dir: Path, env: dict | None = None) -> Path:
    """Run the plain `opencompass` CLI on a config; return its run dir."""
    completed = subprocess.run(
        [OPENCOMPASS, str(config), "--debug", "-w", str(work_dir)],
        cwd=work_dir.parent, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    runs = sorted(p for p in work_dir.iterdir() if p.is_dir())
    return runs[-1]


def assert_same_as_cli(result, cli_run: Path) -> None:
    assert result.ok, result.error
    assert result.pairs
    for pair in result.pairs:
        ours = json.loads(workdir.results_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text())
        theirs = json.loads(workdir.results_file(cli_run, pair.model_abbr, pair.dataset_abbr).read_text())
        assert round(ours["accuracy"], 2) == round(theirs["accuracy"], 2), pair
        shown = [s.value for s in result.scores if s.dataset_abbr == pair.dataset_abbr and s.metric == "accuracy"]
        assert shown == [theirs["accuracy"]]
        ours_pred = json.loads(workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text())
        theirs_pred = json.loads(workdir.predictions_file(cli_run, pair.model_abbr, pair.dataset_abbr).read_text())
        assert [v["prediction"] for v in ours_pred.values()] == [v["prediction"] for v in theirs_pred.values()]


def test_custom_mcq_and_qa_on_tiny_model_match_the_opencompass_cli(tmp_path, tiny_model_dir, warm_launcher):
    events = []
    evaluation = Evaluation(parse_spec(tiny_spec(tiny_model_dir)), tmp_path / "job", launcher=warm_launcher)
    result = evaluation.run(events.append)

    assert result.status == "succeeded", result.error
    assert {(s.dataset, s.metric, s.dataset_index) for s in result.scores} == {
        ("demo-mcq", "accuracy", 0), ("demo-qa", "accuracy", 1)}
    progress = [e for e in events if e.kind == "progress"]
    assert progress[-1].samples_done == progress[-1].samples_total == 12
    assert [e.stage for e in events][-1] == "succeeded"
    assert any(e.kind == "log" for e in events)
    samples = list(iter_samples(result.run_dir, result.pairs[0].model_abbr, result.pairs[0].dataset_abbr))
    assert len(samples) == 6 and all(s.correct is not None for s in samples)
    assert samples[0].gold == "B" and "capital of France" in json.dumps(samples[0].prompt)
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert manifest["opencompass"] == "0.5.4"
    assert manifest["config_sha256"] == evaluation.built.sha256
    assert manifest["models"][0]["weights"]["content_hashed"] is True

    cli_run = run_opencompass_cli(tmp_path / "job" / "config.py", tmp_path / "cli")
    assert_same_as_cli(result, cli_run)


@pytest.mark.endpoint
def test_endpoint_custom_datasets_match_the_opencompass_cli(tmp_path, llama_server, warm_launcher):
    datasets = [
        {"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")},
        {"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl"), "scorer": "contains"},
    ]
    evaluation = Evaluation(parse_spec(endpoint_spec(llama_server, datasets)), tmp_path / "job", launcher=warm_launcher)
    result = evaluation.run()
    # A real model gets some answers right: the scores are not trivially zero.
    assert result.ok, result.error
    assert max(s.value for s in result.scores) > 0
    # The pool streamed its requests: each answer's first token came before its end.
    for pair in result.pairs:
        samples = list(iter_samples(result.run_dir, pair.model_abbr, pair.dataset_abbr))
        assert samples and all(0 < s.ttft_s < s.latency_s for s in samples), [(s.ttft_s, s.latency_s) for s in samples]
    # The CLI does not stream (OpenCompass' own OpenAISDK): the same predictions and scores.
    cli_run = run_opencompass_cli(tmp_path / "job" / "config.py", tmp_path / "cli")
    assert_same_as_cli(result, cli_run)


@pytest.mark.gsm8k
def test_builtin_gsm8k_slice_matches_the_opencompass_cli(tmp_path, tiny_model_dir, compass_cache_with_gsm8k, warm_launcher):
    spec = parse_spec({
        "models": [{"kind": "huggingface", "name": "tiny", "path": str(tiny_model_dir), "batch_size": 4}],
        "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
        "params": {"limit": 4, "max_out_len": 16},
    })
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=compass_cache_with_gsm8k, launcher=warm_launcher)
    result = evaluation.run()
    assert result.ok, result.error
    assert [(s.dataset_abbr, s.metric, s.dataset_index) for s in result.scores] == [("gsm8k", "accuracy", 0)]
    samples = list(iter_samples(result.run_dir, result.pairs[0].model_abbr, "gsm8k"))
    assert len(samples) == 4
    first_question = json.loads((compass_cache_with_gsm8k / "data" / "gsm8k" / "test.jsonl").open().readline())["question"]
    assert first_question[:40] in json.dumps(samples[0].prompt, ensure_ascii=False)
    cli_run = run_opencompass_cli(tmp_path / "job" / "config.py", tmp_path / "cli",
                                  env={"COMPASS_DATA_CACHE": str(compass_cache_with_gsm8k)})
    assert_same_as_cli(result, cli_run)


def test_missing_builtin_data_fails_fast_with_the_path(tmp_path, tiny_model_dir):
    spec = parse_spec({
        "models": [{"kind": "huggingface", "name": "tiny", "path": str(tiny_model_dir)}],
        "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
    })
    started = time.monotonic()
    with pytest.raises(DataMissingError) as caught:
        Evaluation(spec, tmp_path / "job", data_cache=tmp_path / "empty-cache").run()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert str(tmp_path / "empty-cache" / "data" / "gsm8k") in message and "COMPASS_DATA_CACHE" in message
    assert not (tmp_path / "job" / "outputs").exists()


def processes_in(job_dir: Path) -> list[int]:
    """PIDs whose working directory is the job dir: every OpenCompass process of a run chdirs there."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == job_dir:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def slow_spec(model_dir: Path, **params) -> dict:
    spec = tiny_spec(model_dir, limit=None, **params)
    spec["models"][0]["batch_size"] = 1
    spec["params"]["max_out_len"] = 400
    return spec


@pytest.mark.parametrize("launcher_kind", ["warm", "cold"])
def test_cancel_stops_the_whole_run_and_leaves_no_process(tmp_path, tiny_model_dir, warm_launcher, launcher_kind):
    launcher = warm_launcher if launcher_kind == "warm" else ColdLauncher()
    job = tmp_path / "job"
    evaluation = Evaluation(parse_spec(slow_spec(tiny_model_dir, workers=1)), job, launcher=launcher)
    started_inference = threading.Event()
    evaluation_result = {}

    def on_event(event):
        if event.kind == "progress" and event.samples_done > 0:
            started_inference.set()

    thread = threading.Thread(target=lambda: evaluation_result.setdefault("r", evaluation.run(on_event)))
    thread.start()
    assert started_inference.wait(120), "inference never started"
    assert processes_in(job.resolve())
    cancelled_at = time.monotonic()
    evaluation.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 10
    assert evaluation_result["r"].status == "cancelled"
    time.sleep(0.5)
    assert processes_in(job.resolve()) == []


def test_timeout_stops_the_run(tmp_path, tiny_model_dir, warm_launcher):
    job = tmp_path / "job"
    result = Evaluation(parse_spec(slow_spec(tiny_model_dir, timeout_s=4)), job, launcher=warm_launcher).run()
    assert result.status == "timeout" and "time limit" in result.error
    time.sleep(0.5)
    assert processes_in(job.resolve()) == []


def test_a_killed_run_resumes_from_its_predictions_with_the_same_scores(tmp_path, tiny_model_dir, warm_launcher):
    spec = parse_spec(slow_spec(tiny_model_dir))
    reference = Evaluation(spec, tmp_path / "reference", launcher=warm_launcher).run()
    assert reference.ok, reference.error

    job = tmp_path / "job"
    crashed = Evaluation(spec, job, launcher=warm_launcher)
    crashed.prepare()
    process = warm_launcher.start(str(crashed.job_dir), crashed._argv(resume=False), {}, spec.params.seed)
    deadline = time.monotonic() + 120
    partial = None
    while time.monotonic() < deadline:
        run_dir = workdir.latest_run_dir(crashed.job_dir)
        if run_dir is not None:
            done = [workdir.predictions_done(run_dir, "tiny", d) for d in ("demo-mcq", "demo-qa")]
            if (done[0] or 0) >= 3:
                partial = done
                break
        time.sleep(0.05)
    assert partial, "the run never produced predictions"
    os.killpg(process.pid, signal.SIGKILL)  # a crash: no chance to clean up
    while process.poll() is None:
        time.sleep(0.05)
    assert not workdir.results_file(run_dir, "tiny", "demo-qa").exists(), "the run finished before the crash"

    resumed = Evaluation(spec, job, launcher=warm_launcher).run(resume=True)
    assert resumed.ok, resumed.error
    assert resumed.run_dir == run_dir  # the same OpenCompass run, continued
    log = (job / "run.log").read_text()
    assert "Reusing experiements from" in log
    assert resumed.score_table() == reference.score_table()
    for pair in resumed.pairs:
        ours = [s.prediction for s in iter_samples(resumed.run_dir, pair.model_abbr, pair.dataset_abbr)]
        theirs = [s.prediction for s in iter_samples(reference.run_dir, pair.model_abbr, pair.dataset_abbr)]
        assert ours == theirs


def test_a_failing_endpoint_is_reported_with_its_cause(tmp_path, warm_launcher, unused_port):
    spec = parse_spec({
        "models": [{"kind": "openai", "name": "unreachable", "base_url": f"http://127.0.0.1:{unused_port}/v1",
                    "model": "m", "retries": 0, "timeout": 5}],
        "datasets": [{"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl")}],
        "params": {"limit": 2},
    })
    result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher).run()
    # OpenCompass itself would exit 0 here; the engine must still call it a failure.
    assert result.status == "failed"
    assert "unreachable/demo-qa" in result.error and "Calling OpenAI API failed" in result.error
    assert "Traceback" in result.log_excerpt
    assert result.scores == []


HOSTILE = "x'''\"\"\"; __import__('os').system('touch CANARY') #"


def test_hostile_names_run_as_plain_data(tmp_path, tiny_model_dir, warm_launcher):
    data = tmp_path / "evil ' name.jsonl"
    data.write_text((DEMO_DATA / "demo_mcq.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    spec = parse_spec({
        "models": [{"kind": "huggingface", "name": HOSTILE.replace("CANARY", str(tmp_path / "m")), "path": str(tiny_model_dir)}],
        "datasets": [{"kind": "custom", "name": HOSTILE.replace("CANARY", str(tmp_path / "d")), "path": str(data)}],
        "params": {"limit": 2, "max_out_len": 4},
    })
    result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher).run()
    assert result.ok, result.error
    assert result.scores[0].model == spec.models[0].name and result.scores[0].dataset == spec.datasets[0].name
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()


def test_cli_run_prints_json_results_and_exit_codes(tmp_path, tiny_model_dir, capsys):
    import yaml

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(tiny_model_dir, limit=2)))
    code = aieval_main(["--data-dir", str(tmp_path / "data"), "run", str(spec_file), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    results = json.loads(out)
    assert results["status"] == "succeeded"
    assert {s["dataset"] for s in results["scores"]} == {"demo-mcq", "demo-qa"}

    bad = tmp_path / "bad.yaml"
    bad.write_text("models: []\ndatasets: [{kind: builtin, config: 'no such; thing'}]\n")
    assert aieval_main(["--data-dir", str(tmp_path / "data"), "run", str(bad)]) == 2
