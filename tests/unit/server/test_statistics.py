"""services/statistics.py against reference implementations (SciPy, statsmodels) and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from aieval_server.services.statistics import (
    PairedTable,
    bootstrap_mean_interval,
    holm_adjust,
    mcnemar_exact_p,
    minimum_detectable_accuracy_difference,
    minimum_detectable_difference,
    paired_difference_interval,
    paired_mean_difference_interval,
    paired_minimum_detectable_difference,
    paired_permutation_p,
    rank_draws,
    rank_intervals,
    score_interval,
    wilson_interval,
)

# lm-evaluation-harness issue #3831 / PR #3868 style: two models on the same 220 items, correlated (hard items are
# hard for both). 130 both right, 27 only A, 10 only B, 53 both wrong.
HARNESS_3831 = PairedTable(both=130, only_a=27, only_b=10, neither=53)


# ---- Wilson ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels_on_every_count_including_the_edges(confidence):
    for n in (1, 2, 8, 12, 30, 101, 1000):
        for correct in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            expected = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
            assert wilson_interval(correct, n, confidence) == pytest.approx(expected, abs=1e-12), (correct, n)


def test_wilson_of_five_in_eight_and_the_refusals():
    low, high = wilson_interval(5, 8)
    assert (round(low, 4), round(high, 4)) == (0.3057, 0.8632)  # asymmetric, unlike the Wald 0.625 +- 0.335
    assert wilson_interval(8, 8)[1] == 1.0 and wilson_interval(8, 8)[0] == pytest.approx(0.6756, abs=1e-4)
    for correct, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(correct, n)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.5)


# ---- bootstrap of a mean ----------------------------------------------------------------------------
def test_bootstrap_interval_agrees_with_scipy_and_is_deterministic():
    rng = np.random.default_rng(7)
    for values in (rng.normal(5.0, 2.0, 40), rng.exponential(1.0, 200), rng.integers(1, 11, 25).astype(float)):
        ours = bootstrap_mean_interval(values, resamples=20_000, seed=3)
        # SciPy's percentile bootstrap draws its resamples the same way: with the same seed, the same interval.
        same_draws = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=20_000,
                                     method="percentile", random_state=np.random.default_rng(3))
        assert ours == pytest.approx(tuple(same_draws.confidence_interval), rel=1e-12)
        # Other draws: the endpoints move by Monte Carlo noise only (well under a fifth of the standard error).
        other_draws = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=20_000,
                                      method="percentile", random_state=np.random.default_rng(11))
        spread = values.std(ddof=1) / math.sqrt(len(values))
        assert ours == pytest.approx(tuple(other_draws.confidence_interval), abs=0.2 * spread)
        assert bootstrap_mean_interval(values, resamples=20_000, seed=3) == ours  # same seed, same interval
    assert bootstrap_mean_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)
    with pytest.raises(ValueError):
        bootstrap_mean_interval([])


def test_bootstrap_batches_do_not_change_the_draws(monkeypatch):
    """Memory is bounded by drawing in batches; the batch size must not change the interval."""
    from aieval_server.services import statistics

    values = np.random.default_rng(1).normal(size=300)
    whole = bootstrap_mean_interval(values, resamples=2_000, seed=5)
    monkeypatch.setattr(statistics, "_BATCH_CELLS", 300 * 7)  # 7 resamples per batch
    batched = bootstrap_mean_interval(values, resamples=2_000, seed=5)
    assert batched == pytest.approx(whole, abs=1e-12)


# ---- McNemar ----------------------------------------------------------------------------------------
def test_exact_mcnemar_matches_statsmodels_and_scipy():
    cases = [(0, 0), (0, 1), (1, 0), (3, 3), (5, 0), (0, 9), (6, 16), (27, 10), (40, 20), (2900, 3000), (1, 60)]
    for only_a, only_b in cases:
        table = [[50, only_a], [only_b, 40]]
        expected = mcnemar(table, exact=True).pvalue
        assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300), (only_a, only_b)
        if only_a + only_b:
            binomial = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
            assert mcnemar_exact_p(only_a, only_b) == pytest.approx(binomial, rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 3)


def test_pairing_finds_what_an_unpaired_test_misses():
    """The lm-evaluation-harness #3831 point: on the same items, the paired test is about ten times as sure."""
    t = HARNESS_3831
    right_a, right_b = t.both + t.only_a, t.both + t.only_b
    # The harness's model_comparator: z = (acc1 - acc2) / sqrt(se1^2 + se2^2), as if the items were different.
    standard_errors = [math.sqrt(p * (1 - p) / t.n) for p in (right_a / t.n, right_b / t.n)]
    unpaired = 2 * stats.norm.sf(t.difference / math.hypot(*standard_errors))
    pooled = proportions_ztest([right_a, right_b], [t.n, t.n])[1]  # statsmodels' two-sample test says the same
    paired = mcnemar_exact_p(t.only_a, t.only_b)
    assert round(unpaired, 2) == round(pooled, 2) == 0.08 and round(paired, 4) == 0.0076 and unpaired / paired > 10
    # The same in intervals: the paired one excludes 0, Newcombe's unpaired one (statsmodels) does not.
    low, high = paired_difference_interval(t)
    unpaired_low, unpaired_high = confint_proportions_2indep(right_a, t.n, right_b, t.n, method="newcomb")
    assert 0 < low < t.difference < high and unpaired_low < 0 < unpaired_high
    assert high - low < unpaired_high - unpaired_low


