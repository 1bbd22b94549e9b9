"""AIEVAL_RUNNER=slurm: a worker's runs hand their tasks to Slurm (the engine's params.slurm). The settings are checked
when the process starts, with the setting's name in the message; the spec a job was submitted with is untouched, and
the worker running it adds its own way of running tasks."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from aieval_engine.launchers import ColdLauncher
from aieval_engine.spec import parse_spec


def test_a_slurm_worker_gets_its_settings_split_and_checked(tmp_path, monkeypatch):
    from aieval_server.config import Settings

    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path))
    assert Settings().runner == "local" and Settings().slurm_spec() is None
    monkeypatch.setenv("AIEVAL_RUNNER", "slurm")
    monkeypatch.setenv("AIEVAL_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("AIEVAL_SLURM_QOS", "normal")
    monkeypatch.setenv("AIEVAL_SLURM_EXTRA_ARGS", "--time=04:00:00 -c 8  --constraint=a100")
    monkeypatch.setenv("AIEVAL_SLURM_RETRY", "0")
    slurm = Settings().slurm_spec()
    assert slurm.model_dump() == {"partition": "gpu", "qos": "normal", "quotatype": None,
                                  "extra_args": ["--time=04:00:00", "-c", "8", "--constraint=a100"], "retry": 0}


@pytest.mark.parametrize("name, value, message", [
    ("AIEVAL_SLURM_PARTITION", "gpu;reboot", "AIEVAL_SLURM_PARTITION: must be a Slurm name"),
    ("AIEVAL_SLURM_EXTRA_ARGS", "--wrap='$(id)'", "AIEVAL_SLURM_EXTRA_ARGS: '--wrap=$(id)' is not accepted"),
    ("AIEVAL_SLURM_EXTRA_ARGS", "--time=1 'unclosed", "AIEVAL_SLURM_EXTRA_ARGS: No closing quotation"),
    ("AIEVAL_SLURM_RETRY", "9", "AIEVAL_SLURM_RETRY: Input should be less than or equal to 5"),
])
def test_unusable_slurm_settings_stop_the_process_at_start(tmp_path, monkeypatch, name, value, message):
    from aieval_server.config import Settings

    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AIEVAL_RUNNER", "slurm")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert message in str(caught.value)


def test_the_worker_adds_its_runner_to_the_job_spec(tmp_path, monkeypatch):
    from aieval_server.config import Settings
    from aieval_server.services.runs import new_engine

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    spec = parse_spec({"models": [{"kind": "huggingface", "name": "hf", "path": "/models/tiny"}],
                       "datasets": [{"kind": "custom", "name": "qa", "path": str(data)}]})
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path))
    local = new_engine(Settings(), spec, tmp_path / "job", ColdLauncher())
    assert local.spec.params.slurm is None
    monkeypatch.setenv("AIEVAL_RUNNER", "slurm")
    monkeypatch.setenv("AIEVAL_SLURM_PARTITION", "cpu")
    on_slurm = new_engine(Settings(), spec, tmp_path / "job", ColdLauncher())
    assert on_slurm.spec.params.slurm.partition == "cpu"
    assert spec.params.slurm is None  # the job's own spec is not changed
    assert on_slurm.spec.params.limit == spec.params.limit and on_slurm.spec.models == spec.models
