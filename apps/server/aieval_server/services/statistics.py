"""How sure a score is, and whether two models really differ: pure functions, no I/O.

Vocabulary: a *proportion* is `correct` right answers out of `n` samples (accuracy); *per-sample scores* are one
number per sample (a judge's 1-10, a BLEU) whose mean is the metric. Two models are *paired* when they answered the
same samples: model A's i-th outcome and model B's i-th outcome belong to sample i. A paired test uses that, which
makes it far more sensitive than comparing the two means as if they came from different samples (the
lm-evaluation-harness issue #3831 example: McNemar p = 0.008 where an unpaired z-test gives 0.08).

Every interval here is two-sided at `confidence` (0.95 by default). Bootstrap and permutation functions take a `seed`
and are deterministic: the same data always gives the same interval and p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 10_000
# Indexes drawn per bootstrap batch: bounds memory (8 bytes each) however large n and the resample count are.
_BATCH_CELLS = 2_000_000


def _z(confidence: float) -> float:
    """The standard normal quantile of a two-sided `confidence` interval (1.959964 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


# ---- one score ------------------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion correct/n (as a fraction, 0..1).

    Unlike the textbook "p ± 1.96·√(p(1-p)/n)" it keeps its coverage at small n and never collapses to a point at
    0 % or 100 % (8 of 8 right still gives 0.68..1.0): evaluation scores are often on a few dozen samples."""
    if n <= 0:
        raise ValueError("a proportion needs at least one sample")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n ({n}), not {correct}")
    z = _z(confidence)
    p = correct / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # Clamp rounding noise (p = 0 or 1 give exactly 0 or 1 mathematically).
    return max(0.0, centre - half), min(1.0, centre + half)


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of `resamples` bootstrap resamples of `values` (drawn with replacement, same size)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    batch = max(1, _BATCH_CELLS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, batch):
        stop = min(resamples, start + batch)
        indexes = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indexes].mean(axis=1)
    return means


def bootstrap_mean_interval(values: Sequence[float], confidence: float = 0.95, *,
                            resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-sample scores (same unit as the scores)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("a mean needs at least one sample")
    _z(confidence)  # validates confidence
    means = _bootstrap_means(data, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


# ---- two models on the same samples ---------------------------------------------------------------
@dataclass(frozen=True)
class PairedTable:
    """Two models' verdicts on the same n samples: both right, only A right, only B right, both wrong."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @classmethod
    def from_outcomes(cls, a: Sequence[bool], b: Sequence[bool]) -> PairedTable:
        if len(a) != len(b):
            raise ValueError(f"paired outcomes need the same samples: {len(a)} against {len(b)}")
        pairs = list(zip(map(bool, a), map(bool, b), strict=True))
        return cls(both=pairs.count((True, True)), only_a=pairs.count((True, False)),
                   only_b=pairs.count((False, True)), neither=pairs.count((False, False)))

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B, as a fraction: only the samples they disagree on count."""
        return (self.only_a - self.only_b) / self.n


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact (binomial) McNemar test, two-sided: under "A and B are equally good" each discordant sample is
    equally likely to favour either, so the smaller discordant count follows Binomial(only_a + only_b, 1/2).
    The p-value is twice that tail, capped at 1 (the distribution is symmetric)."""
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    k = min(only_a, only_b)
    # log C(m, i) - m log 2, summed in log space: exact enough at any m without huge integers.
    log_terms = [math.lgamma(discordant + 1) - math.lgamma(i + 1) - math.lgamma(discordant - i + 1)
                 - discordant * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(term - top) for term in log_terms)
    return min(1.0, 2 * tail)


def paired_difference_interval(table: PairedTable, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for accuracy(A) - accuracy(B) on paired samples: Newcombe's hybrid score ("square-and-add")
    method 10 (Stat Med 1998;17:2635-50), as a fraction (-1..1).

    Chosen over a paired bootstrap because it is exact arithmetic (no resampling noise, same answer everywhere),
    keeps near-nominal coverage at the small n evaluations often have, and does not collapse to [0, 0] when the
    two models agree on every sample of a small set (a bootstrap of all-zero differences would claim certainty)."""
    n = table.n
    if n == 0:
        raise ValueError("a paired difference needs at least one sample")
    right_a, right_b = table.both + table.only_a, table.both + table.only_b
    p_a, p_b = right_a / n, right_b / n
    low_a, high_a = wilson_interval(right_a, n, confidence)
    low_b, high_b = wilson_interval(right_b, n, confidence)
    # Correlation between the two accuracies, with Newcombe's correction that shrinks small positive values.
    wrong_a, wrong_b = n - right_a, n - right_b
    phi = 0.0
    if right_a and wrong_a and right_b and wrong_b:
        cross = table.both * table.neither - table.only_a * table.only_b
        scale = math.sqrt(right_a * wrong_a * right_b * wrong_b)
        if cross > n / 2:
            phi = (cross - n / 2) / scale
        elif cross < 0:
            phi = cross / scale
    d = p_a - p_b
    below = (p_a - low_a) ** 2 + (high_b - p_b) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b)
    above = (p_b - low_b) ** 2 + (high_a - p_a) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a)
    return max(-1.0, d - math.sqrt(max(0.0, below))), min(1.0, d + math.sqrt(max(0.0, above)))


def _paired_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """A's minus B's score, sample by sample."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same samples: {len(a)} against {len(b)}")
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if differences.size == 0:
        raise ValueError("a paired comparison needs at least one sample")
    if not np.all(np.isfinite(differences)):
        raise ValueError("per-sample scores must be finite numbers")
    return differences


def paired_mean_difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *,
                                    resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile paired bootstrap interval for mean(A) - mean(B) of per-sample scores (same unit as the scores),
    for metrics that are not right/wrong (`paired_difference_interval` is for those): each resample redraws samples,
    both models' scores of a drawn sample together, so what the samples share (easy and hard ones) cancels out.
    The same draws and percentiles as `scipy.stats.bootstrap(..., paired=True, method="percentile")`.

    Models that agree on every sample get [0, 0]: the data show no variation to be uncertain about."""
    differences = _paired_differences(a, b)
    _z(confidence)  # validates confidence
    means = _bootstrap_means(differences, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


# Sign patterns enumerated at once when the permutation test is exact: bounds memory like _BATCH_CELLS.
_SIGN_BATCH = 1 << 16


def paired_permutation_p(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of "A and B score alike", for per-sample scores
    that are not right/wrong (`mcnemar_exact_p` is for those).

    Under that hypothesis which model got which of a sample's two scores is a coin flip, so each per-sample
    difference is as likely to have either sign; the p-value is how often the mean difference with random signs is
    at least as extreme as the one observed (twice the smaller tail, at most 1).

    Chosen over a bootstrap p-value because its level holds at any sample count (it assumes no normality and no large
    n, and evaluations are often a few dozen samples), and because on right/wrong scores it *is* the exact McNemar
    test (only the disagreements change sign), so both kinds of dataset are tested by one principle. Exact over all
    2^m sign patterns of the m non-zero differences when 2^m <= `resamples`; otherwise `resamples` random patterns
    (seeded, deterministic) with (1 + count) / (1 + resamples), never exactly 0. The same p as
    `scipy.stats.permutation_test(..., permutation_type="samples")` on the mean difference."""
    differences = _paired_differences(a, b)
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    nonzero = differences[differences != 0]
    n, m = differences.size, nonzero.size
    if m == 0:
        return 1.0
    observed = nonzero.sum() / n
    # SciPy's tolerance: a null statistic equal to the observed one up to summation order counts as "as extreme".
    tolerance = abs(observed) * np.finfo(float).eps * 100
    less = greater = 0
    if 2 ** m <= resamples:
        total = 2 ** m
        bits = np.arange(m)
        for start in range(0, total, _SIGN_BATCH):
            patterns = np.arange(start, min(total, start + _SIGN_BATCH))[:, None]
            signs = 1 - 2 * ((patterns >> bits) & 1)  # every +/- assignment, once
            null = signs @ nonzero / n
            less += int(np.count_nonzero(null <= observed + tolerance))
            greater += int(np.count_nonzero(null >= observed - tolerance))
        p_less, p_greater = less / total, greater / total
    else:
        rng = np.random.default_rng(seed)
        batch = max(1, _BATCH_CELLS // m)
        for start in range(0, resamples, batch):
            signs = rng.choice((-1.0, 1.0), size=(min(resamples, start + batch) - start, m))
            null = signs @ nonzero / n
            less += int(np.count_nonzero(null <= observed + tolerance))
            greater += int(np.count_nonzero(null >= observed - tolerance))
        p_less, p_greater = (1 + less) / (1 + resamples), (1 + greater) / (1 + resamples)
    return min(1.0, 2 * min(p_less, p_greater))


def paired_minimum_detectable_difference(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05,
                                         power: float = 0.8) -> float | None:
    """The smallest mean difference (the scores' unit) a paired test at `alpha` detects with probability `power`,
    given how much the per-sample differences vary here (their sample standard deviation); None when that cannot
    be told: fewer than two samples, or the same difference on every sample."""
    differences = _paired_differences(a, b)
    if differences.size < 2:
        return None
    spread = float(np.std(differences, ddof=1))
    if spread == 0:
        return None
    return minimum_detectable_difference(differences.size, spread, alpha=alpha, power=power)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: comparing two models on several datasets at once,
    a dataset is "significantly different" when its adjusted p is below alpha, with the chance of any false
    alarm across all of them kept at alpha."""
    m = len(p_values)
    for p in p_values:
        if not 0 <= p <= 1:
            raise ValueError(f"a p-value lies between 0 and 1, not {p}")
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))  # step-down: never below a smaller p's
        adjusted[i] = running
    return adjusted


# ---- what a sample count can see ------------------------------------------------------------------
def minimum_detectable_difference(n: int, sd_of_differences: float, *, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired test at `alpha` detects with probability `power` on
    n samples, for per-sample differences with standard deviation `sd_of_differences` (same unit).

    Normal approximation: (z(1-alpha/2) + z(power)) * sd / sqrt(n); the far tail's contribution is ignored (it
    changes the result by less than 1e-6 at the usual alpha and power)."""
    if n <= 0:
        raise ValueError("n must be at least 1")
    if sd_of_differences < 0:
        raise ValueError("a standard deviation cannot be negative")
    return (_z(1 - alpha) + NormalDist().inv_cdf(power)) * sd_of_differences / math.sqrt(n)


def minimum_detectable_accuracy_difference(n: int, discordant_rate: float, *, alpha: float = 0.05,
                                           power: float = 0.8) -> float | None:
    """The smallest accuracy difference (fraction) the McNemar test detects with probability `power` on n paired
    samples when the models disagree on a share `discordant_rate` of them; None when not even the largest
    possible difference (every disagreement in the same direction) would be detected.

    Connor's normal approximation for McNemar (Biometrics 1987;43:207-11):
    sqrt(n) * d = z(1-alpha/2) * sqrt(psi) + z(power) * sqrt(psi - d^2), solved for d by bisection (the left
    side grows with d, the right side shrinks). With psi unknown in advance, the observed disagreement rate is
    the natural plug-in."""
    if n <= 0:
        raise ValueError("n must be at least 1")
    if not 0 <= discordant_rate <= 1:
        raise ValueError(f"the discordant rate is a share between 0 and 1, not {discordant_rate}")
    if discordant_rate == 0:
        return None
    z_alpha, z_power = _z(1 - alpha), NormalDist().inv_cdf(power)

    def gap(d: float) -> float:
        return math.sqrt(n) * d - z_alpha * math.sqrt(discordant_rate) - z_power * math.sqrt(
            max(0.0, discordant_rate - d * d))

    largest = discordant_rate  # |accuracy difference| cannot exceed the share of samples they disagree on
    if gap(largest) < 0:
        return None
    low, high = 0.0, largest
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if gap(middle) < 0 else (low, middle)
    return high


# ---- the interval stored with a score ---------------------------------------------------------------
@dataclass(frozen=True)
class ScoreInterval:
    """What a score rests on: samples scored, right answers (proportions only), and its 95 % interval in the
    score's own unit (a score reported in percent gets its interval in percent)."""

    n: int
    correct: int | None
    ci_low: float | None
    ci_high: float | None
    method: str | None  # "wilson", "bootstrap", or None when the score's per-sample basis is not known


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def score_interval(value: float, verdicts: Sequence[bool | None] | None = None,
                   per_sample: Sequence[float] | None = None, *, seed: int = 0) -> ScoreInterval | None:
    """The interval of one reported score from the per-sample results behind it.

    `verdicts` (right/wrong per sample): if the score equals the share right (as a fraction or in percent), it
    is that proportion and gets a Wilson interval. `per_sample` scores: if the score equals their mean (or 100x),
    it gets a bootstrap interval. A score matching neither (another metric of the same dataset) gets n only:
    no interval is better than one about a different quantity."""
    if per_sample is not None and len(per_sample):
        n = len(per_sample)
        mean = float(np.mean(np.asarray(per_sample, dtype=float)))
        for scale in (1.0, 100.0):
            if _same(value, mean * scale):
                low, high = bootstrap_mean_interval(per_sample, seed=seed)
                return ScoreInterval(n, None, low * scale, high * scale, "bootstrap")
        return ScoreInterval(n, None, None, None, None)
    if verdicts is not None and len(verdicts):
        n = len(verdicts)
        if all(v is not None for v in verdicts):
            correct = sum(1 for v in verdicts if v)
            for scale in (100.0, 1.0):
                if _same(value, correct / n * scale):
                    low, high = wilson_interval(correct, n)
                    return ScoreInterval(n, correct, low * scale, high * scale, "wilson")
        return ScoreInterval(n, None, None, None, None)
    return None


# ---- where a model stands among several ------------------------------------------------------------
RANK_RESAMPLES = 1_000  # enough for the 2.5 % / 97.5 % rank quantiles; a leaderboard request pays for each one


def rank_intervals(datasets: Sequence[Sequence[Sequence[float] | float]], confidence: float = 0.95, *,
                   resamples: int = RANK_RESAMPLES, seed: int = 0) -> list[tuple[int, int]]:
    """Each model's plausible rank range (1 = best) on a leaderboard that ranks by the average over datasets.

    `datasets[d][m]` is model m's per-sample scores on dataset d (its dataset score is their mean), or a plain
    number when its per-sample scores are not known (then it is held fixed: that dataset adds no uncertainty for
    that model). Each bootstrap resample redraws every dataset's samples with replacement, the same draw for every
    model of equal sample count (they answered the same samples: paired, so their shared easy and hard samples do
    not count as a difference), recomputes each model's average over the datasets and ranks them; models with
    exactly the same average are ordered at random, so identical models share the range of ranks they tie for.
    Returns per model the `confidence` range of its ranks (the inverted-CDF quantiles: a rank it actually took).
    Deterministic for a given seed."""
    _z(confidence)  # validates confidence
    tail = (1 - confidence) / 2
    ranks = rank_draws(datasets, resamples=resamples, seed=seed)
    low = np.quantile(ranks, tail, axis=0, method="inverted_cdf")
    high = np.quantile(ranks, 1 - tail, axis=0, method="inverted_cdf")
    return [(int(a), int(b)) for a, b in zip(low, high, strict=True)]


def rank_draws(datasets: Sequence[Sequence[Sequence[float] | float]], *, resamples: int = RANK_RESAMPLES,
               seed: int = 0) -> np.ndarray:
    """The bootstrap behind `rank_intervals`: ranks[r, m] is model m's rank (1 = best) in resample r."""
    if not datasets:
        raise ValueError("ranks need at least one dataset")
    models = len(datasets[0])
    if models == 0 or any(len(column) != models for column in datasets):
        raise ValueError("every dataset needs one entry per model")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    rng = np.random.default_rng(seed)
    totals = np.zeros((resamples, models))
    for column in datasets:
        by_length: dict[int, list[int]] = {}
        for m, scores in enumerate(column):
            if isinstance(scores, (int, float, np.floating, np.integer)):
                totals[:, m] += float(scores)
            elif len(scores) == 0:
                raise ValueError("per-sample scores need at least one sample")
            else:
                by_length.setdefault(len(scores), []).append(m)
        for n, members in by_length.items():
            matrix = np.asarray([np.asarray(column[m], dtype=float) for m in members])  # models x samples
            batch = max(1, _BATCH_CELLS // n)
            for start in range(0, resamples, batch):
                stop = min(resamples, start + batch)
                # Counts of each sample in each resample (a multinomial draw is the same as n draws with
                # replacement): one matrix product gives every model's resampled mean.
                counts = rng.multinomial(n, np.full(n, 1 / n), size=stop - start)
                totals[start:stop, members] += counts @ matrix.T / n
    averages = totals / len(datasets)
    tie_breaker = rng.random((resamples, models))
    scale = max(1.0, float(np.abs(averages).max()))
    difference = averages[:, None, :] - averages[:, :, None]  # [r, m, o]: o's average minus m's
    tied = np.abs(difference) <= 1e-9 * scale
    ahead = (difference > 0) & ~tied | tied & (tie_breaker[:, None, :] < tie_breaker[:, :, None])
    return 1 + ahead.sum(axis=2)  # [r, m]: 1 + the models ahead of m
