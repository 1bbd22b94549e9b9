"""cli: `aieval check` and `aieval datasets` (no evaluation is run), plus the demo spec."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from aieval_engine import cli
from aieval_engine.config_builder import plan_datasets
from aieval_engine.demo import DEMO_DATA, demo_datasets, demo_endpoint_model, demo_model_dir, demo_spec
from aieval_engine.spec import parse_spec


def write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("COMPASS_DATA_CACHE", raising=False)
    monkeypatch.delenv("AIEVAL_DATA_DIR", raising=False)
    return tmp_path / "aieval-data"


def test_check_valid_spec(tmp_path, data_dir, hf_model_dir, qa_file, mcq_file, capsys, monkeypatch):
    spec = write_spec(
        tmp_path,
        {
            "name": "my check",
            "models": [{"kind": "huggingface", "name": "tiny", "path": "./models/tiny"}],  # relative to the spec
            "datasets": [
                {"kind": "custom", "name": "qa", "path": "data/qa.jsonl", "scorer": "contains"},
                {"kind": "custom", "name": "mcq", "path": str(mcq_file), "infer_method": "ppl"},
            ],
        },
    )
    assert qa_file.exists() and hf_model_dir == tmp_path / "models" / "tiny"
    seen = {}
    prepare = cli.Evaluation.prepare

    def spy(self):  # what check validated, read before its scratch folder goes away
        built = prepare(self)
        seen.update(job_dir=self.job_dir, config=built.text, datasets=built.datasets,
                    meta=json.loads((self.job_dir / "job.json").read_text(encoding="utf-8")))  # fmt: skip
        return built

    monkeypatch.setattr(cli.Evaluation, "prepare", spy)
    assert cli.main(["--data-dir", str(data_dir), "check", str(spec)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "ok: 1 model(s) x 2 dataset(s), data present" in out.replace("\n", "")
    assert "config" not in out  # no config path: nothing is left behind to look at
    assert not (data_dir / "jobs").exists() and not seen["job_dir"].exists()
    assert not seen["job_dir"].is_relative_to(data_dir)
    config = seen["config"]
    assert str(hf_model_dir.resolve()) in config  # ./models/tiny resolved against the spec's folder
    assert [d.spec.path for d in seen["datasets"]] == [str(qa_file.resolve()), str(mcq_file)]
    for d in seen["datasets"]:  # the custom files were validated and copied (inside the scratch folder)
        assert str(d.evaluated_path.resolve()) in config and d.evaluated_path.is_relative_to(seen["job_dir"])
    assert sorted(seen["meta"]["custom_datasets"].values()) == ["mcq", "qa"]


def test_check_broken_spec_lists_every_problem(tmp_path, data_dir, capsys):
    spec = write_spec(
        tmp_path,
        {
            "models": [
                {"kind": "openai", "name": "api", "base_url": "ftp://example.com", "model": "m"},
                {"kind": "huggingface", "name": "api", "path": "/m", "dtype": "int4"},
            ],
            "datasets": [{"kind": "custom", "name": "d", "path": "d.txt"}],
            "params": {"limit": 0},
        },
    )
    assert cli.main(["--data-dir", str(data_dir), "check", str(spec)]) == cli.EXIT_INVALID
    out = " ".join(capsys.readouterr().out.split())  # rich may wrap long lines
    assert "error: models.0.openai.base_url: must be an http:// or https:// URL with a host" in out
    assert "error: models.1.huggingface.dtype:" in out
    assert "error: datasets.0.custom.path: must be a .jsonl or .csv file" in out
    assert "error: params.limit: Input should be greater than or equal to 1" in out
    assert "Traceback" not in out
    assert not (data_dir / "jobs").exists()


def test_check_reports_bad_data_model_and_missing_builtin_data(tmp_path, data_dir, hf_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": "q"\n', encoding="utf-8")
    spec = write_spec(
        tmp_path,
        {
            "models": [{"kind": "huggingface", "name": "tiny", "path": str(hf_model_dir)}],
            "datasets": [{"kind": "custom", "name": "bad", "path": str(bad)}],
        },
    )
    assert cli.main(["--data-dir", str(data_dir), "check", str(spec)]) == cli.EXIT_INVALID
    out = " ".join(capsys.readouterr().out.split())
    assert "error: datasets[0] (bad): line 2: not valid JSON" in out

    spec = write_spec(
        tmp_path,
        {
            "models": [{"kind": "huggingface", "name": "tiny", "path": str(tmp_path / "no-model")}],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
        },
        "spec2.yaml",
    )
    assert cli.main(["--data-dir", str(data_dir), "check", str(spec)]) == cli.EXIT_INVALID
    assert "no Hugging Face checkpoint at" in " ".join(capsys.readouterr().out.split())

    spec = write_spec(
        tmp_path,
        {
            "models": [{"kind": "huggingface", "name": "tiny", "path": str(hf_model_dir)}],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
        },
        "spec3.yaml",
    )
    assert cli.main(["--data-dir", str(data_dir), "check", str(spec)]) == cli.EXIT_INVALID
    out = "".join(capsys.readouterr().out.split())  # paths may be wrapped anywhere
    assert "thedataofbuilt-indataset'gsm8k_gen'isnotpresent" in out
    assert f"missing{data_dir / 'compass' / 'data' / 'gsm8k'}" in out
    assert f"COMPASS_DATA_CACHE={data_dir / 'compass'}" in out
    assert not (data_dir / "jobs").exists()  # check leaves no job folder behind, failed or not


def test_check_unreadable_spec(tmp_path, data_dir, capsys):
    assert cli.main(["--data-dir", str(data_dir), "check", str(tmp_path / "nope.yaml")]) == cli.EXIT_INVALID
    assert "error: cannot read" in capsys.readouterr().out


def test_datasets_lists_builtin_configs(data_dir, capsys):
    assert cli.main(["--data-dir", str(data_dir), "datasets"]) == cli.EXIT_OK
    names = capsys.readouterr().out.splitlines()
    assert "gsm8k_gen" in names and names == sorted(names) and len(names) > 500


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # in OpenCompass' own configs
def test_datasets_available_only_lists_present_data(data_dir, capsys):
    assert cli.main(["--data-dir", str(data_dir), "datasets", "--available"]) == cli.EXIT_OK
    assert "gsm8k_gen" not in capsys.readouterr().out.splitlines()
    gsm8k = data_dir / "compass" / "data" / "gsm8k"
    gsm8k.mkdir(parents=True)
    (gsm8k / "test.jsonl").write_text("{}\n")
    assert cli.main(["--data-dir", str(data_dir), "datasets", "--available"]) == cli.EXIT_OK
    available = capsys.readouterr().out.splitlines()
    assert "gsm8k_gen" in available and "mathbench_prompt" not in available


def test_data_dirs_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("COMPASS_DATA_CACHE", raising=False)
    assert cli.default_data_dir() == tmp_path / "d"
    assert cli.compass_data_cache(tmp_path / "d") == tmp_path / "d" / "compass"
    monkeypatch.setenv("COMPASS_DATA_CACHE", str(tmp_path / "c"))
    assert cli.compass_data_cache(tmp_path / "d") == tmp_path / "c"


def test_new_job_dir_names_are_safe(tmp_path):
    job = cli._new_job_dir(tmp_path, "../../etc/passwd 'x' 模型" + "y" * 60)
    assert job.parent == tmp_path / "jobs"
    assert re.fullmatch(r"[A-Za-z0-9_\-模型]+", job.name)
    assert cli._new_job_dir(tmp_path, "").name.startswith("evaluation-")  # never empty


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main([])


# ---- demo ---------------------------------------------------------------------------------------------


def test_demo_data_is_valid_and_bilingual():
    planned = plan_datasets(parse_spec({"models": [{"kind": "huggingface", "name": "m", "path": "/m"}],
                                        "datasets": [d.model_dump() for d in demo_datasets()]}))  # fmt: skip
    mcq, qa = planned
    assert (mcq.spec.name, mcq.rows, qa.spec.name, qa.spec.scorer) == ("demo-mcq", mcq.rows, "demo-qa", "contains")
    assert mcq.rows >= 5 and qa.rows >= 5
    text = (DEMO_DATA / "demo_qa.jsonl").read_text(encoding="utf-8") + (DEMO_DATA / "demo_mcq.jsonl").read_text(encoding="utf-8")
    assert re.search(r"[\u4e00-\u9fff]", text), "the demo data should include Chinese questions"


def test_demo_spec(tmp_path):
    spec = demo_spec(tmp_path, limit=3)
    assert spec.params.limit == 3 and spec.params.max_out_len == 32
    (model,) = spec.models
    assert model.path == str(demo_model_dir(tmp_path)) == str(tmp_path / "models" / "SmolLM2-135M-Instruct")
    assert [d.name for d in spec.datasets] == ["demo-mcq", "demo-qa"]
    endpoint = demo_endpoint_model("http://127.0.0.1:8080/v1")
    assert (endpoint.name, endpoint.model, endpoint.base_url) == ("smollm2 (endpoint)", "smollm2", "http://127.0.0.1:8080/v1/")


def test_run_with_an_invalid_spec_starts_nothing(tmp_path, data_dir, capsys):
    spec = write_spec(
        tmp_path,
        {
            "models": [{"kind": "huggingface", "name": "tiny", "path": str(tmp_path / "absent")}],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
        },
    )
    job = tmp_path / "job"
    assert cli.main(["--data-dir", str(data_dir), "run", str(spec), "--job-dir", str(job)]) == cli.EXIT_INVALID
    out = " ".join(capsys.readouterr().out.split())
    assert "error: models[0] (tiny): no Hugging Face checkpoint at" in out
    assert not (job / "run.log").exists() and not (job / "outputs").exists()
    broken = tmp_path / "broken.json"
    broken.write_text("{}", encoding="utf-8")
    assert cli.main(["--data-dir", str(data_dir), "run", "--json", str(broken)]) == cli.EXIT_INVALID


def test_print_results(tmp_path):
    from rich.console import Console

    from aieval_engine.results import EvalResult, PairOutcome, Score

    scores = [Score("Model A", "a", "qa", "qa", "accuracy", 62.5), Score("Model B", "b", "qa", "qa", "accuracy", 50.0),
              Score("Model A", "a", "mcq", "mcq", "accuracy", 100.0)]  # fmt: skip
    result = EvalResult("failed", tmp_path, tmp_path / "run", scores=scores, pairs=[PairOutcome("b", "mcq", False)],
                        error="1 of 4 tasks failed: b/mcq", log_excerpt="Traceback (most recent call last):\nKeyError: 'x'")  # fmt: skip
    console = Console(record=True, width=200, color_system=None)
    cli.print_results(console, result)
    text = console.export_text()
    assert "Results (failed)" in text
    header = next(line for line in text.splitlines() if "dataset" in line and "metric" in line)
    assert header.index("Model A") < header.index("Model B")
    mcq_row = next(line for line in text.splitlines() if "mcq" in line)
    assert "100.00" in mcq_row and mcq_row.rstrip(" │|").endswith("-")  # Model B has no mcq score
    assert "62.50" in text and "50.00" in text
    assert "1 of 4 tasks failed: b/mcq" in text and "KeyError: 'x'" in text
    assert f"Artifacts: {tmp_path / 'run'}" in text


def test_a_plugin_command_that_fails_to_load_leaves_the_others_working(monkeypatch, capsys):
    from aieval_engine import cli

    class BrokenEntryPoint:
        name = "broken"

        def load(self):
            raise ImportError("cannot import name 'add_broken_command'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [BrokenEntryPoint()])
    parser = cli.build_parser()
    assert parser.parse_args(["check", "spec.yaml"]).command == "check"
    assert "the 'broken' command is unavailable (ImportError" in capsys.readouterr().err
