"""Which jobs run as parts (services/fanout.split) and how the job's progress adds its parts' up."""

from __future__ import annotations

from aieval_engine.config_builder import safe_abbr
from aieval_engine.spec import parse_spec
from aieval_server.config import Settings
from aieval_server.models import EvaluationPart
from aieval_server.services.fanout import combined_progress, part_spec, split

CUSTOM = {"kind": "custom", "name": "my-qa", "path": "/data/qa.jsonl"}


def local(name: str) -> dict:
    return {"kind": "huggingface", "name": name, "path": f"/models/{name}"}


def endpoint(name: str) -> dict:
    return {"kind": "openai", "name": name, "base_url": "http://127.0.0.1:8000/v1", "model": "m"}


def spec(*models: dict):
    return parse_spec({"models": list(models), "datasets": [CUSTOM]})


def test_one_part_per_local_checkpoint_and_one_for_every_endpoint(tmp_path):
    settings = Settings(data_dir=tmp_path)
    job = spec(endpoint("e1"), local("a"), endpoint("e2"), local("b"))
    assert split(settings, job) == [[1], [3], [0, 2]]
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
