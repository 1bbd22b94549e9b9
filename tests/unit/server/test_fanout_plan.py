"""Which jobs run as parts (services/fanout.split) and how the job's progress adds its parts' up."""

from __future__ import annotations

import json
from pathlib import Path

from aieval_engine.config_builder import safe_abbr
from aieval_engine.spec import parse_spec
from aieval_server.config import Settings
from aieval_server.models import EvaluationPart
from aieval_server.services.fanout import combined_progress, part_spec, part_what, split

CUSTOM = {"kind": "custom", "name": "my-qa", "path": "/data/qa.jsonl"}


def local(name: str) -> dict:
    return {"kind": "huggingface", "name": name, "path": f"/models/{name}"}


def endpoint(name: str) -> dict:
    return {"kind": "openai", "name": name, "base_url": "http://127.0.0.1:8000/v1", "model": "m"}


def spec(*models: dict):
    return parse_spec({"models": list(models), "datasets": [CUSTOM]})


def whole(*models: str) -> dict:
    return {"models": list(models), "datasets": None, "shard": None}


def test_one_part_per_local_checkpoint_and_one_for_every_endpoint(tmp_path):
    settings = Settings(data_dir=tmp_path)
    job = spec(endpoint("e1"), local("a"), endpoint("e2"), local("b"))
    assert split(settings, job) == [(whole("a"), "local"), (whole("b"), "local"), (whole("e1", "e2"), "api")]
    assert [m.name for m in part_spec(job, ["e1", "e2"]).models] == ["e1", "e2"]
    assert part_spec(job, ["b"]).datasets == job.datasets


def test_jobs_that_stay_whole(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert split(settings, spec(local("a"), endpoint("e1"), endpoint("e2"))) is None  # one checkpoint
    assert split(settings, spec(endpoint("e1"), endpoint("e2"))) is None
    assert split(Settings(data_dir=tmp_path, fanout=False), spec(local("a"), local("b"))) is None
    # a name that is another's abbreviation: alone, its part would call it that, the whole job "<it>-2"
    taken_by_first = safe_abbr("x y", set())
    assert split(settings, spec(local("x y"), local(taken_by_first))) is None


def test_progress_adds_the_parts_up_and_never_goes_back():
    running = EvaluationPart(position=0, models=["a"], queue="local", status="running",
                             progress={"stage": "infer", "samples_done": 30, "samples_total": 40, "pairs_done": 0,
                                       "pairs_total": 1, "fraction": 0.75, "elapsed_s": 9.0, "eta_s": 3.0,
                                       "pairs": [{"model_abbr": "a", "dataset_abbr": "qa"}]})
    queued = EvaluationPart(position=1, models=["b"], queue="local", status="queued", progress=None)
    done = EvaluationPart(position=2, models=["c"], queue="local", status="succeeded",
                          progress={"stage": "succeeded", "samples_done": 40, "samples_total": 40, "pairs_done": 1,
                                    "pairs_total": 1, "fraction": 1.0, "elapsed_s": 20.0,
                                    "pairs": [{"model_abbr": "c", "dataset_abbr": "qa"}]})
    combined = combined_progress([running, queued, done])
    assert combined["fraction"] == (0.75 + 0 + 1) / 3
    assert (combined["samples_done"], combined["samples_total"]) == (70, None)  # part 1's total is not known yet
    assert combined["stage"] == "infer" and combined["elapsed_s"] == 20.0
    assert [p["model_abbr"] for p in combined["pairs"]] == ["a", "c"]
    assert [p["status"] for p in combined["parts"]] == ["running", "queued", "succeeded"]


# ---- a checkpoint's work cut into parts: groups of datasets, shards of a large uploaded one ---------------
def qa_file(folder: Path, name: str, rows: int) -> dict:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(rows)))
    return {"kind": "custom", "name": name, "path": str(path)}


def job_of(models: list[dict], datasets: list[dict], **params):
    return parse_spec({"models": models, "datasets": datasets, "params": params})


def rows_settings(tmp_path: Path, **values) -> Settings:
    return Settings(data_dir=tmp_path, **{"fanout_part_rows": 1000, "fanout_max_parts": 4, **values})


