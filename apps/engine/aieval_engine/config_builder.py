"""EvalSpec -> an OpenCompass config file.

OpenCompass configs are Python that OpenCompass executes, so the file is rendered from plain data by
`render_literal`: user text can only ever appear as a quoted constant, and the only bare names in the
file are the fixed class references in `REFERENCES`. Model and dataset names are turned into safe
OpenCompass abbreviations (they become directory names); the display names live in the job's
metadata, not in the config. API keys never enter the file: each endpoint names an environment
variable that only the OpenCompass process receives.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalogue import BuiltinDataset, _imported_module, resolve_builtin
from .datafiles import validate_data_file, write_canonical_jsonl
from .judge import JUDGE_DEFAULT_MAX_OUT_LEN, JUDGE_PROMPTS, detect_prompt_language, weights_signature
from .slurm import slurm_job_comment
from .spec import (
    DEFAULT_MAX_OUT_LEN,
    BuiltinDatasetSpec,
    CustomDatasetSpec,
    DifyModelSpec,
    EndpointModelSpec,
    EvalSpec,
    HuggingFaceModelSpec,
    OpenAIModelSpec,
    RunParams,
    SpecError,
)

# Bare names the generated config may contain, with the import that provides each.
REFERENCES = {
    "HuggingFacewithChatTemplate": "from opencompass.models import HuggingFacewithChatTemplate",
    "HuggingFaceBaseModel": "from opencompass.models import HuggingFaceBaseModel",
    "SecretKeyOpenAISDK": "from aieval_engine.oc_ext import SecretKeyOpenAISDK",
    "DifyChatModel": "from aieval_engine.oc_ext import DifyChatModel",
    "ContainsAnswerEvaluator": "from aieval_engine.oc_ext import ContainsAnswerEvaluator",
    # LLM-as-judge (judge.py, oc_judge.py): OpenCompass' evaluator, our prompt, our judge model classes and reader.
    "GenericLLMEvaluator": "from opencompass.evaluator import GenericLLMEvaluator",
    "PromptTemplate": "from opencompass.openicl.icl_prompt_template import PromptTemplate",
    "CustomDataset": "from opencompass.datasets import CustomDataset",
    "CachedJudgeOpenAISDK": "from aieval_engine.oc_judge import CachedJudgeOpenAISDK",
    "CachedJudgeDifyChatModel": "from aieval_engine.oc_judge import CachedJudgeDifyChatModel",
    "CachedJudgeHuggingFaceChat": "from aieval_engine.oc_judge import CachedJudgeHuggingFaceChat",
    "CachedJudgeHuggingFaceBase": "from aieval_engine.oc_judge import CachedJudgeHuggingFaceBase",
    "judge_verdict_postprocess": "from aieval_engine.oc_judge import judge_verdict_postprocess",
    "generic_llmjudge_verdicts_postprocess": "from aieval_engine.oc_judge import generic_llmjudge_verdicts_postprocess",
    "QuickNumWorkerPartitioner": "from aieval_engine.oc_ext import QuickNumWorkerPartitioner",
    "QuickNaivePartitioner": "from aieval_engine.oc_ext import QuickNaivePartitioner",
    "LocalRunner": "from opencompass.runners import LocalRunner",
    "SlurmRunner": "from opencompass.runners import SlurmRunner",
    "PooledInferTask": "from aieval_engine.oc_infer_task import PooledInferTask",
    "OpenICLEvalTask": "from opencompass.tasks import OpenICLEvalTask",
}

API_META_TEMPLATE = {
    "round": [
        {"role": "HUMAN", "api_role": "HUMAN"},
        {"role": "BOT", "api_role": "BOT", "generate": True},
    ]
}

_TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16", "auto": "auto"}


@dataclass(frozen=True)
class Ref:
    """A bare name in the generated config; only names in REFERENCES are accepted."""

    name: str

    def __post_init__(self):
        if self.name not in REFERENCES:
            raise ValueError(f"{self.name!r} is not an allowed config reference")


def render_literal(value: Any) -> str:
    """Python source for plain data. Strings go through repr(), so they are always inert constants."""
    if isinstance(value, Ref):
        return value.name
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite numbers cannot be written into a config")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("config keys must be strings")
            items.append(f"{key!r}: {render_literal(item)}")
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} into a config")


_ABBR_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_SHARD_SUFFIX = re.compile(r"_\d+$")


def safe_abbr(name: str, taken: set[str]) -> str:
    """A directory-safe, unique OpenCompass abbreviation derived from a display name."""
    slug = _ABBR_UNSAFE.sub("_", name).strip("._-")[:48] or "item"
    # OpenCompass names the shards of a split dataset <abbr>_<n>: no abbr may look like one.
    if slug != name or _SHARD_SUFFIX.search(slug):
        slug = f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    abbr, n = slug, 2
    while abbr in taken:
        abbr, n = f"{slug}-{n}", n + 1
    taken.add(abbr)
    return abbr


@dataclass
class PlannedDataset:
    spec: BuiltinDatasetSpec | CustomDatasetSpec
    infer_method: str
    index: int  # position in the spec's datasets
    builtin: BuiltinDataset | None = None
    abbr: str | None = None  # custom datasets only; built-in abbrs are OpenCompass' own
    rows: int | None = None  # custom datasets only (known before the run)
    sha256: str | None = None  # of the user's original file
    data_type: str | None = None
    evaluated_path: Path | None = None  # the file OpenCompass reads (the canonical copy)
    needs_judge: bool = False  # scored by the judge model (a custom "judge" scorer, or a built-in judge config)


@dataclass
class BuiltConfig:
    path: Path
    text: str
    models: dict[str, str]  # abbr -> display name
    datasets: list[PlannedDataset]
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class DatasetShard:
    """One index range of one of the spec's uploaded datasets, cut the way OpenCompass' SizePartitioner cuts a large
    dataset (opencompass/partitioners/size.py, split_dataset): the abbr suffixed `_<index>`, the reader's test_range
    followed by `[start: stop]`. OpenCompass' eval task reads `<abbr>_0.json`, `<abbr>_1.json`, ... as the predictions
    of `<abbr>` when `<abbr>.json` is missing (opencompass/tasks/openicl_eval.py, _load_predictions), which is how the
    shards' runs, merged, are scored as the whole dataset (runner.Evaluation.merge_parts)."""

    dataset: int  # the spec's dataset index
    index: int  # which shard: 0, 1, ...
    start: int
    stop: int

    def abbr(self, whole: str) -> str:
        return f"{whole}_{self.index}"

    def test_range(self, whole: str | None) -> str:
        return f"{whole or ''}[{self.start}: {self.stop}]"


