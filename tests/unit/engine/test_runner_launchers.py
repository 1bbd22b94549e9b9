"""runner.Evaluation and launchers, with real processes standing in for OpenCompass (no evaluation runs).

`FakeOpenCompass` starts a small Python process that writes an OpenCompass-shaped work dir the way the real
run does (config dump, tmp_<ds>.jsonl, predictions, results, run.log), so prepare -> run -> monitor ->
collect -> manifest is exercised end to end in well under a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from waiting import wait_until

from aieval_engine import runner as runner_module
from aieval_engine.launchers import OFFLINE_ENV, _ChildRun, kill_process_group
from aieval_engine.netpolicy import OutboundPolicy
from aieval_engine.runner import JOB_META, DataMissingError, Evaluation, ProgressEvent
from aieval_engine.spec import SpecError, parse_spec

SECRET = "sk-runner-SECRET-31337"


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live (non-zombie) process in a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(entry), fields[0]))
    return members


# ---- kill_process_group ---------------------------------------------------------------------------------


def test_kill_process_group_kills_the_whole_tree():
    process = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        wait_until(lambda: len(group_members(process.pid)) == 3, 5, interval=0.02)
        kill_process_group(process, grace_s=5)
        assert process.poll() == -signal.SIGTERM
        assert group_members(process.pid) == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_kill_process_group_escalates_to_sigkill():
    # Ignores SIGTERM (and so do the children, which inherit the disposition).
    process = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        wait_until(lambda: len(group_members(process.pid)) == 3, 5, interval=0.02)
        started = time.monotonic()
        kill_process_group(process, grace_s=0.3)
        assert process.poll() == -signal.SIGKILL
        assert group_members(process.pid) == []
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_kill_process_group_of_a_finished_process_returns():
    process = subprocess.Popen(["true"], start_new_session=True)
    process.wait()
    started = time.monotonic()
    kill_process_group(process, grace_s=5)
    assert time.monotonic() - started < 1


def test_child_run_wait_exit():
    process = _ChildRun([sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"], start_new_session=True)
    started = time.monotonic()
    assert process.wait_exit(0.05) is None
    assert 0.04 < time.monotonic() - started < 1.0
    assert process.wait_exit(5) == 3
    assert process.poll() == 3 and process.wait_exit(0) == 3


# ---- prepare ----------------------------------------------------------------------------------------------


class RefusingLauncher:
    def start(self, *args, **kwargs):
        raise AssertionError("nothing may start when preparation fails")


def test_prepare_refuses_hf_path_without_config_json(tmp_path, qa_file):
    model_dir = tmp_path / "not-a-checkpoint"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"")
    spec = parse_spec(
        {
            "models": [
                {"kind": "huggingface", "name": "missing", "path": str(tmp_path / "nowhere")},
                {"kind": "huggingface", "name": "no-config", "path": str(model_dir)},
            ],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(qa_file)}],
        }
    )
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=tmp_path / "cache", launcher=RefusingLauncher())
    with pytest.raises(SpecError) as info:
        evaluation.prepare()
    assert info.value.problems == [
        f"models[0] (missing): no Hugging Face checkpoint at {tmp_path / 'nowhere'} (a directory with config.json is expected)",
        f"models[1] (no-config): no Hugging Face checkpoint at {model_dir} (a directory with config.json is expected)",
    ]
    assert not (tmp_path / "job" / "config.py").exists()
    with pytest.raises(SpecError):
        evaluation.run()


def test_missing_builtin_data_is_refused_before_anything_runs(tmp_path, hf_model_dir):
    spec = parse_spec(
        {
            "models": [{"kind": "huggingface", "name": "tiny", "path": str(hf_model_dir)}],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
        }
    )
    cache = tmp_path / "cache"
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=cache, launcher=RefusingLauncher())
    events: list[ProgressEvent] = []
    with pytest.raises(DataMissingError) as info:
        evaluation.run(events.append)
    assert isinstance(info.value, SpecError)
    (problem,) = info.value.problems
    assert problem.startswith("datasets (gsm8k_gen): the data of built-in dataset 'gsm8k_gen' is not present")
    assert f"missing {cache.resolve() / 'data' / 'gsm8k'}" in problem
    assert f"COMPASS_DATA_CACHE={cache.resolve()}" in problem
    assert not (tmp_path / "job" / JOB_META).exists()
    assert [e.stage for e in events] == ["preparing"]


def test_prepare_writes_config_and_job_meta_without_secrets(tmp_path, hf_model_dir, qa_file, mcq_file):
    cache = tmp_path / "cache"
    (cache / "data" / "gsm8k").mkdir(parents=True)
    (cache / "data" / "gsm8k" / "test.jsonl").write_text("{}\n")
    spec = parse_spec(
        {
            "name": "nightly",
            "models": [
                {"kind": "huggingface", "name": "Tiny 模型", "path": str(hf_model_dir)},
                {"kind": "openai", "name": "api", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": SECRET},
                {"kind": "openai", "name": "api2", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                 "api_key_env": "PROVIDER_KEY"},
            ],
            "datasets": [
                {"kind": "custom", "name": "My QA", "path": str(qa_file)},
                {"kind": "custom", "name": "mcq", "path": str(mcq_file)},
                {"kind": "builtin", "config": "gsm8k_gen"},
            ],
        }
    )  # fmt: skip
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=cache, environ={"PROVIDER_KEY": SECRET + "2"})
    built = evaluation.prepare()
    assert evaluation.built is built
    assert built.secret_env == {"AIEVAL_API_KEY_1": SECRET, "AIEVAL_API_KEY_2": SECRET + "2"}
    meta_text = (tmp_path / "job" / JOB_META).read_text(encoding="utf-8")
    config_text = (tmp_path / "job" / "config.py").read_text(encoding="utf-8")
    for text in (meta_text, config_text):
        assert SECRET not in text
    meta = json.loads(meta_text)
    model_abbrs = list(built.models)
    assert meta["models"] == dict(zip(model_abbrs, ["Tiny 模型", "api", "api2"], strict=True))
    assert "Tiny 模型" in meta_text  # written as UTF-8, not escaped
    custom_abbrs = [d.abbr for d in built.datasets if d.abbr]
    assert meta["custom_datasets"] == dict(zip(custom_abbrs, ["My QA", "mcq"], strict=True))
    assert meta["custom_rows"] == dict(zip(custom_abbrs, [2, 2], strict=True))
    assert meta["spec"] == spec.public_dict()
    assert "api_key" not in meta["spec"]["models"][1]
    assert meta["config_sha256"] == built.sha256


def test_environ_defaults_to_the_process_environment(tmp_path, qa_file, monkeypatch):
    monkeypatch.setenv("RUNNER_TEST_KEY", SECRET)
    spec = parse_spec(
        {
            "models": [{"kind": "openai", "name": "api", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                        "api_key_env": "RUNNER_TEST_KEY"}],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(qa_file)}],
        }
    )  # fmt: skip
    assert Evaluation(spec, tmp_path / "a").prepare().secret_env == {"AIEVAL_API_KEY_0": SECRET}
    with pytest.raises(SpecError, match="the environment variable RUNNER_TEST_KEY is not set"):
        Evaluation(spec, tmp_path / "b", environ={}).prepare()


def test_default_data_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPASS_DATA_CACHE", str(tmp_path))
    assert runner_module.default_data_cache() == tmp_path
    monkeypatch.delenv("COMPASS_DATA_CACHE")
    assert runner_module.default_data_cache() == Path.home() / ".cache" / "aieval" / "compass"


# ---- run, with a fake OpenCompass process ---------------------------------------------------------------

FAKE_OPENCOMPASS = textwrap.dedent(
    """
    import json, os, sys, time
    job, argv, plan = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    log = open(os.path.join(job, "run.log"), "a", buffering=1)
    log.write("fake opencompass " + " ".join(argv) + "\\n")
    with open(os.path.join(job, "env.json"), "w") as f:  # what the run received (never secret values)
        json.dump({k: (k.startswith("AIEVAL_API_KEY") and "<set>") or v for k, v in os.environ.items()
                   if k.startswith(("AIEVAL_API_KEY", "COMPASS_DATA_CACHE", "HF_HUB_OFFLINE"))}, f)
    run = os.path.join(job, "outputs", "20261123_010203")
    os.makedirs(os.path.join(run, "configs"))
    with open(os.path.join(run, "configs", "20261123_010203_1.py"), "w") as f:
        f.write("datasets = [" + ", ".join("dict(abbr=%r, reader_cfg=dict(test_range='[0:2]'))" % d
                                           for d in plan["datasets"]) + "]\\n")
    time.sleep(plan.get("pause", 0))
    if plan.get("hang"):
        time.sleep(300)
    for model in plan["models"]:
        os.makedirs(os.path.join(run, "predictions", model), exist_ok=True)
        os.makedirs(os.path.join(run, "results", model), exist_ok=True)
        for ds in plan["datasets"]:
            with open(os.path.join(run, "predictions", model, "tmp_%s.jsonl" % ds), "w") as f:
                f.write(json.dumps({"idx": 0, "prediction": "p"}) + "\\n")
            time.sleep(plan.get("pause", 0))
            preds = {str(i): {"origin_prompt": "Q%d" % i, "prediction": "Tokyo", "gold": "Tokyo"} for i in range(2)}
            with open(os.path.join(run, "predictions", model, ds + ".json"), "w") as f:
                json.dump(preds, f)
            os.remove(os.path.join(run, "predictions", model, "tmp_%s.jsonl" % ds))
            if ds in plan.get("fail", []):
                result = {"error": "ValueError: bad sample"}
                log.write("Traceback (most recent call last):\\n  File x\\nValueError: bad sample\\n")
            else:
                result = {"accuracy": 50.0, "details": [{"pred": ["Tokyo"], "refr": ["Tokyo"], "correct": [True]}]}
            with open(os.path.join(run, "results", model, ds + ".json"), "w") as f:
                json.dump(result, f)
    log.write("done\\n")
    """
)


class FakeOpenCompass:
    """A Launcher whose run is a real child process in its own session, writing an OpenCompass work dir."""

    def __init__(self, plan: dict):
        self.plan = plan
        self.calls: list[tuple[list[str], dict[str, str], int]] = []
        self.process: _ChildRun | None = None

    def start(self, job_dir, argv, env, seed):
        self.calls.append((argv, dict(env), seed))
        self.process = _ChildRun(  # the process class ColdLauncher returns
            [sys.executable, "-c", FAKE_OPENCOMPASS, job_dir, json.dumps(argv), json.dumps(self.plan)],
            env={**os.environ, **OFFLINE_ENV, **env},
            cwd=job_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self.process


@pytest.fixture
def two_model_spec(hf_model_dir, qa_file):
    return parse_spec(
        {
            "name": "fake",
            "models": [
                {"kind": "huggingface", "name": "Tiny", "path": str(hf_model_dir)},
                {"kind": "openai", "name": "API", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": SECRET},
            ],
            "datasets": [{"kind": "custom", "name": "QA set", "path": str(qa_file)}],
            "params": {"seed": 7, "limit": 2},
        }
    )


def test_run_succeeds_with_progress_scores_and_manifest(tmp_path, two_model_spec):
    launcher = FakeOpenCompass({"models": ["Tiny", "API"], "datasets": ["QA_set-" + "x"], "pause": 0.15})
    evaluation = Evaluation(two_model_spec, tmp_path / "job", data_cache=tmp_path / "cache", launcher=launcher)
    built = evaluation.prepare()
    (abbr,) = [d.abbr for d in built.datasets]
    launcher.plan["datasets"] = [abbr]
    assert list(built.models) == ["Tiny", "API"]

    events: list[ProgressEvent] = []
    result = evaluation.run(events.append, poll_interval=0.02)

    assert result.status == "succeeded" and result.ok, (result.error, result.log_excerpt)
    assert result.error is None
    assert result.run_dir == tmp_path.resolve() / "job" / "outputs" / "20261123_010203"
    assert sorted((s.model, s.dataset, s.metric, s.value) for s in result.scores) == [
        ("API", "QA set", "accuracy", 50.0),
        ("Tiny", "QA set", "accuracy", 50.0),
    ]
    assert all(p.ok for p in result.pairs) and len(result.pairs) == 2

    (argv, env, seed) = launcher.calls[0]
    assert seed == 7
    assert argv[:2] == [str(tmp_path.resolve() / "job" / "config.py"), "-w"]
    assert "--debug" in argv and "-r" not in argv
    assert argv[argv.index("--dump-eval-details") + 1] == "true"
    assert env == {"COMPASS_DATA_CACHE": str((tmp_path / "cache").resolve()), "AIEVAL_API_KEY_1": SECRET,
                   "AIEVAL_OUTBOUND_POLICY": OutboundPolicy().to_env(),  # the engine's default policy
                   # where endpoint models record each request's latency and tokens (sample_metrics.py)
                   "AIEVAL_SAMPLE_METRICS_DIR": str(tmp_path.resolve() / "job" / "outputs" / "sample_metrics"),
                   # where the request pool notes which predictions came from the prediction cache
                   "AIEVAL_PREDICTION_CACHE_HITS_DIR": str(tmp_path.resolve() / "job" / "outputs"
                                                           / "prediction_cache_hits")}
    seen_env = json.loads((tmp_path / "job" / "env.json").read_text())
    assert seen_env == {"AIEVAL_API_KEY_1": "<set>", "COMPASS_DATA_CACHE": str((tmp_path / "cache").resolve()),
                        "HF_HUB_OFFLINE": "1"}  # fmt: skip

    stages = [e.stage for e in events if e.kind == "status"]
    assert stages[:2] == ["preparing", "running"] and stages[-1] == "succeeded"
    progress = [e for e in events if e.kind == "progress"]
    assert progress, "the monitor reported no progress"
    assert progress[-1].stage == "summarize"
    assert (progress[-1].samples_done, progress[-1].samples_total) == (4, 4)
    assert (progress[-1].pairs_done, progress[-1].pairs_total) == (2, 2)
    assert progress[-1].fraction == 1.0
    assert {p.dataset for p in progress[-1].pairs} == {"QA set"}
    assert {p.state for p in progress[-1].pairs} == {"evaluated"}
    assert any(e.stage in ("infer", "eval") for e in progress)  # seen mid-run
    logs = [line for e in events if e.kind == "log" for line in e.lines]
    assert logs[0].startswith("fake opencompass ") and logs[-1] == "done"
    final = events[-1]
    assert final.kind == "status" and (final.pairs_done, final.pairs_total) == (2, 2)
    assert json.loads(json.dumps(final.to_dict()))["fraction"] == 1.0

    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == result.manifest
    assert manifest["config_sha256"] == built.sha256
    assert SECRET not in json.dumps(manifest) and SECRET not in json.dumps(result.to_dict())
    assert launcher.process.poll() == 0


def test_run_reports_failed_pairs_with_cause(tmp_path, two_model_spec):
    launcher = FakeOpenCompass({"models": ["Tiny", "API"], "datasets": []})
    evaluation = Evaluation(two_model_spec, tmp_path / "job", data_cache=tmp_path / "cache", launcher=launcher)
    (abbr,) = [d.abbr for d in evaluation.prepare().datasets]
    launcher.plan.update(datasets=[abbr], fail=[abbr])
    result = evaluation.run(poll_interval=0.02)
    assert result.status == "failed" and not result.ok
    assert result.error.startswith(f"2 of 2 tasks failed: Tiny/{abbr}, API/{abbr}")
    assert result.error.endswith("Cause: ValueError: bad sample")
    assert "Traceback (most recent call last)" in result.log_excerpt
    assert [p.error for p in result.pairs] == ["ValueError: bad sample"] * 2


def test_run_that_produces_nothing_fails_clearly(tmp_path, two_model_spec):
    class Crashes(FakeOpenCompass):
        def start(self, job_dir, argv, env, seed):
            Path(job_dir, "run.log").write_text("Traceback (most recent call last):\n  File x\nImportError: no torch\n")
            return _ChildRun([sys.executable, "-c", "raise SystemExit(0)"], start_new_session=True)

    evaluation = Evaluation(two_model_spec, tmp_path / "job", data_cache=tmp_path / "cache", launcher=Crashes({}))
    result = evaluation.run(poll_interval=0.02)
    assert result.status == "failed" and result.run_dir is None and result.pairs == []
    assert result.error == "OpenCompass stopped before running any task; see the log excerpt. Cause: ImportError: no torch"


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_kill_the_run(tmp_path, two_model_spec, how):
    launcher = FakeOpenCompass({"models": ["Tiny", "API"], "datasets": ["d"], "hang": True})
    spec = two_model_spec
    if how == "timeout":
        spec = spec.model_copy(update={"params": spec.params.model_copy(update={"timeout_s": 0.4})})
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=tmp_path / "cache", launcher=launcher)
    calls = []

    def should_cancel():
        calls.append(1)
        return how == "cancel" and (tmp_path / "job" / "outputs").exists()

    started = time.monotonic()
    result = evaluation.run(should_cancel=should_cancel, poll_interval=0.02)
    assert time.monotonic() - started < 6
    assert calls
    process = launcher.process
    assert process.poll() is not None and group_members(process.pid) == []
    if how == "cancel":
        assert (result.status, result.error) == ("cancelled", "cancelled by request")
    else:
        assert (result.status, result.error) == ("timeout", "stopped after exceeding the time limit of 0.4 s")
    assert not result.ok and result.scores == []
    assert (tmp_path / "job" / "manifest.json").exists()


def test_resume_passes_the_previous_run(tmp_path, two_model_spec):
    evaluation = Evaluation(two_model_spec, tmp_path / "job", data_cache=tmp_path / "cache")
    assert "-r" not in evaluation._argv(resume=True)  # nothing to resume yet
    (tmp_path / "job" / "outputs" / "20261123_000000").mkdir(parents=True)
    argv = evaluation._argv(resume=True)
    assert argv[argv.index("-r") + 1] == "20261123_000000"
    assert "-r" not in evaluation._argv(resume=False)
    parallel = Evaluation(
        two_model_spec.model_copy(update={"params": two_model_spec.params.model_copy(update={"workers": 4})}),
        tmp_path / "job2",
    )
    argv = parallel._argv(resume=False)
    assert "--debug" not in argv and argv[argv.index("--max-num-workers") + 1] == "4"


def test_log_excerpts(tmp_path):
    log = tmp_path / "run.log"
    assert runner_module._run_log_excerpt(log) is None
    log.write_text("line 1\n\nline 2\r\nTraceback (most recent call last):\n  File a\nKeyError: 'x'\nafter\n")
    assert runner_module._run_log_excerpt(log) == "Traceback (most recent call last):\n  File a\nKeyError: 'x'\nafter"
    log.write_text("".join(f"l{i}\n" for i in range(100)))
    excerpt = runner_module._run_log_excerpt(log)
    assert excerpt.splitlines() == [f"l{i}" for i in range(40, 100)]
    assert runner_module._last_exception_line("x\nopencompass.Error: boom\nValueError: last\ninfo") == "ValueError: last"
    assert runner_module._last_exception_line("no errors here") is None
    assert runner_module._last_exception_line(None) is None


# ---- WarmLauncher, against a stand-in fork server speaking forkserver.py's protocol ------------------------
# The real server imports OpenCompass, torch and transformers (10-20 s); the protocol is what is tested here.

FAKE_FORKSERVER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    mode = os.environ.get("FAKE_FORKSERVER_MODE", "ok")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        with open(os.path.join(request["job_dir"], "request.json"), "w") as f:
            json.dump({k: v for k, v in request.items() if k != "env"} | {"env_keys": sorted(request["env"])}, f)
        # like _child.py, the run does not keep the protocol pipe open (its stdout goes to the run log)
        child = subprocess.Popen(["sleep", os.environ.get("FAKE_RUN_SECONDS", "0.3")], start_new_session=True,
                                 stdout=subprocess.DEVNULL)  # fmt: skip
        print(json.dumps({"id": request["id"], "pid": child.pid}), flush=True)
        if mode == "crash":
            # the server dies once start() has its answer (dying at once races with start(): see the xfail
            # below); the run, in its own session, outlives it
            import time; time.sleep(0.5); os._exit(1)
        print(json.dumps({"pid": child.pid, "code": child.wait()}), flush=True)
    """
)


