"""Schedules, baselines and gate rules (services/schedules.py, services/gates.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from aieval_engine.spec import DisplayName as Name

from ..enums import GateRuleKind, GateStatus, ScheduleTrigger, Visibility
from .api import EvaluationCreate, OwnedRead, Strict, VisibilityField
from .ids import DatabaseId

CronField = Field(min_length=1, max_length=120, description="five fields (minute hour day-of-month month day-of-week, "
                                                            "e.g. \"0 2 * * *\": 02:00 every day) or @hourly, "
                                                            "@daily, @weekly, @monthly, @yearly")
TIMEZONE_HELP = "the IANA time zone the cron expression is read in, e.g. Asia/Shanghai"
TRIGGER_HELP = ("cron: runs on the cron expression; new_model_version: runs whenever an OpenAI-compatible endpoint among "
                "the request's models serves another version of its model (GET {base_url}/models), and on the cron "
                "too when one is given")


class NoSignificantDrop(Strict):
    """No dataset is significantly worse than in the baseline: the paired test (McNemar's on verdicts, a sign-flip
    test on per-sample scores), Holm-corrected across datasets, at level `alpha`."""

    kind: Literal[GateRuleKind.no_significant_drop]
    alpha: float = Field(default=0.05, gt=0, lt=1)


class MinScore(Strict):
    """The score on `dataset` (its name or OpenCompass abbreviation) is at least `threshold` for every model; `metric`:
    which of its metrics (default: the one compare uses, accuracy first)."""

    kind: Literal[GateRuleKind.min_score]
    dataset: str = Field(min_length=1, max_length=200)
    metric: str | None = Field(default=None, min_length=1, max_length=100)
    threshold: float = Field(ge=-1e9, le=1e9)


GateRule = Annotated[NoSignificantDrop | MinScore, Field(discriminator="kind")]
GateRules = Field(default_factory=list, max_length=20, description="checked on every run once it succeeds")


class ScheduleCreate(Strict):
    name: Name
    request: EvaluationCreate = Field(description="what each run submits: the body of POST /evaluations")
    trigger: ScheduleTrigger = Field(default=ScheduleTrigger.cron, description=TRIGGER_HELP)
    cron: str | None = Field(default=None, min_length=1, max_length=120,
                             description=f"{CronField.description}; required with the cron trigger")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description=TIMEZONE_HELP)
    enabled: bool = True
    gate_rules: list[GateRule] = GateRules
    visibility: Visibility | None = VisibilityField


class ScheduleUpdate(Strict):
    name: Name | None = None
    request: EvaluationCreate | None = None
    trigger: ScheduleTrigger | None = None
    cron: str | None = Field(default=None, min_length=1, max_length=120,
                             description="null (given explicitly) removes it: only with the new_model_version trigger")
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    enabled: bool | None = None
    gate_rules: list[GateRule] | None = Field(default=None, max_length=20)
    visibility: Visibility | None = None


class ScheduleBaseline(Strict):
    evaluation_id: DatabaseId | None = Field(description="a succeeded evaluation the caller may read; null: no baseline")


class ScheduleRead(OwnedRead):
    id: int
    name: str
    request: dict[str, Any]
    trigger: ScheduleTrigger = ScheduleTrigger.cron
    cron: str | None = Field(description="null: it runs on new model versions only")
    timezone: str
    enabled: bool
    next_run_at: datetime | None = Field(description="null while disabled")
    next_runs: list[datetime] = Field(description="the next few times its cron runs it (empty while disabled or "
                                                  "without a cron)")
    model_version: str | None = Field(default=None, description="new_model_version: what its endpoints served when "
                                                                "last asked (null: not asked yet)")
    version_checked_at: datetime | None = Field(default=None, description="when its endpoints were last asked")
    last_run_at: datetime | None
    last_evaluation_id: int | None
    last_evaluation_status: str | None = Field(default=None, description="null when it never ran or was deleted")
    last_gate_status: GateStatus | None = None
    baseline_evaluation_id: int | None
    last_error: str | None = Field(description="why the last run could not be submitted (null: it was)")
    gate_rules: list[GateRule]
    created_at: datetime
    updated_at: datetime


class CronPreview(BaseModel):
    cron: str
    timezone: str
    next_runs: list[datetime]