def test_one_checkpoint_and_several_datasets_runs_as_groups_of_datasets(tmp_path):
    job = job_of([local("a")], [qa_file(tmp_path, "big", 1200), qa_file(tmp_path, "small", 900)])
    assert split(rows_settings(tmp_path), job) == [({"models": ["a"], "datasets": [0], "shard": None}, "local"),
                                                   ({"models": ["a"], "datasets": [1], "shard": None}, "local")]
    # three datasets into two parts: the largest alone, the two others together (the lightest part takes the next)
    job = job_of([local("a")], [qa_file(tmp_path, "s1", 400), qa_file(tmp_path, "b", 1300), qa_file(tmp_path, "s2", 500)])
    assert [what["datasets"] for what, _ in split(rows_settings(tmp_path), job)] == [[0, 2], [1]]


def test_a_large_uploaded_dataset_is_cut_into_shards_of_whole_batches(tmp_path):
    model = {**local("a"), "batch_size": 8}
    job = job_of([model], [qa_file(tmp_path, "large", 3000)])
    assert [what["shard"] for what, _ in split(rows_settings(tmp_path), job)] == [
        {"dataset": 0, "index": 0, "start": 0, "stop": 1000}, {"dataset": 0, "index": 1, "start": 1000, "stop": 2000},
        {"dataset": 0, "index": 2, "start": 2000, "stop": 3000}]
    # the rows evaluated are the limit's; a shard ends on a batch boundary (1250 -> 1256 = 157 batches of 8)
    plan = split(rows_settings(tmp_path), job_of([model], [qa_file(tmp_path, "large", 3000)], limit=2500))
    assert [(what["datasets"], what["shard"]["start"], what["shard"]["stop"]) for what, _ in plan] == [
        ([0], 0, 1256), ([0], 1256, 2500)]
    # with a small dataset beside it: the small one keeps a part, the large one gets the others
    plan = split(rows_settings(tmp_path), job_of([model], [qa_file(tmp_path, "large", 3000), qa_file(tmp_path, "s", 100)]))
    assert [(what["datasets"], what["shard"] and what["shard"]["index"]) for what, _ in plan] == [
        ([0], 0), ([0], 1), ([1], None)]
    assert {queue for _, queue in plan} == {"local"}


def test_parts_are_capped_by_the_local_workers_and_endpoints_stay_one_part(tmp_path):
    datasets = [qa_file(tmp_path, "one", 2000), qa_file(tmp_path, "two", 2000)]
    job = job_of([local("a"), endpoint("e1"), local("b"), endpoint("e2")], datasets)
    plan = split(rows_settings(tmp_path), job)  # 4 local parts for 2 checkpoints: 2 each
    assert [(what["models"], what["datasets"], queue) for what, queue in plan] == [
        (["a"], [0], "local"), (["a"], [1], "local"), (["b"], [0], "local"), (["b"], [1], "local"),
        (["e1", "e2"], None, "api")]
    # as many checkpoints as parts allowed: one part each, as before
    plan = split(rows_settings(tmp_path, fanout_max_parts=2), job)
    assert plan == [(whole("a"), "local"), (whole("b"), "local"), (whole("e1", "e2"), "api")]


def test_small_jobs_and_what_is_never_cut_stay_whole(tmp_path):
    settings = rows_settings(tmp_path)
    few_rows = [qa_file(tmp_path, "x", 30), qa_file(tmp_path, "y", 40)]
    assert split(settings, job_of([local("a")], few_rows)) is None  # not worth a second part
    assert split(settings, job_of([local("a"), endpoint("e")], few_rows)) is None
    large = [qa_file(tmp_path, "large", 5000)]
    assert split(settings, job_of([local("a")], large, workers=2)) is None  # the run cuts its datasets itself
    assert split(rows_settings(tmp_path, fanout_max_parts=1), job_of([local("a")], large)) is None
    assert split(Settings(data_dir=tmp_path, fanout=False), job_of([local("a")], large)) is None
    assert split(settings, job_of([endpoint("e")], large)) is None  # endpoints are one part: never split


def test_built_in_datasets_are_grouped_by_their_known_or_assumed_size(tmp_path):
    builtins = [{"kind": "builtin", "config": "gsm8k_gen"}, {"kind": "builtin", "config": "demo_gsm8k_chat_gen"}]
    settings = rows_settings(tmp_path)
    # unknown sizes: one part's worth each, never cut
    plan = split(settings, job_of([local("a")], builtins))
    assert [(what["datasets"], what["shard"]) for what, _ in plan] == [([0], None), ([1], None)]
    # with a limit, at most `limit` rows per dataset: two small datasets stay one part
    assert split(settings, job_of([local("a")], builtins, limit=50)) is None