@pytest.fixture
def fake_python(tmp_path) -> str:
    """An executable that ignores `-m aieval_engine.forkserver` and runs the stand-in server instead."""
    server = tmp_path / "fake_forkserver.py"
    server.write_text(FAKE_FORKSERVER)
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {server}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_warm_launcher_protocol(tmp_path, fake_python, monkeypatch):
    from aieval_engine.launchers import WarmLauncher

    monkeypatch.setenv("FAKE_FORKSERVER_MODE", "ok")
    launcher = WarmLauncher(python=fake_python)
    try:
        assert launcher.warm_up() < 5
        run = launcher.start(str(tmp_path), ["config.py", "-w", "outputs"], {"AIEVAL_API_KEY_0": SECRET}, 5)
        assert run.pid > 0 and run.poll() is None
        assert run.wait_exit(5) == 0 and run.poll() == 0
        request = json.loads((tmp_path / "request.json").read_text())
        assert request == {"id": 1, "job_dir": str(tmp_path), "argv": ["config.py", "-w", "outputs"], "seed": 5,
                           "env_keys": ["AIEVAL_API_KEY_0"]}  # fmt: skip
        second = launcher.start(str(tmp_path), [], {}, 0)
        assert second.pid != run.pid and second.wait_exit(5) == 0
    finally:
        launcher.close()
    assert launcher._server is None


