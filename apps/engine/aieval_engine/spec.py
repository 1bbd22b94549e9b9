"""EvalSpec: the validated description of one evaluation.

A spec is plain data. Everything a user types ends up here first, is checked here, and only validated
values ever reach the config builder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A built-in dataset config is named like `gsm8k_gen` or, when that name exists in several folders,
# `gsm8k/gsm8k_gen`.
BUILTIN_CONFIG_NAME = re.compile(r"^([A-Za-z0-9_\-]+/)*[A-Za-z0-9_\-]+$")
# C0 and C1 controls and the Unicode line/paragraph separators: anything that can break a line.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class SpecError(ValueError):
    """A spec that cannot be used, with one readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def clean_display_name(value: str) -> str:
    """A name shown to people: trimmed, non-empty, on one line."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters such as newlines")
    return value


DisplayName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_display_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def check_base_url(value: str) -> str:
    """The rules for an HTTP API's base address (OpenAI-compatible endpoints, Dify apps): http(s) with a
    host, no spaces or control characters, no ?query or #fragment; returned with exactly one trailing '/'."""
    import httpx

    try:
        url = httpx.URL(value)
    except Exception as exc:  # httpx raises several types for malformed URLs
        raise ValueError(f"is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
    if CONTROL_CHARS.search(value) or " " in value:
        raise ValueError("must not contain spaces or control characters")
    if url.query or url.fragment or "?" in value or "#" in value:
        raise ValueError("must be the API's base address without ?query or #fragment, e.g. http://host:8000/v1")
    # What no outbound policy allows (user@host, a literal metadata or link-local address) is refused here,
    # without DNS; the rest of the policy applies when connecting (netpolicy.py).
    from .netpolicy import OutboundPolicyError, check_url_form

    try:
        check_url_form(value)
    except OutboundPolicyError as exc:
        raise ValueError(str(exc)) from None
    return value.rstrip("/") + "/"


class SharedBudgetSpec(_Strict):
    """A cap on requests in flight shared by every run whose model names the same key (budget.py): three runs
    against one model server share its cap instead of each sending its own `concurrency`."""

    key: Annotated[str, Field(min_length=1, max_length=300, description="runs naming the same key share the cap")]
    max_concurrency: Annotated[int, Field(ge=1, le=100_000, description="requests in flight across those runs")]

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters")
        return value


class EndpointModelSpec(_Strict):
    """What every remote model reached over HTTP shares: its address, its key and how hard to call it."""

    kind: str
    name: DisplayName
    base_url: Annotated[str, Field(max_length=2000)]
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable that holds the API key"
    )
    # Held in memory only: excluded from every dump of the spec and passed to the run through its
    # environment, never through a file.
    api_key: SecretStr | None = Field(default=None, exclude=True)
    # None (the default): the run finds how many requests the server takes (concurrency.AdaptiveLimiter), up to
    # max_concurrency; a number: exactly that many in flight.
    concurrency: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        default=None, description="requests in flight; unset = adapt to the server up to max_concurrency")
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=256, description="the most requests in flight an adaptive concurrency may reach")
    query_per_second: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="a cap on requests started per second; unset = none")
    timeout: Annotated[int, Field(ge=1, le=3600)] = 120
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    shared_budget: SharedBudgetSpec | None = Field(
        default=None, description="a request cap shared with other runs against the same server"
    )

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_VAR_NAME.match(value):
            raise ValueError("must be an environment variable name such as OPENAI_API_KEY")
        return value

    def concurrency_ceiling(self) -> int:
        """The most requests this model may have in flight: max_concurrency, or the shared budget's cap (an
        administrator's per-model setting on the server) when that is lower."""
        if self.shared_budget is not None:
            return min(self.max_concurrency, self.shared_budget.max_concurrency)
        return self.max_concurrency

    def resolved_api_key(self, environ: dict[str, str]) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return environ.get(self.api_key_env)
        return None


class OpenAIModelSpec(EndpointModelSpec):
    """An OpenAI-compatible chat endpoint (vLLM, SGLang, LMDeploy, llama.cpp, OpenAI...)."""

    kind: Literal["openai"] = "openai"
    model: Annotated[str, Field(min_length=1, max_length=500, description="model name sent in requests")]
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_out_len: Annotated[int, Field(ge=1, le=32768)] | None = None
    max_seq_len: Annotated[int, Field(ge=16, le=1_048_576)] = 4096
    tokenizer_path: str | None = Field(
        default=None, description="local Hugging Face tokenizer used to count prompt tokens"
    )
    stream: bool = Field(
        default=True, description="stream answers, which records each answer's time to first token; turn off for a "
        "server that cannot stream (the answers are the same either way)"
    )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters")
        return value


DIFY_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class DifyModelSpec(EndpointModelSpec):
    """A Dify chat app, called through its chat-messages API (blocking mode): each prompt is the `query`
    of a new conversation and the app's `answer` is the prediction. The app's own settings (model,
    temperature, length) apply; `inputs` fills the app's input variables, the same for every sample."""

    kind: Literal["dify"] = "dify"
    inputs: Annotated[dict[str, Annotated[str, Field(max_length=10_000)]], Field(max_length=64)] = Field(
        default_factory=dict, description="values for the app's input variables, sent with every query"
    )

    @field_validator("inputs")
    @classmethod
    def _check_inputs(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not DIFY_INPUT_NAME.match(name)]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not a Dify variable name (letters, digits and '_', not starting with a digit)"
            )
        return value


