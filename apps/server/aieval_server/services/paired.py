"""Two evaluations compared sample by sample: per dataset the difference with its interval, a paired test, Holm's
correction across datasets and the smallest difference the sample count could detect; and the samples side by side,
filtered by who got them right (or scored higher).

What is compared is chosen from the samples: right/wrong verdicts (accuracy, Newcombe's interval, exact McNemar), or,
when the scorer records per-sample scores that are not all 0 or 1 (partial credit, a similarity), those scores (mean
difference, paired bootstrap interval, sign-flip permutation test: the same test McNemar's is on 0/1 scores).

Samples are paired by position, which is only sound when both sides answered the very same samples: the same
dataset content (an uploaded file's sha256, or the same built-in config whose data files hashed alike when each run
started) and the same selection (`limit`). Anything else is listed as not comparable, with the reason, rather than
compared wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from ..config import Settings
from ..models import Evaluation
from ..schemas.api import SampleRead
from ..schemas.paired import (
    PairedAnswer,
    PairedComparison,
    PairedCounts,
    PairedDataset,
    PairedSampleRead,
    PairedSide,
)
from ..storage import Storage
from . import evaluations
from .accounts import Caller
from .artifacts import SampleFormat, _pair_samples, _RunFiles, _scorer_of, export_rows
from .errors import Conflict, Invalid
from .speed import SAMPLE_SPEED_COLUMNS
from .statistics import (
    PairedTable,
    holm_adjust,
    mcnemar_exact_p,
    minimum_detectable_accuracy_difference,
    paired_difference_interval,
    paired_mean_difference_interval,
    paired_minimum_detectable_difference,
    paired_permutation_p,
)

ALPHA = 0.05
# Below this many percentage points of detectable difference the sample count is not the limit worth a sentence.
FEW_SAMPLES_FROM_POINTS = 5.0
# The same for per-sample scores, whose unit is the scorer's: 5 % of the range the scores were seen to span.
FEW_SAMPLES_FROM_SHARE_OF_RANGE = 0.05
# Seeded: the same samples always give the same interval and p-value.
SEED = 0
Flip = Literal["a_only", "b_only", "both", "neither", "changed"]
_FLIPS: dict[str, set[tuple[bool, bool]]] = {
    "a_only": {(True, False)}, "b_only": {(False, True)}, "both": {(True, True)}, "neither": {(False, False)},
    "changed": {(True, False), (False, True)},
}
# With per-sample scores: a_only is "A scored higher", b_only "B scored higher", changed "they scored differently".
_SCORE_FLIPS = ("a_only", "b_only", "changed")


@dataclass(frozen=True)
class _Dataset:
    """One dataset one side answered: what makes its samples the same as the other side's, and where they are."""

    key: tuple[str, ...]  # the dataset's content identity: equal keys are the same data
    name: str
    pair: dict[str, Any]  # the evaluation's (model, dataset) pair: names, abbrs, dataset_index, ok
    content: str | None  # the data's hash recorded when the run started (None: not recorded)
    scorer: str | None


@dataclass(frozen=True)
class _Side:
    label: str  # "A" or "B"
    evaluation: Evaluation
    model: str
    datasets: dict[tuple[str, ...], _Dataset]

    @property
    def limit(self) -> int | None:
        return (self.evaluation.params or {}).get("limit")


def _require_samples(evaluation: Evaluation, label: str) -> Evaluation:
    if not evaluation.artifacts_stored or not evaluation.run_dir_name or not evaluation.pairs:
        raise Conflict(f"evaluation {evaluation.id} ({label}) has no samples to compare yet ({evaluation.status}); "
                       "compare it once it has finished")
    return evaluation


def _model_of(evaluation: Evaluation, wanted: str | None, parameter: str) -> str:
    """The display name of the evaluation's model to compare: the one named, or the only one."""
    models = list(dict.fromkeys((p["model"], p["model_abbr"]) for p in evaluation.pairs or []))
    names = ", ".join(name for name, _ in models)
    if wanted is not None:
        for name, abbr in models:
            if wanted in (name, abbr):
                return name
        raise Invalid(f"evaluation {evaluation.id} has no model {wanted!r} (it has: {names})")
    if len(models) != 1:
        raise Invalid(f"evaluation {evaluation.id} has several models ({names}); choose one with {parameter}")
    return models[0][0]


def _content_hash(evaluation: Evaluation, dataset_index: int | None) -> str | None:
    """The hash of the data the run read, from its manifest: an uploaded file's sha256, or a built-in config's data
    files hashed when the run started (None when only their sizes were, or nothing was recorded)."""
    recorded = (evaluation.manifest or {}).get("datasets") or []
    if dataset_index is None or not 0 <= dataset_index < len(recorded) or not isinstance(recorded[dataset_index], dict):
        return None
    entry = recorded[dataset_index]
    if entry.get("kind") == "custom":
        return entry.get("sha256")
    data = entry.get("data") or {}
    return data.get("sha256") if data.get("content_hashed") else None