def _pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_warm_run_is_reported_finished_when_the_fork_server_dies(tmp_path, fake_python, monkeypatch):
    from aieval_engine.launchers import WarmLauncher

    monkeypatch.setenv("FAKE_FORKSERVER_MODE", "crash")
    monkeypatch.setenv("FAKE_RUN_SECONDS", "30")  # the orphaned run would outlive the test
    launcher = WarmLauncher(python=fake_python)
    run = launcher.start(str(tmp_path), [], {}, 0)
    try:
        wait_until(lambda: launcher._server.poll() is not None, 5, interval=0.02)
        # nobody can reap or report the run any more: it is killed and reported as killed
        assert run.wait_exit(5) == -signal.SIGKILL and run.poll() == -9
        wait_until(lambda: not _pid_alive(run.pid), 5, interval=0.02)  # (reaped by init once the server is gone)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


class _DeadServer:
    """A fork server that answered one request and died: what _read_replies sees."""

    def __init__(self, pid: int):
        import io

        self.stdout = [json.dumps({"id": 1, "pid": pid}).encode() + b"\n"]
        self.stdin = io.BytesIO()

    def poll(self):
        return 1


def test_warm_run_is_reported_when_the_server_dies_before_start_reads_the_reply(tmp_path, monkeypatch):
    from aieval_engine.launchers import WarmLauncher

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        launcher = WarmLauncher(python="/nonexistent")
        server = _DeadServer(child.pid)
        monkeypatch.setattr(launcher, "_ensure_server", lambda: server)
        launcher._read_replies(server)  # the reader thread got the reply and the EOF before start() woke up
        run = launcher.start(str(tmp_path), [], {}, 0)
        assert run.pid == child.pid
        assert run.wait_exit(1) == -signal.SIGKILL
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