class HuggingFaceModelSpec(_Strict):
    """A local Hugging Face checkpoint directory, run on this machine."""

    kind: Literal["huggingface"] = "huggingface"
    name: DisplayName
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    mode: Literal["chat", "base"] = "chat"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_seq_len: Annotated[int, Field(ge=16, le=1_048_576)] = 2048
    max_out_len: Annotated[int, Field(ge=1, le=32768)] | None = None
    tokenizer_path: str | None = None
    num_gpus: Annotated[int, Field(ge=0, le=64)] = 0
    trust_remote_code: bool = Field(
        default=False,
        description="run the Python files shipped with the checkpoint (transformers' trust_remote_code); only for "
        "checkpoints whose code you trust",
    )

    @field_validator("path", "tokenizer_path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None and CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters")
        return value


ModelSpec = Annotated[OpenAIModelSpec | HuggingFaceModelSpec | DifyModelSpec, Field(discriminator="kind")]


class BuiltinDatasetSpec(_Strict):
    """One of OpenCompass' shipped dataset configs, e.g. `gsm8k_gen`."""

    kind: Literal["builtin"] = "builtin"
    config: Annotated[str, Field(min_length=1, max_length=200)]

    @field_validator("config")
    @classmethod
    def _check_config(cls, value: str) -> str:
        value = value.removesuffix(".py")
        if not BUILTIN_CONFIG_NAME.match(value):
            raise ValueError(
                "must be the name of an OpenCompass dataset config such as gsm8k_gen "
                "(letters, digits, '_' and '-', optionally prefixed by its folder: gsm8k/gsm8k_gen)"
            )
        return value

    @property
    def display_name(self) -> str:
        return self.config


class CustomDatasetSpec(_Strict):
    """A user's own jsonl/csv file: MCQ (question, A, B, ..., answer) or QA (question, answer)."""

    kind: Literal["custom"] = "custom"
    name: DisplayName
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    data_type: Literal["mcq", "qa"] | None = Field(default=None, description="detected from the columns if omitted")
    infer_method: Literal["gen", "ppl"] = "gen"
    scorer: Literal["exact", "contains", "judge"] = Field(
        default="exact",
        description=(
            "QA only. exact: the answer must equal the reference (OpenCompass' AccEvaluator); "
            "contains: the normalised reference must appear in the normalised answer; "
            "judge: the evaluation's judge model decides (OpenCompass' GenericLLMEvaluator, see `judge`)"
        ),
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters")
        if not value.lower().endswith((".jsonl", ".csv")):
            raise ValueError("must be a .jsonl or .csv file")
        return value

    @property
    def display_name(self) -> str:
        return self.name


DatasetSpec = Annotated[BuiltinDatasetSpec | CustomDatasetSpec, Field(discriminator="kind")]


# A model's max_out_len when its spec sets none: OpenCompass uses it only for datasets whose own config sets no
# output length (custom files, many built-in configs), never over a config's own setting.
DEFAULT_MAX_OUT_LEN = 256

# Slurm names (partition, QOS, quota type): OpenCompass' SlurmRunner writes them into a shell command line, so only
# characters that mean nothing to a shell are accepted.
SLURM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
# One extra srun argument (`--time=01:00:00`, `-c`, `4`, `--constraint=a100`): the same, plus what option values
# are written with (=:,/@%+). No spaces, quotes, `$`, `;`, `|`, `&`, `<`, `>`, backslashes or backquotes.
SLURM_ARG = re.compile(r"^[A-Za-z0-9_.\-=:,/@%+]{1,256}$")


class SlurmSpec(_Strict):
    """Run OpenCompass' tasks as Slurm jobs through OpenCompass' own SlurmRunner: each task is one
    `srun ... python <task> <task config>` on a node of the cluster. The nodes must see the job directory and the
    Python environment at the same paths as the machine that starts the run (docs/DEPLOYMENT.md)."""

    partition: str | None = Field(default=None, description="srun -p; unset: the cluster's default partition")
    qos: str | None = Field(default=None, description="srun --qos")
    quotatype: str | None = Field(default=None, description="srun --quotatype (a site extension some clusters have)")
    extra_args: Annotated[list[str], Field(max_length=32)] = Field(
        default_factory=list, description="more srun arguments, one token each, e.g. ['--time=02:00:00', '-c', '4']")
    retry: Annotated[int, Field(ge=0, le=5)] = Field(
        default=2, description="times SlurmRunner starts a failed task again (OpenCompass' default: 2)")

    @field_validator("partition", "qos", "quotatype")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not SLURM_NAME.match(value):
            raise ValueError("must be a Slurm name: letters, digits, '_', '.', '-' (at most 128)")
        return value

    @field_validator("extra_args")
    @classmethod
    def _check_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not SLURM_ARG.match(arg):
                raise ValueError(f"{arg!r} is not accepted as an srun argument: one token of letters, digits and "
                                 "_.-=:,/@%+ (no spaces, quotes or shell characters)")
        return value


class RunParams(_Strict):
    limit: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        default=None, description="evaluate only the first N samples of each dataset"
    )
    max_out_len: Annotated[int, Field(ge=1, le=32768)] | None = Field(
        default=None,
        description="a deliberate override of the output length (tokens) of every dataset; unset, each built-in "
        "dataset keeps its own config's setting, as the `opencompass` CLI does, and datasets that set none use "
        "the model's max_out_len (DEFAULT_MAX_OUT_LEN unless the model sets one)",
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="1 runs every task in one warm process; more runs tasks in parallel processes",
    )
    timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    prediction_cache: bool = Field(
        default=True,
        description="reuse an OpenAI-compatible model's answers to requests it was sent before (same endpoint, model "
        "name, prompt, generation settings and seed) and keep this run's answers for later runs; false: every "
        "prompt is sent and the cache is neither read nor written",
    )
    slurm: SlurmSpec | None = Field(
        default=None,
        description="run the tasks as Slurm jobs (OpenCompass' SlurmRunner; `workers`: jobs at once); unset: "
        "processes on this machine (LocalRunner)",
    )