def _side(evaluation: Evaluation, model: str, label: str) -> _Side:
    rows = [link.dataset for link in evaluation.datasets]  # in spec order: dataset_index points into it
    datasets: dict[tuple[str, ...], _Dataset] = {}
    for pair in evaluation.pairs or []:
        if pair["model"] != model:
            continue
        index = pair.get("dataset_index")
        row = rows[index] if index is not None and 0 <= index < len(rows) else None
        if row is None:  # not known which dataset row: only the same abbreviation can match
            key: tuple[str, ...] = ("abbr", pair["dataset_abbr"])
        elif row.kind == "builtin":  # one config can hold several datasets, told apart by OpenCompass' abbr
            key = ("builtin", row.builtin_config or "", pair["dataset_abbr"])
        else:  # uploads are content-addressed: the same bytes are the same dataset whoever uploaded them
            key = ("custom", row.sha256 or f"id:{row.id}")
        # setdefault: two rows of the same bytes (two owners' uploads) in one evaluation are one dataset here.
        datasets.setdefault(key, _Dataset(key, pair["dataset"], pair, _content_hash(evaluation, index),
                                          _scorer_of(evaluation, pair)))
    return _Side(label, evaluation, model, datasets)


def _selection(limit: int | None) -> str:
    return "all samples" if limit is None else f"the first {limit} (limit {limit})"


def _why_not_comparable(a: _Side, b: _Side, left: _Dataset, right: _Dataset) -> str | None:
    """Why the two sides' samples of a dataset are not the same samples (or not judged alike), else None."""
    if a.limit != b.limit:
        return f"different sample selection: A used {_selection(a.limit)}, B {_selection(b.limit)}"
    if left.content and right.content and left.content != right.content:
        return "different dataset version: its data changed between the two runs (the recorded hashes differ)"
    if left.scorer != right.scorer:
        return f"scored differently: A by {left.scorer or 'an unknown scorer'}, B by {right.scorer or 'an unknown scorer'}"
    for side, dataset in ((a, left), (b, right)):
        if dataset.pair.get("ok") is False:
            return f"the run of {side.label} on this dataset failed: it has no verdicts"
    return None


def _samples(settings: Settings, storage: Storage, side: _Side, dataset: _Dataset) -> list[SampleRead]:
    run = _RunFiles(side.evaluation.id, side.evaluation.run_dir_name or "")
    return list(_pair_samples(settings, storage, run, dataset.pair, dataset.scorer))


def _paired_rows(left: list[SampleRead], right: list[SampleRead]) -> str | None:
    """Why the samples read cannot be paired by position, else None (a last check that they are the same samples)."""
    if len(left) != len(right):
        return f"different number of samples: A has {len(left)}, B has {len(right)}"
    if not left:
        return "no samples were recorded"
    for a, b in zip(left, right, strict=True):
        if a.gold != b.gold:
            return f"the samples differ: sample {a.index} has another gold answer in B"
    if _scores(left, right) is None and any(row.correct is None for row in (*left, *right)):
        return ("the scorer gave no right/wrong verdict for some samples, and no per-sample score for every sample to "
                "compare instead")
    return None


def _scores(left: list[SampleRead], right: list[SampleRead]) -> tuple[list[float], list[float]] | None:
    """Both sides' per-sample scores when every sample has one and they are not all 0 or 1 (then they, not verdicts,
    are what the scorer measured), else None: 0/1 scores are verdicts, and McNemar's is their exact test."""
    a, b = [row.score for row in left], [row.score for row in right]
    if not a or any(v is None for v in (*a, *b)) or all(v in (0.0, 1.0) for v in (*a, *b)):
        return None
    return a, b  # type: ignore[return-value]  (None excluded above)


def _sides(session: Session, caller: Caller, a_id: int, b_id: int, model_a: str | None,
           model_b: str | None) -> tuple[_Side, _Side]:
    # Both read first: nothing about A (not even "still running") is said before B is known to be readable too.
    first = evaluations.readable(session, a_id, caller, scores=True)
    second = first if b_id == a_id else evaluations.readable(session, b_id, caller, scores=True)
    _require_samples(first, "A")
    _require_samples(second, "B")
    a = _side(first, _model_of(first, model_a, "model_a"), "A")
    b = _side(second, _model_of(second, model_b, "model_b"), "B")
    if a_id == b_id and a.model == b.model:
        raise Invalid("A and B are the same model of the same evaluation; choose another evaluation or model")
    return a, b


