"""Runs whose tasks go to Slurm (params.slurm: OpenCompass' own SlurmRunner), against a real single-node Slurm started
for this module (tests/single_node_slurm.py): an endpoint model (the project's PooledInferTask) and a tiny local
checkpoint (OpenCompass' OpenICLInferTask) score exactly as with the LocalRunner, every task having been a Slurm job;
and cancelling a run cancels its jobs, which a killed srun would leave running."""

from __future__ import annotations

import threading
import time

import pytest
from fake_openai import FakeChatEndpoint
from single_node_slurm import PARTITION, SingleNodeSlurm, missing_binaries

from aieval_engine import workdir
from aieval_engine.demo import DEMO_DATA
from aieval_engine.runner import Evaluation
from aieval_engine.slurm import jobs_with_comment, slurm_job_comment
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm():
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} not found): apt-get install slurm-wlm "
                    "(scripts/ensure_services.sh installs it for `make test`)")
    cluster = SingleNodeSlurm()
    try:
        cluster.start()
    except BaseException:
        logs = cluster.logs()
        cluster.stop()
        pytest.fail(f"the single-node Slurm did not start:\n{logs}")
    yield cluster
    cluster.stop()


def spec(endpoint_url: str, models: list[dict], slurm: dict | None = None, workers: int = 1) -> dict:
    endpoint = {"kind": "openai", "name": "endpoint", "base_url": endpoint_url, "model": "m", "concurrency": 4,
                "retries": 1}  # OpenCompass' retry count is its attempts: 0 would send nothing
    return {
        "name": "slurm-run",
        "models": [endpoint, *models],
        "datasets": [{"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")}],
        "params": {"limit": 4, "max_out_len": 8, "workers": workers, **({"slurm": slurm} if slurm else {})},
    }


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_tasks_run_as_slurm_jobs_and_score_as_the_local_runner(tmp_path, slurm, tiny_model_dir, warm_launcher):
    tiny = {"kind": "huggingface", "name": "tiny", "path": str(tiny_model_dir), "batch_size": 4}
    endpoint = FakeChatEndpoint("B")
    try:
        local = Evaluation(parse_spec(spec(endpoint.url, [tiny])), tmp_path / "local", launcher=warm_launcher).run()
        # Two workers: SlurmRunner's parallel path (the cancel test below takes the one-at-a-time path of workers=1).
        before = {job.job_id for job in slurm.completed_jobs()}
        on_slurm = {"partition": PARTITION, "extra_args": ["--time=00:10:00"], "retry": 0}
        result = Evaluation(parse_spec(spec(endpoint.url, [tiny], on_slurm, workers=2)), tmp_path / "slurm",
                            launcher=warm_launcher, environ=slurm.environ).run()
    finally:
        endpoint.close()

    assert local.ok, local.error
    assert result.ok, f"{result.error}\n{(tmp_path / 'slurm' / 'run.log').read_text()[-4000:]}\n{slurm.logs()}"
    assert [(s.model, s.dataset, s.metric, s.value) for s in result.scores] == [
        (s.model, s.dataset, s.metric, s.value) for s in local.scores]
    assert {s.model for s in result.scores} == {"endpoint", "tiny"}
    for pair in result.pairs:
        ours = workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text()
        assert ours == workdir.predictions_file(local.run_dir, pair.model_abbr, pair.dataset_abbr).read_text()

    # Every task of the run, inference and evaluation of both models, was a Slurm job that completed.
    jobs = [job for job in slurm.completed_jobs() if job.job_id not in before]
    expected = {f"OpenICL{stage}[{pair.model_abbr}/{pair.dataset_abbr}]"
                for pair in result.pairs for stage in ("Infer", "Eval")}
    assert {job.name for job in jobs} == expected, jobs
    assert all(job.state == "COMPLETED" and job.partition == PARTITION for job in jobs), jobs


def test_cancelling_a_run_cancels_its_slurm_jobs(tmp_path, slurm, warm_launcher):
    # Answers that take longer than the test: the infer job runs until something stops it.
    endpoint = FakeChatEndpoint("B", first_token_delay_s=600)
    job_dir = tmp_path / "job"
    evaluation = Evaluation(parse_spec(spec(endpoint.url, [], {"partition": PARTITION, "retry": 0})), job_dir,
                            launcher=warm_launcher, environ=slurm.environ)
    results = []
    runner = threading.Thread(target=lambda: results.append(evaluation.run()), daemon=True)
    try:
        runner.start()
        comment = slurm_job_comment(job_dir)
        (job_id,) = wait_for(lambda: jobs_with_comment(comment, slurm.environ), 180, "the run's Slurm job")
        wait_for(lambda: endpoint.bodies, 180, "the Slurm job's first request")  # the task runs on the node

        evaluation.cancel()
        runner.join(120)
        assert results and results[0].status == "cancelled"
        # No job of the run is left queued or running (a killed srun alone leaves it running: slurm.py), and
        # slurmctld recorded the infer job as cancelled.
        wait_for(lambda: not jobs_with_comment(comment, slurm.environ), 60, "the job to end")
        (job,) = wait_for(lambda: [job for job in slurm.completed_jobs() if job.job_id == int(job_id)], 60,
                          "the job's completion record")
        assert (job.name, job.state) == ("OpenICLInfer[endpoint/demo-mcq]", "CANCELLED")
    finally:
        endpoint.close()