# ---- the progress monitor, on a work dir written by hand ---------------------------------------------------


@pytest.fixture
def monitored(tmp_path, hf_model_dir, write_jsonl):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(20)])
    spec = parse_spec(
        {
            "models": [{"kind": "huggingface", "name": "Tiny", "path": str(hf_model_dir)}],
            "datasets": [{"kind": "custom", "name": "QA", "path": str(data)}],
            "params": {"limit": 5},
        }
    )
    evaluation = Evaluation(spec, tmp_path / "job", data_cache=tmp_path / "cache")
    built = evaluation.prepare()
    monitor = runner_module._Monitor(evaluation, built, time.monotonic())
    run = tmp_path / "job" / "outputs" / "20261123_010203"
    return monitor, run, built.datasets[0].abbr


def _dump_config(run: Path, abbr: str, test_range: str = "[0:5]") -> None:
    (run / "configs").mkdir(parents=True, exist_ok=True)
    (run / "configs" / "20261123_010203_1.py").write_text(f"datasets = [dict(abbr={abbr!r}, reader_cfg=dict(test_range={test_range!r}))]\n")


def test_monitor_follows_the_pair_through_its_states(monitored):
    monitor, run, abbr = monitored
    assert monitor.poll() == []  # no run dir yet
    _dump_config(run, abbr)
    (event,) = monitor.poll()
    assert (event.kind, event.stage, event.samples_done, event.samples_total) == ("progress", "infer", 0, 5)
    assert [(p.model, p.dataset, p.state, p.total) for p in event.pairs] == [("Tiny", "QA", "pending", 5)]
    assert monitor.poll() == []  # nothing changed, nothing reported

    predictions = run / "predictions" / "Tiny"
    predictions.mkdir(parents=True)
    (predictions / f"tmp_{abbr}.jsonl").write_text('{"idx": 0}\n{"idx": 1}\n')
    (event,) = monitor.poll()
    assert (event.stage, event.samples_done, event.pairs[0].state, event.fraction) == ("infer", 2, "inferring", 0.4)

    put = {str(i): {"prediction": "a"} for i in range(5)}
    (predictions / f"{abbr}.json").write_text(json.dumps(put))
    (event,) = monitor.poll()  # the final file is written, the tmp file not yet removed: not counted twice
    assert (event.stage, event.samples_done, event.pairs[0].state) == ("infer", 5, "inferring")
    (predictions / f"tmp_{abbr}.jsonl").unlink()  # as OpenCompass does right after (icl_gen_inferencer.py)
    (event,) = monitor.poll()
    assert (event.stage, event.samples_done, event.pairs[0].state) == ("eval", 5, "inferred")

    (run / "results" / "Tiny").mkdir(parents=True)
    (run / "results" / "Tiny" / f"{abbr}.json").write_text('{"accuracy": 80.0}')
    (event,) = monitor.poll()
    assert (event.stage, event.pairs_done, event.pairs_total, event.pairs[0].state) == ("summarize", 1, 1, "evaluated")
    assert monitor.dataset_names() == {abbr: "QA"}