def _statistics(name: str, other_name: str | None, left: list[SampleRead], right: list[SampleRead]) -> PairedDataset:
    scores = _scores(left, right)
    if scores is not None:
        return _score_statistics(name, other_name, *scores)
    table = PairedTable.from_outcomes([bool(r.correct) for r in left], [bool(r.correct) for r in right])
    low, high = paired_difference_interval(table)
    detectable = minimum_detectable_accuracy_difference(table.n, (table.only_a + table.only_b) / table.n,
                                                        alpha=ALPHA)
    return PairedDataset(
        dataset=name, dataset_b=other_name, comparable=True, n=table.n, basis="verdicts",
        accuracy_a=100 * (table.both + table.only_a) / table.n, accuracy_b=100 * (table.both + table.only_b) / table.n,
        difference=100 * table.difference, ci_low=100 * low, ci_high=100 * high, interval_method="newcombe",
        counts=PairedCounts(both=table.both, only_a=table.only_a, only_b=table.only_b, neither=table.neither),
        test="mcnemar_exact", p_value=mcnemar_exact_p(table.only_a, table.only_b),
        detectable_difference=None if detectable is None else 100 * detectable,
        few_samples=detectable is None or 100 * detectable >= FEW_SAMPLES_FROM_POINTS)


def _score_statistics(name: str, other_name: str | None, a: list[float], b: list[float]) -> PairedDataset:
    """Per-sample scores compared in their own unit: mean difference, paired bootstrap interval, sign-flip test."""
    low, high = paired_mean_difference_interval(a, b, seed=SEED)
    detectable = paired_minimum_detectable_difference(a, b, alpha=ALPHA)
    observed_range = max(*a, *b) - min(*a, *b)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    return PairedDataset(
        dataset=name, dataset_b=other_name, comparable=True, n=len(a), basis="scores", mean_a=mean_a, mean_b=mean_b,
        difference=mean_a - mean_b, ci_low=low, ci_high=high, interval_method="paired_bootstrap",
        test="sign_flip_permutation", p_value=paired_permutation_p(a, b, seed=SEED), detectable_difference=detectable,
        few_samples=detectable is None or detectable >= FEW_SAMPLES_FROM_SHARE_OF_RANGE * observed_range)


def compare(session: Session, settings: Settings, storage: Storage, caller: Caller, a_id: int, b_id: int,
            model_a: str | None = None, model_b: str | None = None) -> PairedComparison:
    a, b = _sides(session, caller, a_id, b_id, model_a, model_b)
    rows: list[PairedDataset] = []
    for key, left in a.datasets.items():
        right = b.datasets.get(key)
        if right is None:
            rows.append(PairedDataset(dataset=left.name, comparable=False, reason="only evaluation A has it"))
            continue
        other_name = right.name if right.name != left.name else None
        reason = _why_not_comparable(a, b, left, right)
        if reason is None:
            left_rows, right_rows = _samples(settings, storage, a, left), _samples(settings, storage, b, right)
            reason = _paired_rows(left_rows, right_rows)
        if reason is not None:
            rows.append(PairedDataset(dataset=left.name, dataset_b=other_name, comparable=False, reason=reason))
            continue
        rows.append(_statistics(left.name, other_name, left_rows, right_rows))
    rows += [PairedDataset(dataset=right.name, comparable=False, reason="only evaluation B has it")
             for key, right in b.datasets.items() if key not in a.datasets]
    tested = [row for row in rows if row.p_value is not None]
    for row, adjusted in zip(tested, holm_adjust([row.p_value for row in tested]), strict=True):
        row.p_holm, row.significant = adjusted, adjusted < ALPHA
    return PairedComparison(a=_about(a), b=_about(b), alpha=ALPHA, datasets=rows)


def _about(side: _Side) -> PairedSide:
    return PairedSide(evaluation_id=side.evaluation.id, evaluation_name=side.evaluation.name, model=side.model)


def _named(side: _Side, dataset: str) -> _Dataset | None:
    for candidate in side.datasets.values():
        if dataset in (candidate.name, candidate.pair["dataset_abbr"]):
            return candidate
    return None


