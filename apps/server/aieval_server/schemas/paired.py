"""Two evaluations compared on the same samples (services/paired.py): per-dataset statistics and the samples side
by side."""

from __future__ import annotations

from typing import Any

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
    accuracy_a: float | None = Field(default=None, description="percent right for A")
    accuracy_b: float | None = Field(default=None, description="percent right for B")
    difference: float | None = Field(default=None, description="accuracy A minus accuracy B, in percentage points")
    ci_low: float | None = Field(default=None, description="95 % interval of the difference (Newcombe's paired "
                                                           "score method), percentage points")
    ci_high: float | None = None
    counts: PairedCounts | None = None
    test: str | None = Field(default=None, description="mcnemar_exact: the exact McNemar test on the discordant "
                                                       "samples (the verdicts are right/wrong)")
    p_value: float | None = None
    p_holm: float | None = Field(default=None, description="p adjusted (Holm) for comparing on every comparable "
                                                          "dataset at once")
    significant: bool | None = Field(default=None, description="p_holm below alpha")
    detectable_difference: float | None = Field(
        default=None, description="the smallest accuracy difference (percentage points) this many samples detect "
        "with 80 % power at alpha, given how often the two models disagreed; null when no difference could be "
        "detected at that rate of disagreement (or the models never disagreed)")
    few_samples: bool | None = Field(default=None, description="true when differences of several points cannot "
                                                              "be told from chance with these samples")


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


class PairedSampleRead(BaseModel):
    index: int = Field(description="the sample's place in the dataset, counting from 1")
    prompt: Any = Field(description="the prompt A was sent")
    prompt_b: Any = Field(default=None, description="the prompt B was sent, when it differs (another chat template)")
    gold: Any
    a: PairedAnswer
    b: PairedAnswer