class JudgeSpec(_Strict):
    """The model that scores free-form answers: question-answer files with the scorer "judge", and built-in configs
    OpenCompass scores with a judge (its GenericLLMEvaluator). Any kind of model may judge."""

    model: ModelSpec
    prompt_language: Literal["auto", "en", "zh"] = Field(
        default="auto",
        description="the language of our judge prompt; auto: Chinese when a dataset's questions are mostly CJK",
    )


class EvalSpec(_Strict):
    name: DisplayName = "evaluation"
    models: Annotated[list[ModelSpec], Field(min_length=1, max_length=64)]
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=512)]
    params: RunParams = RunParams()
    judge: JudgeSpec | None = Field(default=None, description="the judge model, for datasets scored by a judge")

    @model_validator(mode="after")
    def _unique_names(self) -> EvalSpec:
        problems = []
        for label, names in (
            ("models", [m.name for m in self.models]),
            ("datasets", [d.display_name for d in self.datasets]),
        ):
            seen = set()
            for name in names:
                if name in seen:
                    problems.append(f"{label}: the name {name!r} is used twice; give each a distinct name")
                seen.add(name)
        for i, dataset in enumerate(self.datasets):
            if not isinstance(dataset, CustomDatasetSpec) or dataset.scorer != "judge":
                continue
            where = f"datasets[{i}] ({dataset.display_name})"
            if self.judge is None:
                problems.append(f"{where}: the 'judge' scorer needs a judge model: set `judge`")
            if dataset.data_type == "mcq":
                problems.append(f"{where}: the 'judge' scorer is for question-answer files, not multiple choice")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def public_dict(self) -> dict[str, Any]:
        """The spec as plain data without secrets: safe to write into manifests and logs."""
        return self.model_dump(mode="json")


def judge_fingerprint(spec: EvalSpec) -> dict[str, Any] | None:
    """What a judged score depends on about its judge: the model (kind, the name sent or the checkpoint, where it is
    reached), its sampling temperature, and our prompt (language setting and the sha256 of its text). None without a
    judge. Stable: the same judge settings give the same dict in every release that keeps the prompt."""
    if spec.judge is None:
        return None
    from .judge import prompt_sha256

    model = spec.judge.model
    identity: dict[str, Any] = {"kind": model.kind}
    if isinstance(model, OpenAIModelSpec):
        identity |= {"model": model.model, "base_url": model.base_url, "temperature": model.temperature}
    elif isinstance(model, DifyModelSpec):
        identity |= {"base_url": model.base_url, "inputs": dict(sorted(model.inputs.items()))}
    else:
        identity |= {"path": model.path, "mode": model.mode, "dtype": model.dtype, "temperature": 0.0}
    language = spec.judge.prompt_language
    return {**identity, "prompt_language": language, "prompt_sha256": prompt_sha256(language)}


def _format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return problems


def parse_spec(data: Any) -> EvalSpec:
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc)) from None


def load_spec(path: str | Path) -> EvalSpec:
    """Read a spec from YAML or JSON; relative file paths inside it are taken relative to the spec."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"cannot read {path}: {exc.strerror}"]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError([f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{path} must contain a mapping with 'models' and 'datasets'"])
    base = path.resolve().parent
    for item in data.get("datasets") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str) and not Path(item["path"]).is_absolute():
            item["path"] = str(base / item["path"])
    judge = data.get("judge")
    judge_model = [judge["model"]] if isinstance(judge, dict) and isinstance(judge.get("model"), dict) else []
    for item in [*(data.get("models") or []), *judge_model]:
        for key in ("path", "tokenizer_path"):
            value = item.get(key) if isinstance(item, dict) else None
            if isinstance(value, str) and value and not Path(value).is_absolute():
                item[key] = str(base / value)
    return parse_spec(data)
