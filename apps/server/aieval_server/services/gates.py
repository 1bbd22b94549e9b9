"""Gates: a schedule's run checked against its rules once it succeeded (issue 12, continuous evaluation).

`check_after_success` is called at the one place a run's success is recorded (services/runs.record_result: plain runs
and merged fanned-out jobs alike). It compares the run with the schedule's baseline by the paired test of
services/paired.py (the same comparison as the Compare page's "paired" view: McNemar's on verdicts or a sign-flip test
on per-sample scores, Holm-corrected across datasets) and judges each rule:

- no_significant_drop {alpha}: failed when a comparable dataset is worse than in the baseline with Holm p < alpha;
  datasets that cannot be compared (another selection, changed data) are named but do not fail it;
- min_score {dataset, metric?, threshold}: failed when a model's score on the dataset is below the threshold, or the
  run has no such score.

The verdict (passed / failed / not_applicable, reasons per rule) is stored on the evaluation (`gate_status`, `gate`),
shown on its page and in the lists, and turned into `aieval submit`'s exit code 4. A failed gate is announced through
`_announce_gate_failure`, the one call site of notifications' "gate_failed" event.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..enums import EvaluationStatus, GateRuleKind, GateStatus
from ..models import Evaluation, Schedule
from ..schemas.api import GateResult, GateRuleResult
from ..schemas.paired import PairedComparison
from ..schemas.schedules import GateRule, MinScore, NoSignificantDrop
from ..storage import Storage, get_storage
from . import paired
from .accounts import SYSTEM_CALLER
from .compare import chosen_metric
from .errors import ServiceError
from .evaluations import utcnow
from .events import Publisher

log = logging.getLogger(__name__)
_RULE = TypeAdapter(GateRule)


# ---- the rules (pure: what the run's comparison and scores say) -------------------------------------------------
def judge_no_significant_drop(rule: NoSignificantDrop, comparisons: list[PairedComparison] | None,
                              unavailable: str | None) -> GateRuleResult:
    """`comparisons`: the baseline (A) against the run (B), one per model compared; None with the reason why there
    is none (no baseline, the baseline deleted, nothing in common)."""
    stated = rule.model_dump(mode="json")
    if comparisons is None:
        return GateRuleResult(rule=stated, status=GateStatus.not_applicable, reasons=[unavailable or "no baseline"])
    drops, notes, compared = [], [], 0
    for comparison in comparisons:
        model = comparison.b.model
        for row in comparison.datasets:
            if not row.comparable or row.difference is None or row.p_holm is None:
                notes.append(f"{model} / {row.dataset}: not compared ({row.reason or 'no test'})")
                continue
            compared += 1
            unit = " points" if row.basis == "verdicts" else ""
            if row.difference > 0 and row.p_holm < rule.alpha:
                drops.append(f"{model} / {row.dataset}: {row.difference:.2f}{unit} worse than baseline "
                             f"#{comparison.a.evaluation_id} (Holm p = {row.p_holm:.3g} < {rule.alpha:g})")
    if drops:
        return GateRuleResult(rule=stated, status=GateStatus.failed, reasons=drops + notes)
    if not compared:
        return GateRuleResult(rule=stated, status=GateStatus.not_applicable,
                              reasons=notes or ["no dataset could be compared with the baseline"])
    return GateRuleResult(rule=stated, status=GateStatus.passed, reasons=[
        f"{compared} dataset(s) compared with baseline #{comparisons[0].a.evaluation_id}: none significantly worse "
        f"(alpha {rule.alpha:g})", *notes])


def judge_min_score(rule: MinScore, scores: list[dict[str, Any]]) -> GateRuleResult:
    """`scores`: the run's score rows (model, dataset, dataset_abbr, metric, value)."""
    stated = rule.model_dump(mode="json")
    by_model: dict[str, dict[str, float]] = {}
    for score in scores:
        if rule.dataset in (score["dataset"], score.get("dataset_abbr")):
            by_model.setdefault(score["model"], {})[score["metric"]] = score["value"]
    if not by_model:
        return GateRuleResult(rule=stated, status=GateStatus.failed,
                              reasons=[f"the run has no score on dataset {rule.dataset!r}"])
    reasons, failed = [], False
    for model, metrics in by_model.items():
        metric = rule.metric or chosen_metric(set(metrics))
        if metric not in metrics:
            failed = True
            reasons.append(f"{model} / {rule.dataset}: no metric {metric!r} (it has {', '.join(sorted(metrics))})")
            continue
        value = metrics[metric]
        below = value < rule.threshold
        failed = failed or below
        reasons.append(f"{model} / {rule.dataset} / {metric}: {value:.2f} {'<' if below else '≥'} {rule.threshold:g}")
    return GateRuleResult(rule=stated, status=GateStatus.failed if failed else GateStatus.passed, reasons=reasons)


