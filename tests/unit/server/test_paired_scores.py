"""services/paired.py chooses what to compare from the samples (issue 10: "paired bootstrap for non-binary
metrics"): per-sample scores that are not all 0 or 1 are compared as scores (mean difference, paired bootstrap
interval, sign-flip permutation test, detectable difference from the differences' spread), checked against SciPy;
0/1 scores and plain verdicts stay with McNemar; the flips of scored samples are "who scored higher"."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from aieval_server.schemas.api import SampleRead
from aieval_server.services import paired
from aieval_server.services.errors import Invalid
from aieval_server.services.statistics import DEFAULT_RESAMPLES, minimum_detectable_difference

# Two models' partial-credit scores (e.g. token F1) on the same 30 samples, A better on most.
RNG = np.random.default_rng(7)
HARDNESS = RNG.uniform(0, 1, 30)
SCORES_A = np.clip(1 - HARDNESS + RNG.normal(0.08, 0.12, 30), 0, 1).round(2).tolist()
SCORES_B = np.clip(1 - HARDNESS + RNG.normal(0.0, 0.12, 30), 0, 1).round(2).tolist()


def rows(scores: list[float | None], correct: list[bool | None] | None = None) -> list[SampleRead]:
    correct = correct or [None] * len(scores)
    return [SampleRead(model="m", dataset="d", index=i + 1, prompt=f"q{i}", prediction="p", gold=f"g{i}",
                       correct=c, score=s) for i, (s, c) in enumerate(zip(scores, correct, strict=True))]


def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def test_partial_credit_is_compared_as_scores_against_scipy():
    left, right = rows(SCORES_A), rows(SCORES_B)
    assert paired._paired_rows(left, right) is None  # comparable, though no sample has a right/wrong verdict
    row = paired._statistics("d", None, left, right)
    a, b = np.asarray(SCORES_A), np.asarray(SCORES_B)
    assert (row.basis, row.interval_method, row.test) == ("scores", "paired_bootstrap", "sign_flip_permutation")
    assert row.accuracy_a is None and row.counts is None
    assert row.mean_a == pytest.approx(a.mean()) and row.mean_b == pytest.approx(b.mean())
    assert row.difference == pytest.approx((a - b).mean())
    interval = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=DEFAULT_RESAMPLES,
                               method="percentile", rng=np.random.default_rng(paired.SEED)).confidence_interval
    assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high), abs=1e-12)
    # 30 samples: SciPy draws random sign patterns too, so the two p-values agree within Monte Carlo error.
    reference = stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                       n_resamples=DEFAULT_RESAMPLES, rng=np.random.default_rng(1)).pvalue
    assert row.p_value == pytest.approx(reference, abs=4 * np.sqrt(reference * (1 - reference) / DEFAULT_RESAMPLES)
                                        + 2e-4)
    assert row.p_value < 0.05
    sd = float(np.std(a - b, ddof=1))
    assert row.detectable_difference == pytest.approx(minimum_detectable_difference(30, sd))
    assert row.few_samples == (row.detectable_difference >= 0.05 * (max(*a, *b) - min(*a, *b)))


def test_zero_one_scores_are_verdicts_and_get_mcnemar():
    left = rows([1.0, 1.0, 0.0, 0.0], [True, True, False, False])
    right = rows([1.0, 0.0, 0.0, 1.0], [True, False, False, True])
    row = paired._statistics("d", None, left, right)
    assert (row.basis, row.test, row.interval_method) == ("verdicts", "mcnemar_exact", "newcombe")
    assert row.counts.only_a == 1 and row.counts.only_b == 1


def test_samples_without_verdict_or_score_everywhere_are_not_comparable():
    reason = paired._paired_rows(rows([0.5, None]), rows([0.25, 0.5]))
    assert reason == ("the scorer gave no right/wrong verdict for some samples, and no per-sample score for every "
                      "sample to compare instead")


def test_scored_samples_filter_by_who_scored_higher():
    left, right = rows([0.5, 0.25, 0.75, 0.5]), rows([0.25, 0.5, 0.75, 0.0])
    assert [x.index for x, _ in paired._with_flip("d", left, right, "a_only")] == [1, 4]
    assert [x.index for x, _ in paired._with_flip("d", left, right, "b_only")] == [2]
    assert [x.index for x, _ in paired._with_flip("d", left, right, "changed")] == [1, 2, 4]
    assert len(paired._with_flip("d", left, right, None)) == 4
    with pytest.raises(Invalid, match="per-sample scores, not right/wrong verdicts"):
        paired._with_flip("d", left, right, "both")
