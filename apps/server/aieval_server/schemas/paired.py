"""Two evaluations compared on the same samples (services/paired.py): per-dataset statistics and the samples side
by side."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class PairedSide(BaseModel):
    evaluation_id: int
    evaluation_name: str
    model: str = Field(description="the model of that evaluation whose answers are compared")


class PairedCounts(BaseModel):
    """The paired 2×2 table: how the n samples split by the two verdicts."""

    both: int = Field(description="right for A and for B")
    only_a: int = Field(description="right for A, wrong for B")
    only_b: int = Field(description="wrong for A, right for B")
    neither: int = Field(description="wrong for both")


class PairedDataset(BaseModel):
    """One dataset of the comparison. Not comparable (with the reason) unless both sides answered the same samples;
    the statistics are then null."""

    dataset: str = Field(description="the dataset's name in evaluation A (pass it as `dataset` to /paired/samples)")
    dataset_b: str | None = Field(default=None, description="its name in evaluation B, when different")
    comparable: bool
    reason: str | None = Field(default=None, description="why the samples cannot be paired, when not comparable")
    n: int | None = Field(default=None, description="paired samples")
    basis: Literal["verdicts", "scores"] | None = Field(
        default=None, description="what was compared, chosen from the samples: verdicts (right/wrong per sample: "
        "accuracies, differences in percentage points, `counts`) or scores (per-sample scores that are not all 0 "
        "or 1, e.g. partial credit: their means, differences in the scores' own unit)")
    accuracy_a: float | None = Field(default=None, description="percent right for A (verdicts)")
    accuracy_b: float | None = Field(default=None, description="percent right for B (verdicts)")
    mean_a: float | None = Field(default=None, description="A's mean per-sample score (scores)")
    mean_b: float | None = Field(default=None, description="B's mean per-sample score (scores)")
    difference: float | None = Field(default=None, description="A minus B: accuracy in percentage points (verdicts), "
                                                               "mean score in the scores' unit (scores)")
    ci_low: float | None = Field(default=None, description="95 % interval of the difference, in its unit")
    ci_high: float | None = None
    interval_method: Literal["newcombe", "paired_bootstrap"] | None = Field(
        default=None, description="newcombe: Newcombe's paired score method (verdicts); paired_bootstrap: percentile "
        "bootstrap of the per-sample differences, 10,000 seeded resamples (scores)")
    counts: PairedCounts | None = Field(default=None, description="the 2×2 table (verdicts)")
    test: Literal["mcnemar_exact", "sign_flip_permutation"] | None = Field(
        default=None, description="mcnemar_exact: the exact McNemar test on the discordant samples (verdicts); "
        "sign_flip_permutation: the paired permutation test of the mean difference, exact up to 2^13 sign patterns, "
        "else 10,000 seeded ones (scores)")
    p_value: float | None = None
    p_holm: float | None = Field(default=None, description="p adjusted (Holm) for comparing on every comparable "
                                                          "dataset at once")
    significant: bool | None = Field(default=None, description="p_holm below alpha")
    detectable_difference: float | None = Field(
        default=None, description="the smallest difference (in the difference's unit) this many samples detect with "
        "80 % power at alpha: for verdicts given how often the two models disagreed, for scores given the spread of "
        "the per-sample differences; null when no difference could be detected (or the models never disagreed)")
    few_samples: bool | None = Field(default=None, description="true when differences of several points (scores: 5 "
                                                              "% of the scores' observed range) cannot be told from "
                                                              "chance with these samples")


class PairedComparison(BaseModel):
    a: PairedSide
    b: PairedSide
    alpha: float = Field(description="the significance level of `significant`")
    datasets: list[PairedDataset]


class PairedAnswer(BaseModel):
    prediction: Any
    extracted: Any = Field(default=None, description="the answer the scorer compared with gold, when it differs "
                                                     "from the prediction")
    correct: bool | None
    score: float | None = Field(default=None, description="the per-sample score, when the scorer records one that "
                                                          "is not a right/wrong verdict")


class PairedSampleRead(BaseModel):
    index: int = Field(description="the sample's place in the dataset, counting from 1")
    prompt: Any = Field(description="the prompt A was sent")
    prompt_b: Any = Field(default=None, description="the prompt B was sent, when it differs (another chat template)")
    gold: Any
    a: PairedAnswer
    b: PairedAnswer
