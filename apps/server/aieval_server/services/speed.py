"""How fast an endpoint model answered, as reports show it: the speed summary stored with each score
(aieval_engine.sample_metrics.summarize, Score.speed) as text and export columns. Quality and speed side by side:
the score tables keep their scores; these add the speed of the same model on the same dataset."""

from __future__ import annotations

from typing import Any

# The speed columns of the scores CSV, after its provenance and fingerprint columns (names as in the API's speed).
SPEED_COLUMNS = ("latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s", "prompt_tokens_mean",
                 "completion_tokens_mean", "total_tokens", "retries")
# The per-sample export's columns, after the sample's own (names as in the API's SampleRead).
SAMPLE_SPEED_COLUMNS = ("latency_s", "ttft_s", "prompt_tokens", "completion_tokens")


def seconds(value: float) -> str:
    """0.52 s, 12.3 s, 2 ms: two significant digits below 10 s, one decimal above."""
    if value < 0.01:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2g} s" if value < 10 else f"{value:.1f} s"


def speed_text(speed: dict[str, Any] | None) -> str | None:
    """`p50 0.52 s · p95 0.9 s · first token p50 0.08 s · 120 tokens/answer` (the first token when the answers
    streamed, tokens when the endpoint counted them), None when not recorded."""
    if not speed or speed.get("latency_p50_s") is None:
        return None
    parts = [f"p50 {seconds(speed['latency_p50_s'])}"]
    if speed.get("latency_p95_s") is not None:
        parts.append(f"p95 {seconds(speed['latency_p95_s'])}")
    if speed.get("ttft_p50_s") is not None:
        parts.append(f"first token p50 {seconds(speed['ttft_p50_s'])}")
    if speed.get("completion_tokens_mean") is not None:
        parts.append(f"{speed['completion_tokens_mean']:.0f} tokens/answer")
    return " · ".join(parts)


def speed_cells(speed: dict[str, Any] | None) -> list[Any]:
    """The SPEED_COLUMNS of one score's row: None (an empty cell) where not recorded."""
    return [(speed or {}).get(column) for column in SPEED_COLUMNS]


def markdown_lines(scores: list[dict[str, Any]], escape) -> list[str]:
    """A report's "Speed" section: one row per model x dataset that has a record; nothing when none has."""
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for score in scores:
        if score.get("speed") and (score["model"], score["dataset"]) not in pairs:
            pairs[(score["model"], score["dataset"])] = score["speed"]
    if not pairs:
        return []
    lines = ["", "## Speed", "",
             "Per answer, as the endpoint served it: latency from request to the whole answer (median and 95th "
             "percentile), from request to the first token when the answers streamed, and tokens as the endpoint's "
             "usage counted them. Not recorded for local models.", "",
             "| model | dataset | latency | prompt tokens | total tokens | retries |", "|---|---|---|---:|---:|---:|"]
    for (model, dataset), speed in pairs.items():
        mean_prompt = speed.get("prompt_tokens_mean")
        total = speed.get("total_tokens")
        lines.append(f"| {escape(model)} | {escape(dataset)} | {speed_text(speed)} | "
                     f"{'' if mean_prompt is None else f'{mean_prompt:.0f}'} | {'' if total is None else total} | "
                     f"{speed.get('retries') or 0} |")
    return lines