def test_monitor_reports_failed_pairs(monitored):
    monitor, run, abbr = monitored
    _dump_config(run, abbr, "[0:50]")  # larger than the file: the known row count wins
    (run / "predictions" / "Tiny").mkdir(parents=True)
    (run / "predictions" / "Tiny" / f"{abbr}.json").write_text(json.dumps({str(i): {} for i in range(20)}))
    (run / "results" / "Tiny").mkdir(parents=True)
    (run / "results" / "Tiny" / f"{abbr}.json").write_text('{"error": "boom"}')
    (event,) = monitor.poll()
    assert (event.stage, event.pairs[0].state, event.samples_total) == ("summarize", "failed", 20)


def test_monitor_log_lines(monitored):
    monitor, run, abbr = monitored
    log = monitor.log_path
    log.write_text("first\r\nsecond\rthird\n\n   \npart")
    (event,) = monitor.poll()
    assert (event.kind, event.lines) == ("log", ["first", "second", "third"])
    with open(log, "a") as handle:
        handle.write("ial line\n" + "".join(f"l{i}\n" for i in range(runner_module.MAX_LOG_LINES_PER_EVENT + 5)))
    events = monitor.poll()
    assert [len(e.lines) for e in events] == [runner_module.MAX_LOG_LINES_PER_EVENT, 6]
    assert events[0].lines[0] == "partial line"
    with open(log, "ab") as handle:
        handle.write(b"bad \xff byte\n")
    (event,) = monitor.poll()
    assert event.lines == ["bad \ufffd byte"]


