"""Job checkpoints in shared storage: what another machine needs to resume, never a half-written file."""

from __future__ import annotations

import json

from aieval_server.services.checkpoints import JobCheckpoint
from aieval_server.storage import LocalStorage


def _job(tmp_path):
    job = tmp_path / "job"
    predictions = job / "outputs" / "20261124_000000" / "predictions" / "model"
    predictions.mkdir(parents=True)
    (job / "tmp").mkdir()
    (job / "tmp" / "scratch.py").write_text("scratch")
    (job / "spec.yaml").write_text("name: x\n")
    return job, predictions


def test_sync_uploads_complete_lines_and_parsable_json_only_once(tmp_path):
    job, predictions = _job(tmp_path)
    storage = LocalStorage(tmp_path / "storage")
    checkpoint = JobCheckpoint(storage, "evaluations/7", job)
    partial = predictions / "tmp_ds.jsonl"
    partial.write_bytes(b'{"idx": 0, "prediction": "A"}\n{"idx": 1, "predic')  # a batch being appended
    (predictions / "ds.json").write_text('{"0": {"prediction": "A"}, "1": ')  # a dump being written

    assert checkpoint.sync() == 2  # spec.yaml and the complete part of the jsonl
    stored = storage.path("evaluations/7/outputs/20261124_000000/predictions/model/tmp_ds.jsonl").read_bytes()
    assert stored == b'{"idx": 0, "prediction": "A"}\n'
    assert not storage.exists("evaluations/7/outputs/20261124_000000/predictions/model/ds.json")
    assert not storage.list("evaluations/7/tmp")
    assert checkpoint.sync() == 0  # nothing changed since

    (predictions / "ds.json").write_text(json.dumps({"0": {"prediction": "A"}, "1": {"prediction": "B"}}))
    partial.write_bytes(b'{"idx": 0, "prediction": "A"}\n{"idx": 1, "prediction": "B"}\n')
    assert checkpoint.sync() == 2
    assert json.loads(storage.path("evaluations/7/outputs/20261124_000000/predictions/model/ds.json").read_text())["1"]


def test_restore_rebuilds_the_job_dir_on_another_machine(tmp_path):
    job, predictions = _job(tmp_path)
    (predictions / "tmp_ds.jsonl").write_text('{"idx": 0, "prediction": "A"}\n')
    storage = LocalStorage(tmp_path / "storage")
    JobCheckpoint(storage, "evaluations/7", job).sync()

    elsewhere = tmp_path / "other-machine" / "job"
    checkpoint = JobCheckpoint(storage, "evaluations/7", elsewhere)
    assert checkpoint.restore() == 2
    assert (elsewhere / "outputs/20261124_000000/predictions/model/tmp_ds.jsonl").read_text() == '{"idx": 0, "prediction": "A"}\n'
    assert (elsewhere / "spec.yaml").read_text() == "name: x\n"
    assert not (elsewhere / "tmp").exists()
    assert checkpoint.sync() == 0  # what was just fetched is not sent back
