"""Runs one evaluation: spec -> config -> OpenCompass process -> progress events -> EvalResult.

OpenCompass exits 0 even when every task failed, so success is decided from the result files, never
from the exit code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import workdir
from ._child import LOG_NAME
from .budget import BUDGET_STORE_ENV, store_from_env
from .catalogue import data_hint, missing_data
from .config_builder import BuiltConfig, DatasetShard, build_config
from .launchers import ColdLauncher, Launcher, RunProcess, kill_process_group
from .netpolicy import POLICY_ENV, OutboundPolicy
from .prediction_cache import HITS_DIR_ENV, manifest_entry
from .results import EvalResult, PairOutcome, build_manifest, collect_scores
from .sample_metrics import METRICS_DIR_ENV
from .slurm import cancel_jobs, slurm_job_comment
from .spec import EvalSpec, HuggingFaceModelSpec, SpecError

# What tells Slurm's commands which cluster to use, passed on to the run when its tasks go to Slurm.
SLURM_CLIENT_ENV = ("SLURM_CONF",)

JOB_META = "job.json"
MAX_LOG_LINES_PER_EVENT = 200
_TRACEBACK = "Traceback (most recent call last)"


class DataMissingError(SpecError):
    """A built-in dataset's files are not in the data directory (OpenCompass would try to download them)."""


@dataclass
class PairProgress:
    model: str
    model_abbr: str
    dataset: str
    dataset_abbr: str
    dataset_index: int | None = None  # which of the spec's datasets (a built-in config can hold several)
    state: str = "pending"  # pending | inferring | inferred | evaluated | failed
    done: int | None = None
    total: int | None = None


@dataclass
class ProgressEvent:
    kind: str  # status | progress | log
    stage: str  # preparing | running | infer | eval | summarize | succeeded | failed | cancelled | timeout
    elapsed_s: float
    samples_done: int = 0
    samples_total: int | None = None
    pairs_done: int = 0
    pairs_total: int = 0
    eta_s: float | None = None
    pairs: list[PairProgress] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        if self.samples_total:
            return min(1.0, self.samples_done / self.samples_total)
        if self.pairs_total:
            return self.pairs_done / self.pairs_total
        return None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fraction"] = self.fraction
        return data


EventCallback = Callable[[ProgressEvent], None]


def default_data_cache() -> Path:
    return Path(os.environ.get("COMPASS_DATA_CACHE") or Path.home() / ".cache" / "aieval" / "compass")