def shard_ranges(rows: int, shards: int, batch_size: int = 1) -> list[tuple[int, int]]:
    """`rows` cut into at most `shards` consecutive ranges of equal size (the last shorter), each a whole number of
    the model's batches: a shard's batches are then the very batches of the unsplit run, so a checkpoint that pads a
    batch answers each prompt exactly as it does unsplit."""
    step = -(-rows // max(1, shards))
    step = -(-step // batch_size) * batch_size
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def plan_datasets(spec: EvalSpec, canonical_dir: Path | None = None,
                  only: Collection[int] | None = None) -> list[PlannedDataset]:
    """Resolve every dataset of a spec, validating custom files row by row; raise SpecError on problems.

    With `canonical_dir`, each custom file is also written there as the clean JSON lines the config
    will point OpenCompass at (see datafiles.write_canonical_jsonl). With `only` (spec dataset indexes: one part of
    a job, services/fanout.py), only those are planned; the others still take their abbreviations, so every dataset
    keeps the abbreviation and index it has in the whole job."""
    planned: list[PlannedDataset] = []
    problems: list[tuple[int, str]] = []  # (dataset index, message): reported in the spec's order
    builtins: list[tuple[int, BuiltinDatasetSpec]] = []
    customs: list[tuple[int, CustomDatasetSpec]] = []
    for i, dataset in enumerate(spec.datasets):
        (builtins if isinstance(dataset, BuiltinDatasetSpec) else customs).append((i, dataset))
    # Custom datasets must not take a built-in's abbreviation: both would write the same result files.
    taken: set[str] = set()
    resolved: dict[int, PlannedDataset] = {}
    for i, dataset in builtins:
        try:
            builtin = resolve_builtin(dataset.config)
        except ValueError as exc:
            problems.append((i, f"datasets[{i}] ({dataset.display_name}): {exc}"))
            continue
        taken.update(builtin.abbrs)
        if only is not None and i not in only:
            continue
        needs_judge = builtin_needs_judge(builtin)
        if needs_judge and spec.judge is None:
            problems.append((i, f"datasets[{i}] ({dataset.display_name}): {builtin.name} is scored by a judge model "
                                "(OpenCompass' GenericLLMEvaluator): choose a judge model"))
            continue
        resolved[i] = PlannedDataset(dataset, "ppl" if "_ppl" in builtin.name else "gen", i, builtin=builtin,
                                     needs_judge=needs_judge)
    for i, dataset in customs:
        where = f"datasets[{i}] ({dataset.display_name})"
        abbr = safe_abbr(dataset.name, taken)
        if only is not None and i not in only:
            continue
        try:
            if canonical_dir is None:
                info = validate_data_file(dataset.path, dataset.data_type)
            else:
                info = write_canonical_jsonl(dataset.path, canonical_dir / f"{abbr}.jsonl", dataset.data_type)
        except ValueError as exc:
            problems.append((i, f"{where}: {exc}"))
            continue
        if dataset.scorer in ("contains", "judge") and info.data_type != "qa":
            problems.append((i, f"{where}: the '{dataset.scorer}' scorer is for question-answer files, "
                                "not multiple choice"))
            continue
        if dataset.infer_method == "ppl" and info.data_type != "mcq":
            problems.append((i, f"{where}: ppl (likelihood) scoring needs a multiple-choice file"))
            continue
        resolved[i] = PlannedDataset(
            dataset,
            dataset.infer_method,
            i,
            abbr=abbr,
            rows=info.rows,
            sha256=info.sha256,
            data_type=info.data_type,
            evaluated_path=canonical_dir / f"{abbr}.jsonl" if canonical_dir is not None else Path(dataset.path),
            needs_judge=dataset.scorer == "judge",
        )
    planned = [resolved[i] for i in sorted(resolved)]
    messages = [message for _, message in sorted(problems, key=lambda item: item[0])]
    if any(d.infer_method == "ppl" for d in planned):
        for model in spec.models:
            if isinstance(model, OpenAIModelSpec):
                messages.append(
                    f"models ({model.name}): ppl datasets need the log-likelihood of prompts, which "
                    "OpenAI-compatible endpoints do not return reliably; use gen datasets for endpoints"
                )
            elif isinstance(model, DifyModelSpec):
                messages.append(
                    f"models ({model.name}): ppl datasets need the log-likelihood of prompts; a Dify app "
                    "only returns its answer, so use gen datasets for Dify apps"
                )
    if messages:
        raise SpecError(messages)
    return planned


# The rate given to OpenCompass when a spec sets none (the spec's own limit is at most 1000 per second).
UNLIMITED_QUERY_PER_SECOND = 1000
# Requests in flight when concurrency is unset and nothing adapts it: a Dify app (sent by OpenCompass' own batches),
# and an OpenAI-compatible model on the paths the request pool leaves to OpenCompass (oc_pool: multi-round chats...).
UNADAPTED_CONCURRENCY = 8


def _endpoint_fields(model, abbr: str, key_env: str | None, max_out_len: int, *, pooled: bool) -> dict:
    """What every remote model (EndpointModelSpec) sets the same way. `pooled`: its requests go through the
    continuous request pool (oc_pool.py), whose limiter adapts an unset concurrency to the server."""
    # Only a model with a shared budget gets the field, so every other config stays as it was.
    budget = {"shared_budget": model.shared_budget.model_dump()} if model.shared_budget else {}
    ceiling = model.concurrency_ceiling()
    concurrency = min(model.concurrency, ceiling) if model.concurrency else None
    batch = concurrency or min(UNADAPTED_CONCURRENCY, ceiling)
    # What the request pool's limiter is built from (concurrency.limiter_for): concurrency None = adaptive; and
    # whether the pool streams its requests (oc_async.py).
    pool = {"request_pool": {"concurrency": concurrency, "max_concurrency": ceiling,
                             "query_per_second": model.query_per_second}, "stream": model.stream} if pooled else {}
    return {
        **budget,
        **pool,
        "sample_metrics": abbr,  # the name its latency and token records go under (sample_metrics.py)
        "key_env": key_env,
        "meta_template": API_META_TEMPLATE,
        # OpenCompass' BaseAPIModel wants a rate: with none set, one it never holds a run back at.
        "query_per_second": model.query_per_second or UNLIMITED_QUERY_PER_SECOND,
        "batch_size": batch,
        "max_workers": batch,
        "retry": model.retries,
        "timeout": model.timeout,
        "max_out_len": max_out_len,
        "run_cfg": {"num_gpus": 0},
    }


def _model_config(model, abbr: str, params, key_env: str | None, for_ppl: bool = False) -> dict:
    # OpenCompass uses a model's max_out_len only for datasets whose inferencer sets none (OpenICLInferTask fills
    # in missing inferencer keys from the model): it never overrides a built-in config's own setting.
    max_out_len = getattr(model, "max_out_len", None) or params.max_out_len or DEFAULT_MAX_OUT_LEN
    if isinstance(model, DifyModelSpec):
        return {
            "type": Ref("DifyChatModel"),
            "abbr": abbr,
            "path": model.base_url,
            "base_url": model.base_url,
            # (name, value) pairs, not a dict: OpenCompass dumps task configs with mmengine, which writes a dict
            # as dict(name=value) - a syntax error for a variable a Dify app may well call `class` or `from`.
            "inputs": [[name, value] for name, value in model.inputs.items()],
            # the app decides its answers' length; OpenCompass wants a value
            **_endpoint_fields(model, abbr, key_env, max_out_len, pooled=False),
        }
    if isinstance(model, OpenAIModelSpec):
        return {
            "type": Ref("SecretKeyOpenAISDK"),
            "abbr": abbr,
            "path": model.model,
            "openai_api_base": model.base_url,
            "tokenizer_path": model.tokenizer_path,
            "temperature": model.temperature,
            "max_seq_len": model.max_seq_len,
            **_endpoint_fields(model, abbr, key_env, max_out_len, pooled=True),
        }
    assert isinstance(model, HuggingFaceModelSpec)
    chat = model.mode == "chat" and not for_ppl
    # OpenCompass' HF classes default to trust_remote_code=True for model and tokenizer: a checkpoint folder's own
    # Python files would run in the OpenCompass process. Only a spec that asks for it gets that.
    remote_code = {"trust_remote_code": model.trust_remote_code}
    model_kwargs: dict[str, Any] = {"torch_dtype": _TORCH_DTYPES[model.dtype], **remote_code}
    if model.num_gpus == 0:
        model_kwargs["device_map"] = "cpu"
    return {
        "type": Ref("HuggingFacewithChatTemplate" if chat else "HuggingFaceBaseModel"),
        "abbr": abbr,
        "path": str(Path(model.path).resolve()),
        "tokenizer_path": str(Path(model.tokenizer_path or model.path).resolve()),
        "model_kwargs": model_kwargs,
        "tokenizer_kwargs": remote_code,
        "generation_kwargs": {"do_sample": False},
        "max_seq_len": model.max_seq_len,
        "max_out_len": max_out_len,
        "batch_size": model.batch_size,
        "run_cfg": {"num_gpus": model.num_gpus},
    }


_JUDGE_CLASSES = {
    "SecretKeyOpenAISDK": "CachedJudgeOpenAISDK",
    "DifyChatModel": "CachedJudgeDifyChatModel",
    "HuggingFacewithChatTemplate": "CachedJudgeHuggingFaceChat",
    "HuggingFaceBaseModel": "CachedJudgeHuggingFaceBase",
}
# How hard and where from a judge is called: none of it changes a reply, so none of it is in the cache key.
_NOT_JUDGE_IDENTITY = {"abbr", "key_env", "query_per_second", "request_pool", "stream", "batch_size", "max_workers",
                       "retry", "timeout",
                       "shared_budget", "run_cfg", "judge_cache", "sample_metrics"}
JUDGE_KEY_ENV = "AIEVAL_JUDGE_API_KEY"


def judge_model_config(spec: EvalSpec, judge_cache: Path | None, key_env: str | None) -> dict:
    """The judge's OpenCompass model config: the project's class for its kind with a call cache in front
    (oc_judge.py), the same settings as when that model is evaluated, and room for a rationale."""
    assert spec.judge is not None
    model = spec.judge.model
    config = _model_config(model, "judge", spec.params, key_env)
    config.pop("sample_metrics", None)  # the judge's calls are not the evaluated models' answers
    config["type"] = Ref(_JUDGE_CLASSES[config["type"].name])
    config["max_out_len"] = getattr(model, "max_out_len", None) or JUDGE_DEFAULT_MAX_OUT_LEN
    if judge_cache is None:
        config["judge_cache"] = None
        return config
    # `model_class`, not `type`: OpenCompass turns every `type` in a custom dataset's config into a class path (and
    # mmengine dumps configs as dict(key=...), so a key must also not be a Python keyword such as `class`).
    identity = {key: value for key, value in config.items() if key not in _NOT_JUDGE_IDENTITY and key != "type"}
    identity["model_class"] = config["type"].name
    if isinstance(model, HuggingFaceModelSpec):
        identity["weights"] = weights_signature(model.path)
    config["judge_cache"] = {"path": str(Path(judge_cache).resolve()), "identity": _plain(identity)}
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, Ref):
        return value.name
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _questions(path: Path) -> list[str]:
    import json

    questions = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                questions.append(str(json.loads(line).get("question", "")))
    return questions


def judge_prompt_language(spec: EvalSpec, planned: PlannedDataset) -> str:
    """The language of our judge prompt for a custom dataset: the spec's choice, or by its questions ('auto')."""
    assert spec.judge is not None
    if spec.judge.prompt_language != "auto":
        return spec.judge.prompt_language
    return detect_prompt_language(_questions(Path(planned.evaluated_path)))


def _custom_dataset_config(planned: PlannedDataset, limit: int | None, spec: EvalSpec | None = None,
                           judge: dict | None = None, shard: DatasetShard | None = None) -> dict:
    dataset = planned.spec
    assert isinstance(dataset, CustomDatasetSpec)
    path = str(Path(planned.evaluated_path).resolve())
    config: dict[str, Any] = {
        "path": path,
        "abbr": planned.abbr,
        "infer_method": planned.infer_method,
        "data_type": planned.data_type,
    }
    if limit:
        config["test_range"] = f"[0:{limit}]"
    if shard is not None:  # planned.abbr is already the shard's
        config["test_range"] = shard.test_range(config.get("test_range"))
    if dataset.scorer == "contains":
        config["evaluator"] = Ref("ContainsAnswerEvaluator")
    elif dataset.scorer == "judge":
        assert spec is not None and judge is not None
        # OpenCompass' GenericLLMEvaluator re-reads the same rows (dataset_cfg) and adds the model's answers as
        # `prediction` to the columns our prompt is filled from.
        reader = {"input_columns": ["question", "answer"], "output_column": "answer"}
        if limit:
            reader["test_range"] = f"[0:{limit}]"
        config["evaluator"] = Ref("GenericLLMEvaluator")
        config["evaluator_kwargs"] = {
            "prompt_template": {
                "type": Ref("PromptTemplate"),
                "template": {"round": [{"role": "HUMAN", "prompt": JUDGE_PROMPTS[judge_prompt_language(spec, planned)]}]},
            },
            "judge_cfg": judge,
            "dataset_cfg": {"type": Ref("CustomDataset"), "path": path, "reader_cfg": reader},
            "dict_postprocessor": {"type": Ref("judge_verdict_postprocess")},
        }
    return config


def _runner(params: RunParams, job_dir: Path, task: str) -> dict:
    """A stage's runner: OpenCompass' LocalRunner (processes on this machine), or its SlurmRunner when the spec says
    `slurm` (each task an `srun` of the same command LocalRunner would start). Slurm's names and arguments were
    checked against strict patterns (spec.SlurmSpec): SlurmRunner puts them into a shell command line."""
    runner = {"type": Ref("LocalRunner"), "max_num_workers": params.workers, "task": {"type": Ref(task)}}
    if params.slurm is None:
        return runner
    slurm = params.slurm
    return {
        **runner,
        "type": Ref("SlurmRunner"),
        "retry": slurm.retry,
        "partition": slurm.partition,
        "qos": slurm.qos,
        "quotatype": slurm.quotatype,
        # The comment marks this run's jobs, so that cancelling the run can scancel them (slurm.cancel_jobs).
        "extra_command": [*slurm.extra_args, f"--comment={slurm_job_comment(job_dir)}"],
    }


def build_config(
    spec: EvalSpec, job_dir: Path, environ: dict[str, str] | None = None, *, quick_pipeline: bool = True,
    judge_cache: Path | None = None, prediction_cache: Path | None = None,
    datasets: Collection[int] | None = None, shard: DatasetShard | None = None,
) -> BuiltConfig:
    """Write `config.py` for a spec into job_dir (created if needed) and describe what it contains.

    With quick_pipeline=False the config leaves the pipeline to OpenCompass' defaults, as a config written
    by hand would (benchmarks compare against that). `judge_cache`: the SQLite file the judge's replies are
    kept in (judge.JudgeCallCache); None calls the judge every time. `prediction_cache`: the SQLite file
    OpenAI-compatible models' answers are kept in (prediction_cache.py), used unless the spec's
    `params.prediction_cache` is false; None sends every prompt.
    `datasets` (spec dataset indexes) and `shard`: one part of a job fanned out over workers (services/fanout.py):
    only those datasets, or one shard of one uploaded dataset (DatasetShard), each under the abbreviation and index
    it has in the whole job."""
    environ = environ or {}
    if shard is not None:
        datasets = [shard.dataset]
    try:
        planned = plan_datasets(spec, canonical_dir=job_dir / "data", only=datasets)
    except SpecError:
        shutil.rmtree(job_dir / "data", ignore_errors=True)
        raise
    if shard is not None:
        item = planned[0] if planned else None
        if item is None or item.abbr is None or item.rows is None:
            raise SpecError([f"datasets[{shard.dataset}]: only an uploaded dataset can be cut into shards"])
        item.abbr = shard.abbr(item.abbr)
        item.rows = shard.stop - shard.start
    params = spec.params

    taken: set[str] = set()
    models: dict[str, str] = {}
    secret_env: dict[str, str] = {}
    gen_models: list[dict] = []
    ppl_models: list[dict] = []
    for i, model in enumerate(spec.models):
        abbr = safe_abbr(model.name, taken)
        models[abbr] = model.name
        key_env = None
        if isinstance(model, EndpointModelSpec):
            key = model.resolved_api_key(environ)
            if model.api_key_env and key is None:
                raise SpecError([f"models[{i}] ({model.name}): the environment variable {model.api_key_env} is not set"])
            if key is not None:
                key_env = f"AIEVAL_API_KEY_{i}"
                secret_env[key_env] = key
        gen_models.append(_model_config(model, abbr, params, key_env))
        if prediction_cache is not None and params.prediction_cache and isinstance(model, OpenAIModelSpec):
            # Only then does the model get the field: with the cache off, the config is the one it always was.
            gen_models[-1]["prediction_cache"] = {"path": str(Path(prediction_cache).resolve()),
                                                  "seed": params.seed, "model": abbr}
        if isinstance(model, HuggingFaceModelSpec):
            ppl_models.append(_model_config(model, abbr, params, key_env, for_ppl=True))
    judge: dict | None = None
    if spec.judge is not None and any(item.needs_judge for item in planned):
        judge_key_env = None
        if isinstance(spec.judge.model, EndpointModelSpec):
            key = spec.judge.model.resolved_api_key(environ)
            if spec.judge.model.api_key_env and key is None:
                raise SpecError([f"judge ({spec.judge.model.name}): the environment variable "
                                 f"{spec.judge.model.api_key_env} is not set"])
            if key is not None:
                judge_key_env = JUDGE_KEY_ENV
                secret_env[judge_key_env] = key
        judge = judge_model_config(spec, judge_cache, judge_key_env)

    lines = [
        "# Generated by ai-eval-system from a validated EvalSpec. Do not edit: regenerate instead.",
        "from mmengine.config import read_base",
    ]
    builtin_imports = []
    used_refs = {"SecretKeyOpenAISDK", "HuggingFacewithChatTemplate", "HuggingFaceBaseModel"}
    if any(isinstance(model, DifyModelSpec) for model in spec.models):
        used_refs.add("DifyChatModel")
    if quick_pipeline:
        used_refs |= {"SlurmRunner" if params.slurm else "LocalRunner", "PooledInferTask", "OpenICLEvalTask",
                      "QuickNumWorkerPartitioner", "QuickNaivePartitioner"}
    gen_parts: list[str] = []
    ppl_parts: list[str] = []
    judged_builtin_lists: list[str] = []
    for item in planned:
        target = ppl_parts if item.infer_method == "ppl" else gen_parts
        if item.builtin is not None:
            for var in item.builtin.dataset_vars:
                alias = f"builtin_{item.index}_{var}"  # workdir.resolved_datasets reads the index back
                builtin_imports.append(f"    from {item.builtin.module} import {var} as {alias}")
                target.append(f"*{alias}")
                if item.needs_judge:
                    judged_builtin_lists.append(alias)
        else:
            if item.spec.scorer == "contains":
                used_refs.add("ContainsAnswerEvaluator")
            if item.spec.scorer == "judge":
                used_refs |= {"GenericLLMEvaluator", "PromptTemplate", "CustomDataset", "judge_verdict_postprocess"}
            target.append(render_literal(_custom_dataset_config(item, params.limit, spec, judge, shard)))
    if judge is not None:
        used_refs.add(judge["type"].name)
    if judged_builtin_lists and judge is not None:
        used_refs.add("generic_llmjudge_verdicts_postprocess")
    if builtin_imports:
        lines += ["", "with read_base():", *builtin_imports]
    lines += [""] + [REFERENCES[name] for name in sorted(used_refs)]
    lines += [
        "",
        f"gen_datasets = [{', '.join(gen_parts)}]",
        f"ppl_datasets = [{', '.join(ppl_parts)}]",
        "datasets = gen_datasets + ppl_datasets",
    ]
    # Built-in configs carry their own reader and inferencer settings; overriding them is a plain data edit.
    overrides = []
    if params.limit:
        overrides += [
            "    if 'reader_cfg' in dataset:",
            f"        dataset['reader_cfg']['test_range'] = {render_literal(f'[0:{params.limit}]')}",
        ]
    # Unset, each built-in dataset generates as its config says (what the `opencompass` CLI does); set, it is
    # the user's deliberate override for every dataset.
    if params.max_out_len:
        overrides += [
            "    if 'inferencer' in dataset.get('infer_cfg', {}):",
            f"        dataset['infer_cfg']['inferencer']['max_out_len'] = {render_literal(params.max_out_len)}",
        ]
    if overrides:
        lines += ["for dataset in datasets:", *overrides, "del dataset"]
    if judged_builtin_lists and judge is not None:
        # The built-in config's judge_cfg=dict() means "the judge the user gives" (OpenCompass would otherwise read
        # OC_JUDGE_* variables): every empty judge_cfg in the datasets' evaluators, nested ones (CascadeEvaluator's
        # llm_evaluator) included, gets the judge model. A plain data edit; the prompt stays OpenCompass'.
        # OpenCompass' generic_llmjudge_postprocess keeps no verdict per sample: the same postprocessor with the
        # verdicts added (oc_judge.generic_llmjudge_verdicts_postprocess) takes its place.
        lines += [
            f"judge_model = {render_literal(judge)}",
            "judge_pending = list(datasets)",
            "judge_node = judge_type = None",
            "while judge_pending:",
            "    judge_node = judge_pending.pop()",
            "    if isinstance(judge_node, dict):",
            "        if 'judge_cfg' in judge_node and not judge_node['judge_cfg']:",
            "            judge_node['judge_cfg'] = judge_model",
            # The type is what the config imported: a function, mmengine's lazy import of it (whose str() is its
            # name), or a dotted name.
            "        judge_type = (judge_node.get('dict_postprocessor') or {}).get('type')",
            "        judge_type = judge_type.__name__ if type(judge_type).__name__ == 'function' else str(judge_type)",
            "        if judge_type.rsplit('.', 1)[-1] == 'generic_llmjudge_postprocess':",
            "            judge_node['dict_postprocessor']['type'] = generic_llmjudge_verdicts_postprocess",
            "        judge_pending.extend(v for k, v in judge_node.items() if k != 'judge_cfg')",
            "    elif isinstance(judge_node, (list, tuple)):",
            "        judge_pending.extend(judge_node)",
            "del judge_pending, judge_node, judge_model, judge_type",
        ]
    lines += ["", f"models = {render_literal(gen_models)}"]
    if ppl_parts and ppl_models:
        # OpenCompass' chat-template class cannot score likelihoods, so ppl datasets pair with the base class.
        lines += [
            f"ppl_models = {render_literal(ppl_models)}",
            "model_dataset_combinations = ["
            "dict(models=models, datasets=gen_datasets), dict(models=ppl_models, datasets=ppl_datasets)]",
        ]
    # The same pipeline OpenCompass builds by default (NumWorker partitioning for inference, Naive for
    # evaluation, local runner), with partitioners that skip formatting intermediate task files, and an infer task
    # that runs the pairs of endpoint models on the request pool at once (oc_infer_task.py; others as OpenCompass').
    workers = params.workers
    pipeline = {
        "infer": {
            "partitioner": {"type": Ref("QuickNumWorkerPartitioner"), "num_worker": workers},
            "runner": _runner(params, job_dir, "PooledInferTask"),
        },
        "eval": {
            "partitioner": {"type": Ref("QuickNaivePartitioner")},
            "runner": _runner(params, job_dir, "OpenICLEvalTask"),
        },
    }
    if quick_pipeline:
        lines += [""] + [f"{key} = {render_literal(value)}" for key, value in pipeline.items()]
    text = "\n".join(lines) + "\n"

    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "config.py"
    path.write_text(text, encoding="utf-8")
    return BuiltConfig(path=path, text=text, models=models, datasets=planned, secret_env=secret_env)


# ---- a built-in config's own generation settings -----------------------------------------------------------
# Inferencers that score likelihoods and generate nothing: an output length means nothing to them.
LIKELIHOOD_INFERENCERS = frozenset({
    "PPLInferencer", "PPLOnlyInferencer", "InferencePPLOnlyInferencer", "LLInferencer", "CLPInferencer",
    "MinKPercentInferencer", "SWCELossInferencer",
})
_UNREADABLE = object()  # a value the config computes, which reading its source cannot tell


@dataclass(frozen=True)
class InferencerSettings:
    inferencer: str  # class name, e.g. GenInferencer
    max_out_len: int | None  # None: the config sets none, the model's max_out_len applies
    stopping_criteria: tuple[str, ...] = ()
    readable: bool = True  # False when a value is computed in the config


@dataclass(frozen=True)
class GenerationSettings:
    """What a built-in config itself sets for generation: what a run without a max_out_len override uses."""

    inferencers: tuple[InferencerSettings, ...]

    @property
    def generates(self) -> bool:
        return any(i.inferencer not in LIKELIHOOD_INFERENCERS for i in self.inferencers)

    @property
    def generating(self) -> list[InferencerSettings]:
        return [i for i in self.inferencers if i.inferencer not in LIKELIHOOD_INFERENCERS]

    @property
    def max_out_len(self) -> list[int]:
        """The distinct output lengths the config's generating inferencers set, smallest first."""
        return sorted({i.max_out_len for i in self.generating if i.max_out_len is not None})

    @property
    def model_decides(self) -> bool:
        """Some generating inferencer sets no length: there the model's max_out_len applies."""
        return any(i.max_out_len is None and i.readable for i in self.generating)

    @property
    def stopping_criteria(self) -> list[str]:
        return list(dict.fromkeys(word for i in self.generating for word in i.stopping_criteria))

    @property
    def readable(self) -> bool:
        """False when the source does not tell (no inferencer found, or a value computed in the config)."""
        return bool(self.inferencers) and all(i.readable for i in self.inferencers)


def _class_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal(node: ast.expr, constants: dict[str, Any]) -> Any:
    """A literal or a module-level constant's value; _UNREADABLE for anything computed. Never evaluates code."""
    if isinstance(node, ast.Name):
        return constants.get(node.id, _UNREADABLE)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNREADABLE


def _inferencers_in(file: Path, seen: frozenset[Path] = frozenset()) -> list[InferencerSettings]:
    """Every `dict(type=...Inferencer, ...)` in a config file and the OpenCompass configs it imports, read as
    source with `ast` (the catalogue's way): OpenCompass' own files, but still never executed here."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _literal(node.value, {})
            if value is not _UNREADABLE:
                constants[node.targets[0].id] = value
    found: list[InferencerSettings] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _imported_module(node, file)
            if base is not None and base not in seen and base != file:  # a cycle would never end
                found += _inferencers_in(base, seen | {file})
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"):
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        name = _class_name(keywords["type"]) if "type" in keywords else None
        if not name or not name.endswith("Inferencer"):
            continue
        readable = not any(k.arg is None for k in node.keywords)  # dict(**other) may set anything
        max_out_len = None
        if "max_out_len" in keywords:
            value = _literal(keywords["max_out_len"], constants)
            if isinstance(value, int) and not isinstance(value, bool):
                max_out_len = value
            else:
                readable = False
        stops: tuple[str, ...] = ()
        if "stopping_criteria" in keywords:
            value = _literal(keywords["stopping_criteria"], constants)
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                stops = tuple(value)
            else:
                readable = False
        found.append(InferencerSettings(name, max_out_len, stops, readable))
    return found


@functools.cache
def _generation_settings_of(file: Path) -> GenerationSettings:
    return GenerationSettings(tuple(_inferencers_in(file)))


def builtin_generation_settings(builtin: BuiltinDataset) -> GenerationSettings:
    """The generation settings a built-in dataset config sets itself (inferencer class, output length, stop words)."""
    return _generation_settings_of(builtin.file)


# ---- built-in configs scored by a judge model ---------------------------------------------------------------
JUDGE_EVALUATOR = "GenericLLMEvaluator"


def _is_empty_dict(node: ast.expr | None, assignments: dict[str, ast.expr]) -> bool:
    """`dict()`, `{}`, or a module-level name bound to one of them."""
    if isinstance(node, ast.Name) and node.id in assignments:
        node = assignments[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return not node.args and not node.keywords
    return isinstance(node, ast.Dict) and not node.keys


def _empty_judge_cfgs_in(file: Path, seen: frozenset[Path] = frozenset()) -> int:
    """How many `dict(type=GenericLLMEvaluator, ...)` in a config file and the OpenCompass configs it imports leave
    judge_cfg empty (or out): those OpenCompass fills from OC_JUDGE_* variables, the platform from the spec's judge.
    Read as source with `ast`, never executed (as _inferencers_in)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    assignments = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    found = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _imported_module(node, file)
            if base is not None and base not in seen and base != file:
                found += _empty_judge_cfgs_in(base, seen | {file})
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"):
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        if "type" not in keywords or _class_name(keywords["type"]) != JUDGE_EVALUATOR:
            continue
        if "judge_cfg" not in keywords or _is_empty_dict(keywords["judge_cfg"], assignments):
            found += 1
    return found


@functools.cache
def _needs_judge(file: Path) -> bool:
    return _empty_judge_cfgs_in(file) > 0


def builtin_needs_judge(builtin: BuiltinDataset) -> bool:
    """Whether OpenCompass scores a built-in config with a judge model the user must give: a GenericLLMEvaluator
    (directly or inside e.g. a CascadeEvaluator) whose judge_cfg is empty."""
    return _needs_judge(builtin.file)


def scored_by_judge(spec: EvalSpec, dataset_index: int) -> bool:
    """Whether the spec's dataset at `dataset_index` is scored by its judge model."""
    dataset = spec.datasets[dataset_index]
    if isinstance(dataset, CustomDatasetSpec):
        return dataset.scorer == "judge"
    try:
        return builtin_needs_judge(resolve_builtin(dataset.config))
    except ValueError:
        return False
