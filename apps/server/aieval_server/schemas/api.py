from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, computed_field

from aieval_engine.spec import DisplayName as Name

from ..enums import CANCELLABLE, RETRYABLE, TERMINAL, EvaluationStatus, GateStatus, UserRole, Visibility
from .ids import DatabaseId


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---- ownership (services/access.py) ----------------------------------------------------------------
class OwnerRead(BaseModel):
    id: int
    username: str
    display_name: str


class OwnedRead(BaseModel):
    """Who owns it, who may read it, and whether the caller may change it (so clients ask instead of guessing)."""

    owner: OwnerRead | None = Field(description="null: belongs to the installation (administrators manage it)")
    visibility: Visibility
    can_change: bool = Field(description="the caller may edit, delete, cancel or retry it")


VisibilityField = Field(default=None, description="private: its owner and administrators; shared: every signed-in "
                                                  "user. Default: the server's AIEVAL_DEFAULT_VISIBILITY")
MaxConcurrency = Field(default=None, ge=0, le=100_000,
                       description="requests in flight to this model across all jobs; 0 or null: no shared cap")


# ---- models -----------------------------------------------------------------------------------
class ModelCreate(Strict):
    name: Name
    kind: Literal["openai", "dify", "huggingface"]
    # openai / dify
    base_url: str | None = Field(default=None, max_length=2000)
    model: str | None = Field(default=None, max_length=500, description="openai: model name sent in requests")
    api_key: SecretStr | None = Field(default=None, description="stored encrypted; never returned")
    # huggingface
    path: str | None = Field(default=None, max_length=4096, description="checkpoint directory on the worker")
    mode: Literal["chat", "base"] | None = None
    # tuning, passed through to the engine's model spec (validated there)
    options: dict[str, Any] = Field(default_factory=dict)
    visibility: Visibility | None = VisibilityField
    max_concurrency: int | None = MaxConcurrency


class ModelUpdate(Strict):
    name: Name | None = None
    base_url: str | None = Field(default=None, max_length=2000)
    model: str | None = Field(default=None, max_length=500)
    api_key: SecretStr | None = None
    clear_api_key: bool = False
    path: str | None = Field(default=None, max_length=4096)
    mode: Literal["chat", "base"] | None = None
    options: dict[str, Any] | None = None
    visibility: Visibility | None = None
    max_concurrency: int | None = Field(default=None, ge=0, le=100_000, description="0: remove the shared cap")


class ModelRead(OwnedRead):
    id: int
    name: str
    kind: str
    settings: dict[str, Any]
    has_api_key: bool
    api_key_hint: str | None
    is_demo: bool
    max_concurrency: int | None
    created_at: datetime
    updated_at: datetime


class ModelTestResult(BaseModel):
    ok: bool
    latency_ms: float | None = None
    reply: str | None = None
    error: str | None = None


# ---- datasets ---------------------------------------------------------------------------------
class DatasetRead(OwnedRead):
    id: int
    name: str
    kind: str
    builtin_config: str | None
    sha256: str | None
    file_format: str | None
    data_type: str | None
    scorer: str
    infer_method: str
    columns: list[str]
    rows: int | None
    size_bytes: int | None
    original_filename: str | None
    is_demo: bool
    available: bool
    created_at: datetime


class DatasetUpdate(Strict):
    """What can change about an uploaded dataset; its content cannot (upload the new file instead)."""

    name: Name | None = None
    scorer: Literal["exact", "contains", "judge"] | None = Field(
        default=None, description="contains and judge: question-answer datasets only; judge: an evaluation using it "
        "names a judge model")
    infer_method: Literal["gen", "ppl"] | None = None
    visibility: Visibility | None = None


class DatasetUploadResult(BaseModel):
    dataset: DatasetRead
    existing: bool = Field(description="true when the same file (same sha256) was uploaded before")


class BuiltinDatasetRead(BaseModel):
    name: str
    folder: str | None = None
    available: bool | None = None
    missing: list[str] = []
    registered_id: int | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class DatasetPreview(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]]
    total_rows: int | None


class DatasetValidation(BaseModel):
    """The upload's dry run (POST /datasets/validate): what the same upload would do, nothing stored."""

    ok: bool = Field(description="true exactly when problems is empty: the upload would succeed (new or existing)")
    file_format: Literal["jsonl", "csv"] | None = Field(description="null when the extension is not accepted")
    data_type: Literal["mcq", "qa"] | None = Field(description="declared or detected; null when no row was read")
    columns: list[str]
    rows: int | None = Field(description="data rows; null unless the file is valid")
    name: str | None = Field(description="the name the dataset would get (derived from the file name if none given)")
    problems: list[str] = Field(description="every reason the upload would be refused, file problems by line")
    preview: list[dict[str, Any]] = Field(description="the first rows (at most 20), read as the server reads them")
    existing_dataset_id: int | None = Field(description="set when the same file (same sha256) was uploaded before")
    name_taken: bool = Field(description="another dataset has this name (an upload would get 409 unless existing)")