def test_monitor_follows_split_datasets(monitored):
    monitor, run, abbr = monitored
    _dump_config(run, abbr, "[0:20]")
    shards = run / "predictions" / "Tiny"
    shards.mkdir(parents=True)
    (shards / f"{abbr}_0.json").write_text(json.dumps({str(i): {} for i in range(16)}))
    (shards / f"tmp_{abbr}_1.jsonl").write_text('{"idx": 0}\n{"idx": 1}\n')
    (event,) = monitor.poll()
    assert (event.stage, event.samples_done, event.samples_total, event.pairs[0].state) == ("infer", 18, 20, "inferring")
    (shards / f"tmp_{abbr}_1.jsonl").unlink()
    (shards / f"{abbr}_1.json").write_text(json.dumps({str(i): {} for i in range(4)}))
    (event,) = monitor.poll()
    assert (event.stage, event.samples_done, event.pairs[0].state) == ("eval", 20, "inferred")


def test_monitor_sees_results_of_split_datasets(monitored):
    monitor, run, abbr = monitored
    _dump_config(run, abbr, "[0:20]")
    (run / "predictions" / "Tiny").mkdir(parents=True)
    (run / "predictions" / "Tiny" / f"{abbr}_0.json").write_text(json.dumps({str(i): {} for i in range(16)}))
    (run / "predictions" / "Tiny" / f"{abbr}_1.json").write_text(json.dumps({str(i): {} for i in range(4)}))
    (run / "results" / "Tiny").mkdir(parents=True)
    (run / "results" / "Tiny" / f"{abbr}.json").write_text('{"accuracy": 80.0}')
    (event,) = monitor.poll()
    assert (event.stage, event.pairs[0].state) == ("summarize", "evaluated")


def test_monitor_does_not_call_a_half_inferred_split_dataset_inferred(monitored):
    monitor, run, abbr = monitored
    _dump_config(run, abbr, "[0:20]")
    shards = run / "predictions" / "Tiny"
    shards.mkdir(parents=True)
    (shards / f"{abbr}_0.json").write_text(json.dumps({str(i): {} for i in range(16)}))  # shard 1 not started
    (event,) = monitor.poll()
    assert (event.samples_done, event.samples_total) == (16, 20)
    assert (event.stage, event.pairs[0].state) == ("infer", "inferring")
