"""params.slurm: the generated config hands the tasks to OpenCompass' own SlurmRunner, with the site's Slurm settings as
inert constants. SlurmRunner writes partition, QOS, quota type and extra arguments into a shell command line
(`subprocess.run(cmd, shell=True)`), so anything a shell would read as more than a word is refused before it gets
there. The runs themselves are in tests/integration/engine/test_slurm_runner.py."""

from __future__ import annotations

import ast
import json

import pytest

from aieval_engine.config_builder import build_config
from aieval_engine.slurm import slurm_job_comment
from aieval_engine.spec import SLURM_ARG, SpecError, parse_spec


def spec_with(tmp_path, slurm: dict | None, workers: int = 1):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    params = {"workers": workers, **({"slurm": slurm} if slurm is not None else {})}
    return parse_spec({
        "models": [{"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "m"},
                   {"kind": "huggingface", "name": "hf", "path": "/models/tiny"}],
        "datasets": [{"kind": "custom", "name": "qa", "path": str(data)}],
        "params": params,
    })


def runner_sections(text: str) -> dict[str, ast.Dict]:
    """The `runner` dict of each stage, as parsed source (never executed)."""
    sections = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in (
                "infer", "eval"):
            stage = dict(zip([k.value for k in node.value.keys], node.value.values, strict=True))
            sections[node.targets[0].id] = stage["runner"]
    return sections


def test_without_slurm_the_config_keeps_the_local_runner(tmp_path):
    built = build_config(spec_with(tmp_path, None), tmp_path / "job")
    assert "SlurmRunner" not in built.text
    for runner in runner_sections(built.text).values():
        assert isinstance(runner.values[0], ast.Name) and runner.values[0].id == "LocalRunner"


def test_slurm_settings_reach_slurm_runner_as_constants(tmp_path):
    from mmengine.config import Config
    from opencompass.registry import RUNNERS
    from opencompass.runners import SlurmRunner

    slurm = {"partition": "gpu-a100", "qos": "high", "quotatype": "reserved", "retry": 1,
             "extra_args": ["--time=02:00:00", "-c", "4", "--constraint=a100", "--mem=16G"]}
    job_dir = tmp_path / "job"
    built = build_config(spec_with(tmp_path, slurm, workers=3), job_dir)

    sections = runner_sections(built.text)
    assert set(sections) == {"infer", "eval"}
    for runner in sections.values():
        for key, value in zip(runner.keys, runner.values, strict=True):
            if key.value == "type":
                assert value.id == "SlurmRunner"
            elif key.value != "task":  # every Slurm setting is a literal: a constant or a list of constants
                ast.literal_eval(value)
    assert "from opencompass.runners import SlurmRunner" in built.text
    assert "LocalRunner" not in built.text

    cfg = Config.fromfile(str(built.path), format_python_code=False)  # as OpenCompass loads it
    comment = f"--comment={slurm_job_comment(job_dir)}"
    for stage, task in (("infer", "PooledInferTask"), ("eval", "OpenICLEvalTask")):
        runner_cfg = cfg[stage]["runner"]
        assert runner_cfg["task"]["type"].__name__ == task  # the project's infer task, named as before
        runner = RUNNERS.build(runner_cfg)
        assert isinstance(runner, SlurmRunner)
        assert (runner.partition, runner.qos, runner.quotatype, runner.retry, runner.max_num_workers) == (
            "gpu-a100", "high", "reserved", 1, 3)
        assert runner.extra_command == [*slurm["extra_args"], comment]
        assert all(SLURM_ARG.match(arg) for arg in runner.extra_command)


def test_each_run_marks_its_jobs_with_its_own_comment(tmp_path):
    one, other = slurm_job_comment(tmp_path / "job-1"), slurm_job_comment(tmp_path / "job-2")
    assert one != other and one == slurm_job_comment(tmp_path / "job-1" / ".." / "job-1")
    assert SLURM_ARG.match(f"--comment={one}")


@pytest.mark.parametrize("field, value", [
    ("partition", "gpu; touch /tmp/pwned"),
    ("partition", "gpu$(id)"),
    ("partition", "'gpu'"),
    ("partition", "gpu\nid"),
    ("partition", "-p"),
    ("qos", "high && id"),
    ("quotatype", "a|b"),
    ("quotatype", ""),
    ("extra_args", ["--time=01:00:00 --wrap=id"]),
    ("extra_args", ["--export=ALL,X=`id`"]),
    ("extra_args", ["-o", "/tmp/x>y"]),
    ("extra_args", ["--comment='x'"]),
    ("extra_args", ["\\"]),
    ("extra_args", [""]),
    ("retry", 6),
])
def test_what_a_shell_would_read_as_more_than_a_word_is_refused(tmp_path, field, value):
    with pytest.raises(SpecError) as caught:
        spec_with(tmp_path, {field: value})
    assert any(problem.startswith(f"params.slurm.{field}") for problem in caught.value.problems), caught.value