def _chosen_samples(session: Session, settings: Settings, storage: Storage, caller: Caller, a_id: int, b_id: int, *,
                    dataset: str, flip: Flip | None, model_a: str | None,
                    model_b: str | None) -> list[tuple[SampleRead, SampleRead]]:
    """A's and B's rows of one comparable dataset, in dataset order, those with the chosen flip only."""
    a, b = _sides(session, caller, a_id, b_id, model_a, model_b)
    left = _named(a, dataset)
    if left is None:  # B's name of a dataset A calls otherwise
        named_in_b = _named(b, dataset)
        left = a.datasets.get(named_in_b.key) if named_in_b else None
    right = b.datasets.get(left.key) if left else None
    if left is None or right is None:
        shared = [d.name for key, d in a.datasets.items() if key in b.datasets]
        raise Invalid(f"both evaluations have no dataset {dataset!r} (they share: {', '.join(shared) or 'none'})")
    reason = _why_not_comparable(a, b, left, right)
    left_rows: list[SampleRead] = []
    right_rows: list[SampleRead] = []
    if reason is None:
        left_rows, right_rows = _samples(settings, storage, a, left), _samples(settings, storage, b, right)
        reason = _paired_rows(left_rows, right_rows)
    if reason is not None:
        raise Invalid(f"the samples of {left.name!r} cannot be compared side by side: {reason}")
    return _with_flip(left.name, left_rows, right_rows, flip)


def _with_flip(name: str, left: list[SampleRead], right: list[SampleRead],
               flip: Flip | None) -> list[tuple[SampleRead, SampleRead]]:
    """The (A, B) sample pairs with the chosen flip: by verdicts, or by who scored higher when scores are compared."""
    pairs = list(zip(left, right, strict=True))
    if flip is None:
        return pairs
    if _scores(left, right) is not None:
        if flip not in _SCORE_FLIPS:
            raise Invalid(f"the samples of {name!r} have per-sample scores, not right/wrong verdicts: choose the flip "
                          "a_only (A scored higher), b_only (B scored higher) or changed")
        kept = {"a_only": lambda x, y: x > y, "b_only": lambda x, y: x < y, "changed": lambda x, y: x != y}[flip]
        return [(x, y) for x, y in pairs if kept(x.score, y.score)]
    return [(x, y) for x, y in pairs if (bool(x.correct), bool(y.correct)) in _FLIPS[flip]]


def samples(session: Session, settings: Settings, storage: Storage, caller: Caller, a_id: int, b_id: int, *,
            dataset: str, flip: Flip | None, model_a: str | None = None, model_b: str | None = None, page: int,
            page_size: int) -> tuple[list[PairedSampleRead], int]:
    """The samples of one comparable dataset side by side, in dataset order, those with the chosen flip only."""
    chosen = _chosen_samples(session, settings, storage, caller, a_id, b_id, dataset=dataset, flip=flip,
                             model_a=model_a, model_b=model_b)
    first = (page - 1) * page_size
    return [_side_by_side(x, y) for x, y in chosen[first:first + page_size]], len(chosen)


# What the comparison export gives of each side's answer, as columns a_<name> and b_<name>.
_EXPORTED_ANSWER = ("model", "prediction", "extracted", "correct", "scorer", "judge_verdict", "judge_rationale",
                    *SAMPLE_SPEED_COLUMNS)
PAIRED_SAMPLE_COLUMNS = ("dataset", "index", "prompt", "gold", *(f"{side}_{column}" for side in "ab"
                                                                  for column in _EXPORTED_ANSWER))


def sample_export(session: Session, settings: Settings, storage: Storage, caller: Caller, a_id: int, b_id: int, *,
                  dataset: str, flip: Flip | None, export_format: SampleFormat, model_a: str | None = None,
                  model_b: str | None = None) -> Iterator[bytes]:
    """The compared samples of one dataset (those with the chosen flip), A's and B's answers on one row each, as CSV
    or JSON lines: the same rows and rules as one evaluation's sample export. Checked before anything is sent."""
    chosen = _chosen_samples(session, settings, storage, caller, a_id, b_id, dataset=dataset, flip=flip,
                             model_a=model_a, model_b=model_b)

    def rows() -> Iterator[dict[str, Any]]:
        for x, y in chosen:
            left, right = x.model_dump(), y.model_dump()
            yield {"dataset": x.dataset, "index": x.index, "prompt": x.prompt, "gold": x.gold,
                   **{f"a_{column}": left[column] for column in _EXPORTED_ANSWER},
                   **{f"b_{column}": right[column] for column in _EXPORTED_ANSWER}}

    return export_rows(rows(), PAIRED_SAMPLE_COLUMNS, export_format)


def _side_by_side(a: SampleRead, b: SampleRead) -> PairedSampleRead:
    return PairedSampleRead(
        index=a.index, prompt=a.prompt, prompt_b=b.prompt if b.prompt != a.prompt else None, gold=a.gold,
        a=PairedAnswer(prediction=a.prediction, extracted=a.extracted, correct=a.correct, score=a.score),
        b=PairedAnswer(prediction=b.prediction, extracted=b.extracted, correct=b.correct, score=b.score))