def test_progress_adds_a_datasets_shards_into_its_pair():
    def shard_part(position: int, done: int, state: str) -> EvaluationPart:
        what = {"models": ["a"], "datasets": [0], "shard": {"dataset": 0, "index": position, "start": 0, "stop": 8}}
        return EvaluationPart(position=position, models=what, queue="local", status="running", progress={
            "samples_done": done, "samples_total": 8, "fraction": done / 8,
            "pairs": [{"model_abbr": "a", "dataset_abbr": f"qa_{position}", "dataset_index": 0, "done": done,
                       "total": 8, "state": state}]})

    grouped = EvaluationPart(position=2, models={"models": ["a"], "datasets": [1], "shard": None}, queue="local",
                             status="queued", progress=None)
    combined = combined_progress([shard_part(0, 8, "inferred"), shard_part(1, 3, "inferring"), grouped])
    assert [(p["dataset_abbr"], p["done"], p["total"], p["state"]) for p in combined["pairs"]] == [
        ("qa", 11, 16, "inferring")]
    assert [(p["datasets"], p["shard"] and p["shard"]["index"]) for p in combined["parts"]] == [
        ([0], 0), ([0], 1), ([1], None)]


def test_rows_written_before_parts_had_datasets_are_read_as_all_datasets():
    assert part_what(["a"]) == whole("a")
    assert part_what(whole("a", "b")) == whole("a", "b")


def test_fan_out_writes_and_sends_the_parts_and_a_new_plan_drops_the_old_parts_files(client, settings, tmp_path,
                                                                                       queued_messages):
    """On the real (SQLite) database and directory broker: the parts are written and sent, a requeue keeps what the
    parts made, and parts of another plan (settings changed) do not leave files a new part would resume from."""
    from sqlalchemy import select

    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services import evaluations as evaluation_service
    from aieval_server.services.fanout import fan_out
    from aieval_server.storage import get_storage

    cut = settings.model_copy(update={"fanout_part_rows": 80, "fanout_max_parts": 3})
    job = job_of([local("a")], [qa_file(tmp_path, "large", 240), qa_file(tmp_path, "small", 12)])
    token = "host:1:fanout"
    with session_scope(settings.database_url) as session:
        evaluation = Evaluation(name="e", params={}, queue="local", status="running", worker=token)
        session.add(evaluation)
        session.flush()
        evaluation_id = evaluation.id

    def rows() -> list[tuple]:
        with session_scope(settings.database_url) as session:
            return [(p.position, p.models["datasets"], p.models["shard"] and p.models["shard"]["index"], p.status)
                    for p in session.scalars(select(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id)
                                             .order_by(EvaluationPart.position))]

    storage = get_storage(cut)
    assert fan_out(cut, storage, evaluation_id, token, job) == "fanned out into 3 parts (3 sent)"
    assert rows() == [(0, [0], 0, "queued"), (1, [0], 1, "queued"), (2, [1], None, "queued")]
    assert len(queued_messages()) == 3
    part_dir = evaluation_service.job_dir(cut, evaluation_id) / "parts" / "0"
    (part_dir / "outputs").mkdir(parents=True)
    with session_scope(settings.database_url) as session:
        session.execute(EvaluationPart.__table__.update().where(EvaluationPart.evaluation_id == evaluation_id)
                        .values(status="succeeded"))
        session.execute(EvaluationPart.__table__.update().where(EvaluationPart.position == 0).values(status="failed"))

    # a requeue with the same plan: only the failed part again, its files kept to resume from
    assert fan_out(cut, storage, evaluation_id, token, job) == "fanned out into 3 parts (1 sent)"
    assert [row[3] for row in rows()] == ["queued", "succeeded", "succeeded"] and part_dir.is_dir()
    # another plan (here: the large dataset no longer cut): new parts, none resuming from an old part's files
    other = cut.model_copy(update={"fanout_max_parts": 2})
    assert fan_out(other, storage, evaluation_id, token, job) == "fanned out into 2 parts (2 sent)"
    assert rows() == [(0, [0], None, "queued"), (1, [1], None, "queued")]
    assert not part_dir.exists()