# ---- paired difference ------------------------------------------------------------------------------
def test_newcombe_paired_interval_matches_the_published_example():
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete response
    before and after consolidation therapy (Cavo et al. 2012), Newcombe square-and-add: -0.0621 (-0.1186 to
    -0.0046)."""
    table = PairedTable(both=59, only_a=6, only_b=16, neither=80)
    low, high = paired_difference_interval(table)
    assert (round(table.difference, 4), round(low, 4), round(high, 4)) == (-0.0621, -0.1186, -0.0046)


def test_newcombe_paired_interval_is_mirror_symmetric_and_never_degenerate():
    for table in (PairedTable(3, 2, 0, 3), PairedTable(8, 0, 0, 4), PairedTable(0, 0, 0, 5), PairedTable(0, 7, 1, 0)):
        low, high = paired_difference_interval(table)
        swapped = PairedTable(table.both, table.only_b, table.only_a, table.neither)
        assert paired_difference_interval(swapped) == pytest.approx((-high, -low), abs=1e-12)
        assert -1 <= low <= table.difference <= high <= 1
        assert high - low > 0.05  # all-agreement on 12 samples is no proof of equality
    with pytest.raises(ValueError):
        paired_difference_interval(PairedTable(0, 0, 0, 0))


def test_newcombe_paired_interval_keeps_its_coverage_by_simulation():
    """95 % of intervals cover the true difference (Newcombe reports 0.93-0.96 for method 10 at these sizes)."""
    rng = np.random.default_rng(2026)
    truth = (0.55, 0.15, 0.08, 0.22)  # both, only A, only B, neither
    difference = truth[1] - truth[2]
    tables = rng.multinomial(40, truth, size=4000)
    covered = sum(1 for counts in tables if paired_difference_interval(PairedTable(*map(int, counts)))[0]
                  <= difference <= paired_difference_interval(PairedTable(*map(int, counts)))[1])
    assert 0.93 <= covered / len(tables) <= 0.975


def test_paired_table_from_outcomes():
    a = [True, True, False, False, True, False]
    b = [True, False, True, False, False, False]
    assert PairedTable.from_outcomes(a, b) == PairedTable(both=1, only_a=2, only_b=1, neither=2)
    assert PairedTable.from_outcomes(a, b).difference == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        PairedTable.from_outcomes(a, b[:-1])


# ---- per-sample scores, paired ----------------------------------------------------------------------------
def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def partial_credit(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two models' per-sample scores on the same n items (F1-like, 0..1, correlated through item difficulty)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, n)
    a = np.clip(1 - difficulty + rng.normal(0.05, 0.15, n), 0, 1).round(3)
    b = np.clip(1 - difficulty + rng.normal(0.0, 0.15, n), 0, 1).round(3)
    return a, b


@pytest.mark.parametrize("n,confidence", [(12, 0.95), (80, 0.95), (300, 0.9)])
def test_paired_mean_difference_interval_is_scipys_paired_percentile_bootstrap(n, confidence):
    a, b = partial_credit(n, seed=n)
    ours = paired_mean_difference_interval(a, b, confidence, resamples=5_000, seed=11)
    reference = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=5_000,
                                confidence_level=confidence, method="percentile", rng=np.random.default_rng(11))
    assert ours == pytest.approx((reference.confidence_interval.low, reference.confidence_interval.high), abs=1e-12)
    assert ours[0] < np.mean(a - b) < ours[1]


def test_paired_mean_difference_interval_edges():
    assert paired_mean_difference_interval([0.5, 0.25], [0.5, 0.25]) == (0.0, 0.0)  # they agree everywhere
    with pytest.raises(ValueError):
        paired_mean_difference_interval([0.5], [0.5, 0.25])
    with pytest.raises(ValueError):
        paired_mean_difference_interval([], [])
    with pytest.raises(ValueError):
        paired_mean_difference_interval([float("nan")], [0.5])


@pytest.mark.parametrize("n,shift", [(10, 0.0), (12, 0.08), (13, 0.2)])
def test_paired_permutation_p_is_scipys_exact_permutation_test(n, shift):
    a, b = partial_credit(n, seed=100 + n)
    a = np.clip(a + shift, 0, 1)
    ours = paired_permutation_p(a, b, resamples=10_000)
    reference = stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                       n_resamples=10_000, alternative="two-sided", rng=np.random.default_rng(0))
    assert 2 ** n <= 10_000  # SciPy enumerates every sign pattern too: the same exact p
    assert ours == pytest.approx(reference.pvalue, rel=1e-12)


def test_paired_permutation_p_agrees_with_scipy_when_sampled():
    rng = np.random.default_rng(5)
    for shift in (0.0, 0.03, 0.06):
        a, b = partial_credit(200, seed=int(shift * 100))
        a = np.clip(a + shift, 0, 1)
        ours = paired_permutation_p(a, b, resamples=20_000, seed=3)
        reference = stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                           n_resamples=20_000, alternative="two-sided", rng=rng).pvalue
        # Two Monte Carlo estimates of the same p: within a few standard errors of each other.
        assert ours == pytest.approx(reference, abs=4 * math.sqrt(reference * (1 - reference) / 20_000) + 1e-4)
    assert paired_permutation_p(a, b, resamples=2_000, seed=9) == paired_permutation_p(a, b, resamples=2_000, seed=9)


@pytest.mark.parametrize("table", [(30, 9, 2, 10), (5, 0, 0, 5), (50, 12, 5, 35), (0, 1, 0, 0)])
def test_on_right_wrong_scores_the_permutation_test_is_the_exact_mcnemar_test(table):
    both, only_a, only_b, neither = table
    a = [1.0] * both + [1.0] * only_a + [0.0] * only_b + [0.0] * neither
    b = [1.0] * both + [0.0] * only_a + [1.0] * only_b + [0.0] * neither
    resamples = max(10_000, 2 ** (only_a + only_b))  # exact: every sign pattern of the disagreements
    assert paired_permutation_p(a, b, resamples=resamples) == pytest.approx(mcnemar_exact_p(only_a, only_b),
                                                                            rel=1e-9)


def test_paired_permutation_p_edges():
    assert paired_permutation_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert paired_permutation_p([0.7, 0.2], [0.2, 0.7]) == 1.0  # mean difference 0
    # Three differences all positive: 2 of the 8 sign patterns are as extreme (all + or all -).
    assert paired_permutation_p([0.9, 0.8, 0.6], [0.5, 0.5, 0.5]) == pytest.approx(2 / 8)
    with pytest.raises(ValueError):
        paired_permutation_p([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_permutation_p([1.0], [1.0], resamples=0)


def test_paired_minimum_detectable_difference_uses_the_spread_of_the_differences():
    a, b = partial_credit(150, seed=8)
    sd = float(np.std(a - b, ddof=1))
    expected = NormalIndPower().solve_power(effect_size=None, nobs1=150, alpha=0.05, power=0.8, ratio=0)
    # statsmodels' one-sample normal power (ratio=0) gives the detectable effect in standard deviations.
    assert paired_minimum_detectable_difference(a, b) == pytest.approx(expected * sd, rel=1e-3)
    assert paired_minimum_detectable_difference([0.5], [0.25]) is None
    assert paired_minimum_detectable_difference([0.5, 0.75], [0.25, 0.5]) is None  # the same difference everywhere


# ---- Holm ---------------------------------------------------------------------------------------------
def test_holm_matches_statsmodels():
    rng = np.random.default_rng(4)
    vectors = [[0.01, 0.04, 0.03, 0.2], [0.5], [], [0.001, 0.001, 0.04, 0.04, 0.9], [0.3, 0.02, 1.0, 0.0],
               list(rng.uniform(0, 0.1, 12)), list(rng.uniform(0, 1, 30))]
    for p_values in vectors:
        expected = list(multipletests(p_values, method="holm")[1]) if p_values else []
        assert holm_adjust(p_values) == pytest.approx(expected, abs=1e-12), p_values
    with pytest.raises(ValueError):
        holm_adjust([0.2, 1.2])


# ---- minimum detectable difference ----------------------------------------------------------------------
def test_minimum_detectable_difference_matches_statsmodels_power():
    for n in (8, 12, 50, 400):
        for sd in (0.3, 1.0, 2.5):
            effect = NormalIndPower().solve_power(effect_size=None, nobs1=n, ratio=0, alpha=0.05, power=0.8)
            assert minimum_detectable_difference(n, sd) == pytest.approx(effect * sd, rel=1e-4), (n, sd)
    assert minimum_detectable_difference(12, 0.0) == 0.0
    with pytest.raises(ValueError):
        minimum_detectable_difference(0, 1.0)


def _exact_mcnemar_power(n: int, discordant_rate: float, difference: float) -> float:
    """Power of the exact McNemar test at alpha 0.05, by summing over every possible table."""
    favour_a = (discordant_rate + difference) / (2 * discordant_rate)
    power = 0.0
    for discordant in range(n + 1):
        weight = stats.binom.pmf(discordant, n, discordant_rate)
        if weight < 1e-12:
            continue
        rejected = [only_a for only_a in range(discordant + 1) if mcnemar_exact_p(only_a, discordant - only_a) <= 0.05]
        power += weight * sum(stats.binom.pmf(only_a, discordant, favour_a) for only_a in rejected)
    return power


def test_minimum_detectable_accuracy_difference_has_the_promised_power():
    """Connor's approximation checked against the exact test's power computed by enumeration: about 0.8 (the
    exact test is discrete and a little conservative)."""
    for n, discordant_rate in ((60, 0.3), (200, 0.2), (500, 0.1)):
        difference = minimum_detectable_accuracy_difference(n, discordant_rate)
        assert difference is not None and 0 < difference <= discordant_rate
        assert 0.72 <= _exact_mcnemar_power(n, discordant_rate, difference) <= 0.86, (n, discordant_rate)
    # Fewer samples: a larger difference is needed; no disagreement at all: nothing can be detected.
    assert minimum_detectable_accuracy_difference(100, 0.3) > minimum_detectable_accuracy_difference(400, 0.3)
    assert minimum_detectable_accuracy_difference(12, 0.0) is None
    assert minimum_detectable_accuracy_difference(5, 0.4) is None  # even all 2 disagreements one way: p = 0.5
    with pytest.raises(ValueError):
        minimum_detectable_accuracy_difference(12, 1.5)


# ---- the interval stored with a score ----------------------------------------------------------------
def test_score_interval_follows_the_scale_of_the_score():
    verdicts = [True, False, True, True, False, True, True, False]  # 5 of 8
    percent = score_interval(62.5, verdicts)
    assert (percent.n, percent.correct, percent.method) == (8, 5, "wilson")
    assert (round(percent.ci_low, 2), round(percent.ci_high, 2)) == (30.57, 86.32)
    fraction = score_interval(0.625, verdicts)
    assert fraction.ci_low == pytest.approx(percent.ci_low / 100)
    # Another metric of the same dataset (not the share right): n only, no interval about something else.
    other = score_interval(41.0, verdicts)
    assert (other.n, other.correct, other.ci_low, other.ci_high, other.method) == (8, None, None, None, None)
    unknown = score_interval(50.0, [True, None, False, None])
    assert (unknown.n, unknown.correct, unknown.ci_low) == (4, None, None)
    graded = score_interval(6.0, per_sample=[4.0, 6.0, 8.0, 6.0])
    assert graded.method == "bootstrap" and graded.correct is None and graded.ci_low < 6.0 < graded.ci_high
    assert score_interval(62.5) is None and score_interval(62.5, []) is None


# ---- rank intervals ------------------------------------------------------------------------------------
def _reference_rank_draws(datasets, resamples: int, seed: int) -> np.ndarray:
    """The rank bootstrap written the plain way: per resample, per dataset one draw of sample indexes shared by the
    models, their averages, then ranks with exact ties broken at random. ranks[r, m]."""
    rng = np.random.default_rng(seed)
    models = len(datasets[0])
    ranks = np.empty((resamples, models), dtype=int)
    for r in range(resamples):
        averages = np.zeros(models)
        for column in datasets:
            n = len(column[0])
            indexes = rng.integers(0, n, n)
            for m, scores in enumerate(column):
                averages[m] += np.asarray(scores, dtype=float)[indexes].mean() / len(datasets)
        order = sorted(range(models), key=lambda m: (-averages[m], rng.random()))
        for place, m in enumerate(order):
            ranks[r, m] = place + 1
    return ranks


def _verdicts(pattern: str) -> list[float]:
    return [100.0 if c == "1" else 0.0 for c in pattern]


def test_identical_models_share_ranks_one_to_two_and_a_clear_leader_is_first_for_sure():
    same = _verdicts("1101001110" * 4)
    assert rank_intervals([[same, list(same)]]) == [(1, 2), (1, 2)]
    # Also on several datasets, and with a third model far behind: it is third, the tie still spans 1-2.
    worst = _verdicts("0000000001" * 4)
    assert rank_intervals([[same, list(same), worst]] * 3) == [(1, 2), (1, 2), (3, 3)]
    leader = _verdicts("1111111111" * 4)
    middle = _verdicts("1010101010" * 4)
    assert rank_intervals([[middle, leader, worst]]) == [(2, 2), (1, 1), (3, 3)]


def test_pairing_makes_a_consistent_small_lead_certain():
    """B is right exactly where A is, plus 6 more of 200 samples: every resample keeps B ahead or level (the shared
    samples move both alike), so B is first. Resampled independently the two would overlap."""
    a = _verdicts("1" * 100 + "0" * 100)
    b = _verdicts("1" * 106 + "0" * 94)
    assert rank_intervals([[a, b]]) == [(2, 2), (1, 1)]


def test_rank_bootstrap_agrees_with_the_plain_reference():
    rng = np.random.default_rng(11)
    datasets = [[(rng.random(n) < p).astype(float) * 100 for p in (0.62, 0.58, 0.30)] for n in (40, 60)]
    ours = rank_intervals(datasets, resamples=4000, seed=5)
    reference = _reference_rank_draws(datasets, 4000, seed=9)
    low = np.quantile(reference, 0.025, axis=0, method="inverted_cdf")
    high = np.quantile(reference, 0.975, axis=0, method="inverted_cdf")
    assert ours == [(int(x), int(y)) for x, y in zip(low, high, strict=True)] == [(1, 2), (1, 2), (3, 3)]
    # And the whole distribution, not only its ends: how often each model takes each rank, within Monte Carlo error.
    draws = rank_draws(datasets, resamples=4000, seed=5)
    for m in range(3):
        for rank in (1, 2, 3):
            assert np.mean(draws[:, m] == rank) == pytest.approx(np.mean(reference[:, m] == rank), abs=0.03)
    assert 0.2 < np.mean(draws[:, 0] == 1) < 0.8  # a real toss-up, so the check above means something


def test_rank_intervals_hold_unknown_per_sample_scores_fixed_and_are_deterministic():
    varied = _verdicts("10" * 20)
    # Model 1's score on the dataset is a bare number (no per-sample scores): fixed at 50, the same as model 0's
    # mean, so only model 0's resampling moves the order: both ranks stay possible.
    assert rank_intervals([[varied, 50.0]]) == [(1, 2), (1, 2)]
    assert rank_intervals([[90.0, 10.0]]) == [(1, 1), (2, 2)]
    first = rank_intervals([[varied, _verdicts("1100" * 10)]], seed=4)
    assert first == rank_intervals([[varied, _verdicts("1100" * 10)]], seed=4)
    for bad in ([], [[]], [[varied], [varied, varied]], [[[]]]):
        with pytest.raises(ValueError):
            rank_intervals(bad)
    with pytest.raises(ValueError):
        rank_intervals([[varied]], confidence=1.0)