def overall(results: list[GateRuleResult]) -> GateStatus:
    statuses = {result.status for result in results}
    if GateStatus.failed in statuses:
        return GateStatus.failed
    return GateStatus.passed if GateStatus.passed in statuses else GateStatus.not_applicable


# ---- a run -------------------------------------------------------------------------------------------------------
def _models(evaluation: Evaluation) -> list[str]:
    return list(dict.fromkeys(pair["model"] for pair in evaluation.pairs or []))


def compare_with_baseline(session: Session, settings: Settings, storage: Storage, evaluation: Evaluation,
                          baseline_id: int | None) -> tuple[list[PairedComparison] | None, str | None]:
    """The run against its baseline, model by model: the only model of each, else the models of the same name."""
    if baseline_id is None:
        return None, "the schedule has no baseline yet: set one (PUT /schedules/{id}/baseline)"
    if baseline_id == evaluation.id:
        return None, "this run is the baseline itself"
    baseline = session.get(Evaluation, baseline_id)
    if baseline is None:
        return None, f"the baseline evaluation {baseline_id} was deleted"
    ours, theirs = _models(evaluation), _models(baseline)
    pairs = [(theirs[0], ours[0])] if len(ours) == 1 and len(theirs) == 1 else [(m, m) for m in ours if m in theirs]
    if not pairs:
        return None, f"the run and baseline #{baseline_id} have no model in common"
    try:
        return [paired.compare(session, settings, storage, SYSTEM_CALLER, baseline_id, evaluation.id, model_a=a,
                               model_b=b) for a, b in pairs], None
    except ServiceError as exc:
        return None, f"the run cannot be compared with baseline #{baseline_id}: {exc.message}"


def evaluate(session: Session, settings: Settings, storage: Storage, evaluation: Evaluation,
             schedule: Schedule) -> GateResult:
    rules, results = [], []
    for stated in schedule.gate_rules or []:
        try:
            rules.append(_RULE.validate_python(stated))
        except ValidationError as exc:
            results.append(GateRuleResult(rule=stated if isinstance(stated, dict) else {}, status=GateStatus.failed,
                                          reasons=[f"the rule is not valid any more: {exc.errors()[0]['msg']}"]))
    comparisons, unavailable = None, None
    if any(rule.kind == GateRuleKind.no_significant_drop for rule in rules):
        comparisons, unavailable = compare_with_baseline(session, settings, storage, evaluation,
                                                         schedule.baseline_evaluation_id)
    scores = [{"model": s.model_name, "dataset": s.dataset_name, "dataset_abbr": s.dataset_abbr, "metric": s.metric,
               "value": s.value} for s in evaluation.scores]
    for rule in rules:
        if isinstance(rule, NoSignificantDrop):
            results.append(judge_no_significant_drop(rule, comparisons, unavailable))
        else:
            results.append(judge_min_score(rule, scores))
    return GateResult(status=overall(results), schedule_id=schedule.id,
                      baseline_evaluation_id=schedule.baseline_evaluation_id, checked_at=utcnow(), rules=results)


def check_after_success(settings: Settings, evaluation_id: int, storage: Storage | None = None) -> GateStatus | None:
    """Check the gate of a run that just succeeded, once; None when it has no schedule (or was checked already)."""
    storage = storage or get_storage(settings)
    with session_scope(settings.database_url) as session:
        evaluation = session.get(Evaluation, evaluation_id)
        if (evaluation is None or evaluation.status != EvaluationStatus.succeeded or evaluation.schedule_id is None
                or evaluation.gate_status is not None):
            return None
        schedule = session.get(Schedule, evaluation.schedule_id)
        if schedule is None:
            return None
        result = evaluate(session, settings, storage, evaluation, schedule)
        evaluation.gate = result.model_dump(mode="json")
        evaluation.gate_status = result.status.value
        evaluation.revision += 1  # pollers and live feeds notice the verdict
        session.flush()
        if result.status == GateStatus.failed:
            _announce_gate_failure(settings, session, evaluation, result)
    Publisher(settings).publish(evaluation_id, {"type": "gate", "status": result.status.value})
    log.info("evaluation %s: gate %s", evaluation_id, result.status.value)
    return result.status


def _announce_gate_failure(settings: Settings, session: Session, evaluation: Evaluation, result: GateResult) -> None:
    """The one call site of the "gate_failed" notification (services/notifications.py): the owner's subscribed
    channels get the verdict, sent once this transaction commits. A channel's trouble never undoes the verdict."""
    from . import notifications

    failed = [reason for rule in result.rules if rule.status == GateStatus.failed for reason in rule.reasons]
    details = {**result.model_dump(mode="json"),
               "summary": f"gate failed: {failed[0]}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
               if failed else "gate failed"}
    try:
        with session.begin_nested():
            notifications.notify(session, evaluation, "gate_failed", details, settings=settings)
    except Exception:
        log.exception("evaluation %s: the gate_failed notification could not be queued", evaluation.id)