class DatasetUploadRules(BaseModel):
    """What the server accepts as an upload, so a client asks instead of keeping its own copy of the rules."""

    extensions: list[str] = Field(description="accepted file name extensions, with the dot")
    max_bytes: int = Field(description="the largest file accepted (413 above it)")
    max_rows: int


# ---- evaluations ------------------------------------------------------------------------------
class EvaluationParams(Strict):
    limit: int | None = Field(default=None, ge=1, le=10_000_000)
    max_out_len: int | None = Field(
        default=None, ge=1, le=32768,
        description="a deliberate override of every dataset's output length (tokens). Unset: each built-in dataset "
        "keeps its own config's setting (as the opencompass CLI runs it; see GET /datasets/builtin/{config}/settings) "
        "and datasets without one use the model's max_out_len",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    workers: int = Field(default=1, ge=1, le=64)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    prediction_cache: bool = Field(
        default=True,
        description="reuse an endpoint model's answers to requests sent before (same server, model name, prompt, "
        "generation settings and seed: the manifest's prediction_cache says which predictions came from there) and "
        "keep this run's for later runs; false: every prompt is sent and the cache is neither read nor written",
    )


class BuiltinGenerationSettings(BaseModel):
    """What a built-in dataset config sets itself for generation: what a run without a max_out_len override uses."""

    config: str
    generates: bool = Field(description="false for likelihood (ppl) configs, which generate no text")
    inferencers: list[str] = Field(description="OpenCompass inferencer classes the config uses")
    max_out_len: list[int] = Field(description="output lengths (tokens) the config sets; several when its parts differ")
    model_decides: bool = Field(description="some part sets no output length: the model's max_out_len applies there")
    model_default_max_out_len: int = Field(description="the model's max_out_len when its settings give none")
    stopping_criteria: list[str] = Field(description="stop words the config sets")
    readable: bool = Field(description="false when the config computes a setting that reading it cannot tell")
    needs_judge: bool = Field(default=False, description="OpenCompass scores this config with an LLM judge: an "
                                                         "evaluation of it names a judge model (judge_model_id)")


ScorerChoice = Literal["exact", "contains", "judge"]
JudgePromptLanguage = Literal["auto", "en", "zh"]
JudgeModelField = Field(
    default=None, description="a registered model (any kind) that judges free-form answers: needed when a dataset is "
    "scored \"judge\" or is a built-in config OpenCompass scores with a judge (GET /datasets/builtin/{config}/settings "
    "needs_judge)")
JudgePromptLanguageField = Field(default="auto", description="the language of the judge's prompt; auto: the "
                                                             "dataset's own (Chinese text gets the Chinese prompt)")


class EvaluationCreate(Strict):
    name: Name = "evaluation"
    model_ids: list[DatabaseId] = Field(min_length=1, max_length=64)
    dataset_ids: list[DatabaseId] = Field(default_factory=list, max_length=512)
    builtin_datasets: list[str] = Field(
        default_factory=list, max_length=512, description="OpenCompass config names, e.g. gsm8k_gen"
    )
    params: EvaluationParams = EvaluationParams()
    visibility: Visibility | None = VisibilityField
    scorer: ScorerChoice | None = Field(
        default=None, description="the scorer of every uploaded question-answer dataset of this evaluation instead of "
        "each dataset's own (multiple-choice files keep theirs); unset: each dataset's own")
    judge_model_id: DatabaseId | None = JudgeModelField
    judge_prompt_language: JudgePromptLanguage = JudgePromptLanguageField
    schedule_id: DatabaseId | None = Field(
        default=None, description="gate this run like a run of that schedule: once it succeeds it is compared with the "
        "schedule's baseline and checked against its gate rules (`aieval submit --schedule`); the schedule must be "
        "readable. Not allowed in a schedule's own request")


class EvaluationRescore(Strict):
    """Score a finished evaluation's predictions again with another scorer or judge: a new evaluation of the same
    models, datasets and parameters that runs no inference."""

    scorer: ScorerChoice | None = Field(
        default=None, description="the scorer of its uploaded question-answer datasets; unset: as the source was scored")
    judge_model_id: DatabaseId | None = JudgeModelField
    judge_prompt_language: JudgePromptLanguage = JudgePromptLanguageField
    name: Name | None = Field(default=None, description="default: the source's name + \" (re-scored)\"")
    visibility: Visibility | None = Field(default=None, description="default: the source's visibility")


class EvaluationUpdate(Strict):
    name: Name | None = None
    visibility: Visibility | None = None


class HeadlineScore(BaseModel):
    """What a list row says about a finished evaluation's results, per model: its score on its only dataset, or
    its average over its datasets (each dataset by the metric compare uses for it)."""

    model_id: int | None
    model: str
    value: float
    datasets: int = Field(description="how many datasets the value is over (1: the score itself, else their average)")
    dataset: str | None = Field(default=None, description="the dataset, when there is one")
    metric: str | None = Field(default=None, description="the metric, when there is one dataset")
    n: int | None = Field(default=None, description="samples scored (summed over the datasets); null when not known")
    correct: int | None = Field(default=None, description="right answers, one dataset scored by accuracy")
    ci_low: float | None = Field(default=None, description="95 % interval, one dataset only")
    ci_high: float | None = None


class GateRuleResult(BaseModel):
    rule: dict[str, Any] = Field(description="the rule as the schedule states it (kind and its settings)")
    status: GateStatus
    reasons: list[str] = Field(description="why it passed, failed or could not be checked, one sentence each")


class GateResult(BaseModel):
    """A scheduled run's gate (services/gates.py): its rules checked once it succeeded."""

    status: GateStatus = Field(description="failed when any rule failed; passed when one passed and none failed")
    schedule_id: int | None
    baseline_evaluation_id: int | None = Field(description="what no_significant_drop compared with (null: none set)")
    checked_at: datetime
    rules: list[GateRuleResult]


class EvaluationSummary(OwnedRead):
    id: int
    name: str
    status: EvaluationStatus
    queue: str
    models: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    fraction: float | None
    stage: str | None
    revision: int
    error: str | None
    headline: list[HeadlineScore] = Field(default_factory=list, description="per model, its headline score once "
                                          "scores are stored; empty before")
    schedule_id: int | None = Field(default=None, description="the schedule this run belongs to (its gate applies)")
    gate_status: GateStatus | None = Field(default=None, description="its gate's verdict once it succeeded; null: no "
                                                                     "gate, or not checked yet")

    # What the status allows, decided here so that clients ask the server instead of keeping a copy of the rules.
    @computed_field(description="final: nothing changes any more unless it is retried; stop following it")
    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @computed_field(description="POST .../cancel is accepted")
    @property
    def can_cancel(self) -> bool:
        return self.status in CANCELLABLE

    @computed_field(description="POST .../retry is accepted (failed, cancelled or timed out)")
    @property
    def can_retry(self) -> bool:
        return self.status in RETRYABLE


class JudgeRead(BaseModel):
    model_id: int
    model: str = Field(description="the judge model's name")
    prompt_language: str


class EvaluationDetail(EvaluationSummary):
    params: dict[str, Any]
    scorer: str | None = Field(default=None, description="the scorer of its uploaded question-answer datasets "
                                                         "instead of each dataset's own; null: theirs")
    judge: JudgeRead | None = Field(default=None, description="the model judging free-form answers, if any")
    rescored_from_id: int | None = Field(default=None, description="the finished evaluation whose predictions this "
                                                                   "one scored again (no inference)")
    attempts: int
    worker: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    progress: dict[str, Any] | None
    duration_s: float | None
    log_excerpt: str | None
    manifest: dict[str, Any] | None
    pairs: list[dict[str, Any]] | None
    scores: list[dict[str, Any]]
    gate: GateResult | None = Field(default=None, description="its gate's result, rule by rule (schedule runs)")

    @computed_field(description="POST .../rescore is accepted: it succeeded, so its predictions can be scored again")
    @property
    def can_rescore(self) -> bool:
        return self.status == EvaluationStatus.succeeded


class SpeedSummary(BaseModel):
    """Latency and tokens per answer of one result (model x dataset) of an endpoint model, from the per-sample records
    (aieval_engine.sample_metrics). Not recorded for local models, which generate a batch at a time."""

    samples: int = Field(description="samples with a record")
    latency_p50_s: float | None = Field(description="median seconds from request to the whole answer")
    latency_p95_s: float | None = Field(description="95th percentile of the same (numpy's linear interpolation)")
    latency_mean_s: float | None = None
    ttft_p50_s: float | None = Field(default=None, description="median seconds from request to the first streamed "
                                                               "text, over the samples that have one; null: not "
                                                               "measured (streaming turned off, a server that does "
                                                               "not stream, a run from before it was recorded)")
    ttft_p95_s: float | None = Field(default=None, description="95th percentile of the same")
    prompt_tokens_mean: float | None = Field(default=None, description="as the endpoint counted them (its usage); "
                                                                       "null when it sent none")
    completion_tokens_mean: float | None = Field(default=None, description="tokens per answer, from the usage")
    total_tokens: int | None = Field(default=None, description="prompt + completion tokens of every sample; null "
                                                               "unless every sample's usage was sent")
    retries: int = Field(default=0, description="requests repeated before an answer came")


class ScoreRead(BaseModel):
    model_id: int | None
    model: str
    dataset_id: int | None
    dataset: str
    metric: str
    value: float
    # What the value rests on; null for scores stored before they were recorded (and see each description).
    n: int | None = Field(default=None, description="samples scored")
    correct: int | None = Field(default=None, description="right answers, when the value is the share right "
                                                          "(accuracy); null for other metrics")
    scorer: str | None = Field(default=None, description="what judged the answers: exact or contains (an uploaded "
                                                         "file's scorer), else the OpenCompass evaluator class")
    ci_low: float | None = Field(default=None, description="lower end of the 95 % confidence interval, in the "
                                                           "value's unit (Wilson for accuracy, bootstrap otherwise)")
    ci_high: float | None = Field(default=None, description="upper end of the 95 % confidence interval")
    fingerprint: str | None = Field(default=None, description="what the score's comparability rests on, as a short "
                                    "hash of fingerprint_parts: two scores with the same fingerprint are compared")
    fingerprint_parts: dict[str, Any] | None = Field(
        default=None, description="the settings the fingerprint covers: data (content hash), config (built-in "
        "config name), prompt (hash of the resolved dataset config), limit, scorer, max_out_len (override; null: the "
        "dataset's own), opencompass (version), and the judge when one scored; null parts are not set or not known")
    speed: SpeedSummary | None = Field(default=None, description="latency and tokens per answer of this model on this "
                                                                 "dataset; null when not recorded (local models)")


class SampleRead(BaseModel):
    model: str
    dataset: str
    index: int = Field(description="the sample's place in the dataset, counting from 1 (as the upload preview)")
    prompt: Any
    prediction: Any
    gold: Any
    correct: bool | None = Field(description="the scorer's verdict; null when it gave none")
    extracted: Any = Field(default=None, description="the answer the scorer compared with gold, when OpenCompass "
                                                     "records one that differs from the prediction")
    scorer: str | None = Field(default=None, description="what gave the verdict, as on the pair's scores: exact or "
                                                         "contains, judge:<judge model>, else the OpenCompass "
                                                         "evaluator class")
    judge_verdict: str | None = Field(default=None, description="the judge's verdict as it gave it (LLM-as-judge)")
    judge_rationale: str | None = Field(default=None, description="the judge's reasoning for its verdict")
    score: float | None = Field(default=None, description="a per-sample score that is not a right/wrong verdict "
                                                          "(partial credit, a similarity), when the scorer records "
                                                          "one; null otherwise")
    # Recorded for endpoint models (aieval_engine.sample_metrics); null when not recorded.
    latency_s: float | None = Field(default=None, description="seconds from request to the whole answer (the "
                                                              "successful attempt)")
    ttft_s: float | None = Field(default=None, description="seconds from request to the first streamed text (the "
                                                          "successful attempt); null: not measured (not streamed)")
    prompt_tokens: int | None = Field(default=None, description="as the endpoint's usage counted them")
    completion_tokens: int | None = Field(default=None, description="as the endpoint's usage counted them")
    retries: int | None = Field(default=None, description="requests repeated before the answer came")


class CompareDifference(BaseModel):
    """One fingerprint part in which a cell differs from the result its dataset column compares (services/provenance
    `fingerprint_parts`), e.g. part "limit", value 8, reference 12: "limit 8 vs 12"."""

    part: str = Field(description="data, config, prompt, limit, scorer, max_out_len, opencompass; or unrecorded "
                                  "(one of the two was stored before settings were recorded)")
    value: str | int | None = Field(description="this cell's setting; null: not set (every sample, the dataset's "
                                                "own output length) or not known")
    reference: str | int | None = Field(description="the setting of the results this column puts side by side")


class CompareCell(BaseModel):
    value: float
    evaluation_id: int
    finished_at: datetime | None
    n: int | None = Field(default=None, description="samples scored")
    correct: int | None = None
    ci_low: float | None = Field(default=None, description="95 % confidence interval, in the value's unit")
    ci_high: float | None = None
    scorer: str | None = None
    fingerprint: str | None = Field(default=None, description="what must match to compare; null: not recorded")
    comparable: bool = Field(default=True, description="false: settings differ from the column's compared results; "
                                                       "shown apart and left out of the averages")
    differences: list[CompareDifference] = Field(default_factory=list)


class RankInterval(BaseModel):
    """A model's plausible places on the leaderboard: 95 % of bootstrap resamples of the samples put it between
    `low` and `high` (1 = first). Two models whose ranges overlap are not reliably ordered."""

    low: int
    high: int


class SuggestedComparison(BaseModel):
    """The comparison the compare page opens with when nothing is chosen (GET /compare/suggested)."""

    model_ids: list[int] = Field(description="at most 4 models, newest results first; one model when no two are "
                                             "comparable anywhere; empty when no finished scores are readable")
    evaluation_ids: list[int] = Field(description="per model (same order) its newest evaluation compared")
    dataset_ids: list[int] = Field(description="datasets every suggested model has with the same fingerprint")


class CompareTable(BaseModel):
    metric: str | None
    models: list[dict[str, Any]]
    # each dataset: id, name, metric, fingerprint (the one its comparable cells share), fingerprint_parts
    datasets: list[dict[str, Any]]
    # cells[model_id][dataset_id] -> the latest score with the column's fingerprint, else the model's latest score
    # (then comparable=false with what differs)
    cells: dict[str, dict[str, CompareCell]]
    averages: dict[str, float | None]
    average_dataset_ids: list[int] = Field(
        default_factory=list, description="the datasets the averages are over: those every model with scores has "
                                          "with the same fingerprint")
    rank_intervals: dict[str, RankInterval] = Field(
        default_factory=dict, description="model id -> its 95 % rank range by the average, from a paired bootstrap "
        "over each averaged dataset's samples (a score whose per-sample verdicts are not known is held fixed); only "
        "models with an average, and only when at least two have one")
    rank_resamples: int | None = Field(default=None, description="bootstrap resamples behind rank_intervals")


# ---- accounts and sign-in (services/accounts.py) ----------------------------------------------------------------
class WithPasswords(BaseModel):
    """Passwords are taken exactly as typed (no whitespace stripping) and never echoed in errors."""

    model_config = ConfigDict(extra="forbid")


Password = Field(max_length=1024)


class CallerRead(BaseModel):
    """Who the request is from. With sign-in off: the local user (id null, is_local true, role admin)."""

    id: int | None
    username: str
    display_name: str
    role: UserRole
    is_local: bool
    sso: bool = Field(default=False, description="signs in through single sign-on (no password to change)")


class AuthState(BaseModel):
    user: CallerRead
    auth_enabled: bool
    csrf_token: str | None = Field(description="send it as X-CSRF-Token with every POST/PUT/PATCH/DELETE "
                                                "authenticated by the session cookie; null with sign-in off")


class LoginRequest(WithPasswords):
    username: str = Field(max_length=200)
    password: str = Password


class PasswordChange(WithPasswords):
    current_password: str = Password
    new_password: str = Field(max_length=1024, description="at least 12 characters")


class UserRead(BaseModel):
    id: int
    username: str
    display_name: str
    role: UserRole
    disabled: bool
    sso: bool = Field(description="the account signs in through single sign-on (it has no password)")
    max_active_evaluations: int | None = Field(description="null: the installation's default")
    max_stored_bytes: int | None = Field(description="null: the installation's default")
    created_at: datetime
    updated_at: datetime


class UserCreate(WithPasswords):
    username: str = Field(max_length=200, description="stored lower-case; letters, digits, '.', '_', '-'")
    password: str = Field(max_length=1024, description="at least 12 characters")
    role: UserRole
    display_name: str | None = Field(default=None, max_length=200)


class UserUpdate(WithPasswords):
    role: UserRole | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, max_length=1024, description="at least 12 characters; signs the "
                                                                                "user out everywhere")
    display_name: str | None = Field(default=None, max_length=200)
    max_active_evaluations: int | None = Field(default=None, ge=-1, le=100_000, description="-1: back to the "
                                               "installation's default; 0: no limit")
    max_stored_bytes: int | None = Field(default=None, ge=-1, le=2**62, description="-1: back to the "
                                         "installation's default; 0: no limit")