class Evaluation:
    """One evaluation in its own job directory. `run()` blocks; `cancel()` may be called from any thread."""

    def __init__(
        self,
        spec: EvalSpec,
        job_dir: str | Path,
        *,
        data_cache: str | Path | None = None,
        launcher: Launcher | None = None,
        environ: dict[str, str] | None = None,
        outbound_policy: OutboundPolicy | None = None,
        budget_store: str | None = None,
        judge_cache: str | Path | None = None,
        prediction_cache: str | Path | None = None,
        rescore_from: str | Path | None = None,
        datasets: Sequence[int] | None = None,
        shard: DatasetShard | None = None,
    ):
        """`outbound_policy`: where the run's model calls may connect (netpolicy.py); by default the one in
        environ's AIEVAL_OUTBOUND_POLICY, else the engine's default (everything but link-local/metadata).
        `budget_store`: where models' shared request budgets live (budget.py: a Redis URL, shared by machines,
        or a directory, shared by this machine's processes); by default environ's AIEVAL_BUDGET_STORE, else a
        directory in the user's cache.
        `judge_cache`: the SQLite file the judge model's replies are kept in (judge.JudgeCallCache), so scoring the
        same answers again costs no judge call; None calls the judge every time.
        `prediction_cache`: the SQLite file OpenAI-compatible models' answers are kept in (prediction_cache.py), so
        a request sent before is answered without a call (unless the spec's `params.prediction_cache` is false);
        None sends every prompt.
        `rescore_from`: the run dir (or job dir) of a finished run of the same models and datasets: its predictions
        are copied into this job and OpenCompass runs only its evaluation stage (`-m eval -r`), so the scores come
        from the evaluators this spec names (another scorer, another judge) with no call to the evaluated models.
        `datasets` (spec dataset indexes) and `shard`: this run is one part of a job fanned out over workers
        (services/fanout.py): only those datasets, or only the inference of one shard of an uploaded dataset (its
        scoring is the merged job's, `merge_parts`), each under the abbreviation and index it has in the whole job."""
        self.spec = spec
        self.job_dir = Path(job_dir).resolve()
        self.data_cache = Path(data_cache).resolve() if data_cache else default_data_cache()
        self.launcher = launcher or ColdLauncher()
        self.environ = dict(os.environ if environ is None else environ)
        self.outbound_policy = outbound_policy or OutboundPolicy.from_env(self.environ)
        self.budget_store = budget_store or store_from_env(self.environ)
        self.judge_cache = Path(judge_cache).resolve() if judge_cache else None
        self.prediction_cache = Path(prediction_cache).resolve() if prediction_cache else None
        self.rescore_from = Path(rescore_from).resolve() if rescore_from else None
        self.shard = shard
        self.datasets = [shard.dataset] if shard is not None else list(datasets) if datasets is not None else None
        self._eval_only = False  # merge_parts: OpenCompass' evaluation stage on the merged run
        self.built: BuiltConfig | None = None
        self._rescore_run: Path | None = None
        self._cancel = threading.Event()
        self._cancel_reason = "cancelled"

    # ---- preparation -------------------------------------------------------------------------
    def prepare(self) -> BuiltConfig:
        """Validate everything that can be checked before starting; write config.py and job.json."""
        problems = []
        judge = [(f"judge ({self.spec.judge.model.name})", self.spec.judge.model)] if self.spec.judge else []
        for where, model in [(f"models[{i}] ({m.name})", m) for i, m in enumerate(self.spec.models)] + judge:
            if isinstance(model, HuggingFaceModelSpec) and not (Path(model.path) / "config.json").is_file():
                problems.append(
                    f"{where}: no Hugging Face checkpoint at {model.path} "
                    "(a directory with config.json is expected)"
                )
        source_run = None
        if self.rescore_from is not None:
            try:
                source_run = rescore_source(self.rescore_from)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise SpecError(problems)
        built = build_config(self.spec, self.job_dir, self.environ, judge_cache=self.judge_cache,
                             prediction_cache=self.prediction_cache, datasets=self.datasets, shard=self.shard)
        if source_run is not None:
            check_rescore_source(source_run, built, self.spec.params.limit)
        missing = []
        for planned in built.datasets:
            if planned.builtin is not None:
                absent = missing_data(planned.builtin, self.data_cache)
                if absent:
                    missing.append(f"datasets ({planned.builtin.name}): {data_hint(planned.builtin, absent, self.data_cache)}")
        if missing:
            raise DataMissingError(missing)
        meta = {
            "models": built.models,
            "custom_datasets": {d.abbr: d.spec.name for d in built.datasets if d.abbr},
            "custom_dataset_indexes": {d.abbr: d.index for d in built.datasets if d.abbr},
            "custom_rows": {d.abbr: d.rows for d in built.datasets if d.abbr},
            "spec": self.spec.public_dict(),
            "config_sha256": built.sha256,
            "rescored_from": str(source_run) if source_run is not None else None,
        }
        if self.datasets is not None:  # one part of a job: what merge_parts reads back
            meta["part"] = {"datasets": self.datasets, "shard": asdict(self.shard) if self.shard else None}
        (self.job_dir / JOB_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        self.built = built
        self._rescore_run = source_run
        return built

    # ---- running -----------------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> None:
        self._cancel_reason = reason
        self._cancel.set()

    def _argv(self, resume: bool) -> list[str]:
        workers = self.spec.params.workers
        argv = [str(self.job_dir / "config.py"), "-w", str(workdir.outputs_dir(self.job_dir))]
        argv += ["--max-num-workers", str(workers), "--dump-eval-details", "true"]
        if workers == 1:
            argv.append("--debug")  # every task in this one (warm) process
        previous = workdir.latest_run_dir(self.job_dir)
        if (self._rescore_run is not None or self._eval_only) and previous is not None:
            return argv + ["-m", "eval", "-r", previous.name]  # only the evaluation stage, on the copied predictions
        if self.shard is not None:
            argv += ["-m", "infer"]  # a shard's predictions are scored with the other shards', by the merged job
        if resume and previous is not None:
            argv += ["-r", previous.name]
        return argv

    def _stop(self, process: RunProcess) -> None:
        kill_process_group(process)
        # After the kill, so that no srun starts any more: its jobs outlive a killed srun (slurm.py).
        self._cancel_slurm_jobs()

    def _cancel_slurm_jobs(self) -> None:
        if self.spec.params.slurm is not None:
            cancel_jobs(slurm_job_comment(self.job_dir), self.environ)

    def run(
        self,
        on_event: EventCallback | None = None,
        *,
        resume: bool = False,
        should_cancel: Callable[[], bool] | None = None,
        poll_interval: float = 0.5,
    ) -> EvalResult:
        started = time.monotonic()
        emit = on_event or (lambda event: None)
        emit(ProgressEvent("status", "preparing", 0.0))
        built = self.built or self.prepare()
        if self._rescore_run is not None and workdir.latest_run_dir(self.job_dir) is None:
            copy_predictions(self._rescore_run, self.job_dir)
        env = {"COMPASS_DATA_CACHE": str(self.data_cache), POLICY_ENV: self.outbound_policy.to_env(),
               METRICS_DIR_ENV: str(workdir.sample_metrics_dir(self.job_dir)),
               HITS_DIR_ENV: str(workdir.prediction_cache_hits_dir(self.job_dir)), **built.secret_env}
        judge = [self.spec.judge.model] if self.spec.judge is not None else []
        if any(getattr(model, "shared_budget", None) for model in [*self.spec.models, *judge]):
            # By the environment, never the config file: a Redis URL may hold a password.
            env[BUDGET_STORE_ENV] = self.budget_store
        if self.spec.params.slurm is not None:
            # Which cluster srun talks to, also for a warm fork server started before it was set.
            env.update({name: self.environ[name] for name in SLURM_CLIENT_ENV if name in self.environ})
            self._cancel_slurm_jobs()  # a previous attempt's, should its worker have died with jobs running
        process = self.launcher.start(str(self.job_dir), self._argv(resume), env, self.spec.params.seed)
        emit(ProgressEvent("status", "running", time.monotonic() - started))
        monitor = _Monitor(self, built, started)
        timeout = self.spec.params.timeout_s
        stopped_as: str | None = None
        code = None
        try:
            while code is None:
                for event in monitor.poll():
                    emit(event)
                if should_cancel is not None and not self._cancel.is_set() and should_cancel():
                    self.cancel()
                if timeout is not None and time.monotonic() - started > timeout:
                    self.cancel("timeout")
                if self._cancel.is_set():
                    stopped_as = self._cancel_reason
                    self._stop(process)
                    break
                code = process.wait_exit(poll_interval)
        except BaseException:
            # Whoever watched the run failed (a callback raised, KeyboardInterrupt, SystemExit): nobody would
            # collect it any more, so it must not run on.
            self._stop(process)
            raise
        for event in monitor.poll():
            emit(event)
        result = self._finish(process, monitor, stopped_as, started)
        emit(
            ProgressEvent(
                "status",
                result.status,
                result.duration_s,
                samples_done=monitor.last.samples_done if monitor.last else 0,
                samples_total=monitor.last.samples_total if monitor.last else None,
                pairs_done=sum(p.ok for p in result.pairs),
                pairs_total=len(result.pairs),
                message=result.error,
            )
        )
        return result

    # ---- a job run as parts -------------------------------------------------------------------
    def merge_parts(self, part_job_dirs: list[Path], stopped_as: str | None = None,
                    on_event: EventCallback | None = None) -> EvalResult:
        """The result of this evaluation when it ran apart: each part an `Evaluation` of this spec with some of its
        models, and all of its datasets, some of them (`datasets`) or one shard of one (`shard`), in a job dir of
        its own. The parts' latest runs are merged into one run dir of this job dir (two parts never share a
        predictions, results, logs or per-sample file: other models, other datasets, or another shard's
        `<abbr>_<i>.json`) and read as one run of the whole spec is, so scores, samples and manifest are the
        unsplit run's. When the parts ran some of the datasets, OpenCompass' evaluation stage then runs on the
        merged run (`-m eval -r`): it scores what no part scored, the shards (its eval task reads `<abbr>_0.json`,
        `<abbr>_1.json`, ... as the predictions of `<abbr>`), skips every pair a part scored, and writes the whole
        spec's resolved config and summary, as the unsplit run does. The parts' logs become this job's log, one
        after another. `stopped_as`: "cancelled" or "timeout" when a part was stopped so."""
        started = time.monotonic()
        built = self.built or self.prepare()
        outputs = workdir.outputs_dir(self.job_dir)
        metas = [workdir.read_json(Path(part) / JOB_META) for part in part_job_dirs]
        some_datasets = any(isinstance(meta, dict) and meta.get("part") for meta in metas)
        runs = [workdir.latest_run_dir(Path(part)) for part in part_job_dirs]
        names = [run.name for run in runs if run is not None]
        merged = outputs / (max(names) if names else time.strftime("%Y%m%d_%H%M%S"))
        shutil.rmtree(merged, ignore_errors=True)  # a merge done again (its worker died) starts clean
        merged.mkdir(parents=True)
        logs = []
        for part, run in zip(part_job_dirs, runs, strict=True):
            part = Path(part)
            for beside in (workdir.SAMPLE_METRICS, workdir.PREDICTION_CACHE_HITS):
                if (workdir.outputs_dir(part) / beside).is_dir():
                    shutil.copytree(workdir.outputs_dir(part) / beside, outputs / beside, dirs_exist_ok=True)
            for entry in run.iterdir() if run is not None else []:
                # One dumped config is enough when every part ran every dataset (the datasets are all that is read
                # from it); otherwise the evaluation stage below dumps the whole one. A part's summary covers its
                # own pairs only.
                if entry.name == "summary" or (entry.name == "configs" and (some_datasets or (merged / "configs").exists())):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, merged / entry.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(entry, merged / entry.name)
            if (part / LOG_NAME).is_file():
                logs.append(f"[aieval] ---- part {part.name} ----\n" + (part / LOG_NAME).read_text(errors="replace"))
        (self.job_dir / LOG_NAME).write_text("\n".join(logs), encoding="utf-8")
        if some_datasets and stopped_as is None:
            self._eval_only = True
            return self.run(on_event, resume=True)
        monitor = _Monitor(self, built, started)
        monitor.resolved = workdir.resolved_datasets(merged)
        return self._finish(None, monitor, stopped_as, started)

    def _finish(self, process: RunProcess | None, monitor: _Monitor, stopped_as: str | None, started: float) -> EvalResult:
        built = self.built
        assert built is not None
        run_dir = workdir.latest_run_dir(self.job_dir)
        result = EvalResult(status="failed", job_dir=self.job_dir, run_dir=run_dir)
        result.manifest = build_manifest(self.spec, built, self.data_cache)
        result.manifest["prediction_cache"] = manifest_entry(
            self.prediction_cache is not None and self.spec.params.prediction_cache,
            workdir.prediction_cache_hits_dir(self.job_dir))
        (self.job_dir / "manifest.json").write_text(
            json.dumps(result.manifest, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        if run_dir is not None and self.shard is not None:
            # A shard's run infers only (its scores are the merged job's): it did its work when every prediction is made.
            result.pairs = [PairOutcome(model, dataset, ok=done, error=None if done else "inference did not finish")
                            for model in built.models for dataset in monitor.dataset_names()
                            for done in [workdir.inference_finished(run_dir, model, dataset)]]
        elif run_dir is not None:
            result.scores, result.pairs = collect_scores(
                run_dir, built.models, monitor.dataset_names(), monitor.dataset_indexes()
            )
        result.duration_s = time.monotonic() - started
        if stopped_as is not None:
            result.status = stopped_as
            result.error = (
                f"stopped after exceeding the time limit of {self.spec.params.timeout_s:g} s"
                if stopped_as == "timeout"
                else "cancelled by request"
            )
            return result
        if result.pairs and all(p.ok for p in result.pairs):
            result.status = "succeeded"
            return result
        failed = [p for p in result.pairs if not p.ok]
        for pair in failed:
            pair.log_excerpt = _task_log_excerpt(run_dir, pair.model_abbr, pair.dataset_abbr)
        result.log_excerpt = _run_log_excerpt(self.job_dir / LOG_NAME)
        if not result.pairs:
            result.error = "OpenCompass stopped before running any task; see the log excerpt"
        else:
            names = ", ".join(f"{p.model_abbr}/{p.dataset_abbr}" for p in failed)
            result.error = f"{len(failed)} of {len(result.pairs)} tasks failed: {names}"
        cause = _last_exception_line(result.log_excerpt)
        if cause:
            result.error += f". Cause: {cause}"
        return result


def rescore_source(path: Path) -> Path:
    """The run dir a re-score copies its predictions from: `path` itself, or the latest run of a job dir."""
    if (path / "predictions").is_dir():
        return path
    latest = workdir.latest_run_dir(path)
    if latest is not None and (latest / "predictions").is_dir():
        return latest
    raise ValueError(f"rescore_from: {path} is neither a finished run's directory nor a job directory with one")


def check_rescore_source(run_dir: Path, built: BuiltConfig, built_limit: int | None) -> None:
    """The source run must have evaluated the same models on the same datasets: its job metadata names the same
    model and dataset abbreviations, and every model has predictions there."""
    problems = []
    meta = workdir.read_json(run_dir.parent.parent / JOB_META)
    if isinstance(meta, dict):
        if sorted(meta.get("models") or {}) != sorted(built.models):
            problems.append(f"rescore_from: {run_dir} evaluated other models ({', '.join(meta.get('models') or {})})")
        ours = sorted(d.abbr for d in built.datasets if d.abbr)
        if sorted(meta.get("custom_datasets") or {}) != ours:
            problems.append(f"rescore_from: {run_dir} evaluated other uploaded datasets")
        source_limit = ((meta.get("spec") or {}).get("params") or {}).get("limit")
        if source_limit != built_limit:
            problems.append(f"rescore_from: {run_dir} evaluated {source_limit or 'all'} samples per dataset, "
                            f"this spec {built_limit or 'all'}")
    manifest = workdir.read_json(run_dir.parent.parent / "manifest.json")
    if isinstance(manifest, dict):
        # the answers are judged against the file's references: the file must be the one the predictions came from
        source = {d.get("name"): d.get("sha256") for d in manifest.get("datasets") or [] if d.get("kind") == "custom"}
        for planned in built.datasets:
            if planned.abbr and planned.spec.name in source and source[planned.spec.name] != planned.sha256:
                problems.append(f"rescore_from: the file of dataset {planned.spec.name!r} changed since {run_dir}")
    for abbr in built.models:
        if not (run_dir / "predictions" / abbr).is_dir():
            problems.append(f"rescore_from: {run_dir} has no predictions of model {abbr!r}")
    if problems:
        raise SpecError(problems)


def copy_predictions(source_run: Path, job_dir: Path) -> Path:
    """A new run dir in job_dir holding a byte-for-byte copy of the source run's finished predictions (and the
    endpoint models' per-sample records and prediction cache hits beside it), for OpenCompass' `-m eval -r` to
    score."""
    import shutil
    from datetime import datetime

    run_dir = workdir.outputs_dir(job_dir) / datetime.now().strftime("%Y%m%d_%H%M%S")
    for source in sorted((source_run / "predictions").rglob("*.json")):
        if source.name.startswith("tmp_"):
            continue  # an unfinished shard: OpenCompass would resume inference from it
        target = run_dir / "predictions" / source.relative_to(source_run / "predictions")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    metrics = source_run.parent / workdir.SAMPLE_METRICS
    if metrics.is_dir():
        shutil.copytree(metrics, workdir.sample_metrics_dir(job_dir), dirs_exist_ok=True)
    hits = source_run.parent / workdir.PREDICTION_CACHE_HITS  # the copied predictions' origin stays told
    if hits.is_dir():
        shutil.copytree(hits, workdir.prediction_cache_hits_dir(job_dir), dirs_exist_ok=True)
    return run_dir


class _Monitor:
    """Turns the growing work dir and log into progress and log events."""

    def __init__(self, evaluation: Evaluation, built: BuiltConfig, started: float):
        self.evaluation = evaluation
        self.built = built
        self.started = started
        self.log_path = evaluation.job_dir / LOG_NAME
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.partial_line = ""
        self.resolved: list[workdir.ResolvedDataset] | None = None
        self.last: ProgressEvent | None = None
        self.first_progress: tuple[float, int] | None = None

    def dataset_indexes(self) -> dict[str, int | None]:
        indexes: dict[str, int | None] = {d.abbr: d.index for d in self.built.datasets if d.abbr}
        for dataset in self.resolved or []:
            if dataset.builtin_index is not None:
                indexes[dataset.abbr] = dataset.builtin_index
        return indexes

    def dataset_names(self) -> dict[str, str]:
        names = {d.abbr: d.spec.name for d in self.built.datasets if d.abbr}
        if self.resolved is not None:
            return {d.abbr: names.get(d.abbr, d.abbr) for d in self.resolved}
        return names

    def poll(self) -> list[ProgressEvent]:
        events = []
        lines = self._new_log_lines()
        elapsed = time.monotonic() - self.started
        if lines:
            for start in range(0, len(lines), MAX_LOG_LINES_PER_EVENT):
                events.append(ProgressEvent("log", self.last.stage if self.last else "running", elapsed,
                                            lines=lines[start : start + MAX_LOG_LINES_PER_EVENT]))
        progress = self._progress(elapsed)
        if progress is not None and (self.last is None or _changed(self.last, progress)):
            events.append(progress)
            self.last = progress
        return events

    def _new_log_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.log_offset)
                data = handle.read(4 << 20)
        except OSError:
            return []
        self.log_offset += len(data)
        text = self.partial_line + data.decode("utf-8", errors="replace")
        parts = re.split(r"\r\n|\r|\n", text)
        self.partial_line = parts.pop()
        return [line for line in parts if line.strip()]

    def _progress(self, elapsed: float) -> ProgressEvent | None:
        run_dir = workdir.latest_run_dir(self.evaluation.job_dir)
        if run_dir is None:
            return None
        if self.resolved is None:
            self.resolved = workdir.resolved_datasets(run_dir)
            if self.resolved is None:
                return None
        names = self.dataset_names()
        indexes = self.dataset_indexes()
        rows = {d.abbr: d.rows for d in self.built.datasets if d.abbr}
        pairs = []
        for model_abbr, model_name in self.built.models.items():
            for dataset in self.resolved:
                limit = workdir.range_limit(dataset.test_range)
                known = rows.get(dataset.abbr)
                total = min(x for x in (known, limit) if x is not None) if (known or limit) else None
                pair = PairProgress(model_name, model_abbr, names.get(dataset.abbr, dataset.abbr), dataset.abbr,
                                    dataset_index=indexes.get(dataset.abbr), total=total)
                done = workdir.predictions_done(run_dir, model_abbr, dataset.abbr)
                result = workdir.read_json(workdir.results_file(run_dir, model_abbr, dataset.abbr))
                if isinstance(result, dict):
                    pair.state = "failed" if "error" in result else "evaluated"
                elif workdir.inference_finished(run_dir, model_abbr, dataset.abbr) and (
                    pair.total is None or (done or 0) >= pair.total  # shards may still be to come
                ):
                    pair.state = "inferred"
                elif done is not None:
                    pair.state = "inferring"
                pair.done = done or 0
                if pair.state in ("inferred", "evaluated"):
                    pair.total = pair.done  # the real size, now known even without a limit
                pairs.append(pair)
        samples_done = sum(p.done or 0 for p in pairs)
        totals = [p.total for p in pairs]
        samples_total = sum(totals) if all(t is not None for t in totals) else None
        if all(p.state in ("evaluated", "failed") for p in pairs):
            stage = "summarize"
        elif all(p.state in ("inferred", "evaluated", "failed") for p in pairs):
            stage = "eval"
        else:
            stage = "infer"
        return ProgressEvent(
            "progress",
            stage,
            elapsed,
            samples_done=samples_done,
            samples_total=samples_total,
            pairs_done=sum(p.state in ("evaluated", "failed") for p in pairs),
            pairs_total=len(pairs),
            eta_s=self._eta(samples_done, samples_total),
            pairs=pairs,
        )

    def _eta(self, done: int, total: int | None) -> float | None:
        now = time.monotonic()
        if self.first_progress is None:
            if done > 0:
                self.first_progress = (now, done)
            return None
        since, base = self.first_progress
        if total is None or done <= base or now <= since:
            return None
        rate = (done - base) / (now - since)
        return max(0.0, (total - done) / rate)


def _changed(before: ProgressEvent, after: ProgressEvent) -> bool:
    return (
        before.stage != after.stage
        or before.samples_done != after.samples_done
        or before.samples_total != after.samples_total
        or [p.state for p in before.pairs] != [p.state for p in after.pairs]
    )


def _tail(path: Path, max_lines: int = 60) -> str | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    return "\n".join(lines[-max_lines:]) or None


def _run_log_excerpt(log: Path) -> str | None:
    """The last traceback in the run log if there is one, otherwise its last lines."""
    text = _tail(log, max_lines=400)
    if text is None:
        return None
    at = text.rfind(_TRACEBACK)
    excerpt = text[at:] if at >= 0 else text
    return "\n".join(excerpt.splitlines()[-60:])


def _last_exception_line(text: str | None) -> str | None:
    for line in reversed((text or "").splitlines()):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line.strip()):
            return line.strip()[:500]
    return None


def _task_log_excerpt(run_dir: Path | None, model_abbr: str, dataset_abbr: str) -> str | None:
    if run_dir is None:
        return None
    for log in workdir.task_logs(run_dir, model_abbr, dataset_abbr):
        if log.exists():
            return _run_log_excerpt(log)
    return None
