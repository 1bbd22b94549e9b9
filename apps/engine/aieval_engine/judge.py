"""LLM-as-judge scoring, the parts that need no OpenCompass: our judge prompts (en, zh), reading a judge's verdict
and rationale from its reply, the judge call cache, and the judge's fingerprint.

How a judge scores (config_builder.py, oc_judge.py): a question-answer file with the scorer "judge" is scored by
OpenCompass' own GenericLLMEvaluator with the prompt below, its judge replies read by `parse_judgement` (through
the dict postprocessor `oc_judge.judge_verdict_postprocess`); a built-in config OpenCompass scores with a judge
keeps its own prompt and postprocessing, and gets the judge model in its empty `judge_cfg`. Either way the judge
model is one of the project's model classes with a cache (`JudgeCallCache`) in front of its calls, so scoring the
same answers again costs no judge call.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .kvstore import SqliteKeyValueStore

# The placeholders are columns of the judged rows: the file's `question` and `answer`, and the model's answer, which
# GenericLLMEvaluator adds as `prediction`. (It also adds the answer as `reference`, but makes that the output column,
# which OpenCompass blanks in prompts, as its own judge configs do with theirs: they name `answer` too.)
JUDGE_PROMPTS = {
    "en": (
        "You are grading an answer to a question against the reference answer.\n"
        "\n"
        "Decide only whether the candidate answer reaches the same final answer as the reference answer. Wording, "
        "formatting, the way units or numbers are written and extra explanation do not matter; a final answer that "
        "is missing, different or contradicts itself is incorrect. Do not solve the question again beyond what the "
        "comparison needs.\n"
        "\n"
        "[Question]\n"
        "{question}\n"
        "\n"
        "[Reference answer]\n"
        "{answer}\n"
        "\n"
        "[Candidate answer]\n"
        "{prediction}\n"
        "\n"
        "Reply with a rationale of one or two sentences, then a last line that is exactly "
        "\"Verdict: CORRECT\" or \"Verdict: INCORRECT\"."
    ),
    "zh": (
        "你是一名阅卷老师，请对照参考答案评判下面的回答。\n"
        "\n"
        "只判断待评回答给出的最终答案是否与参考答案一致。措辞、格式、数字和单位的写法以及额外的解释都不影响判断；"
        "最终答案缺失、不同或前后矛盾则判为错误。除比较所需之外，不要重新解题。\n"
        "\n"
        "[问题]\n"
        "{question}\n"
        "\n"
        "[参考答案]\n"
        "{answer}\n"
        "\n"
        "[待评回答]\n"
        "{prediction}\n"
        "\n"
        "请先用一两句话说明理由，最后一行只写“结论：正确”或“结论：错误”。"
    ),
}
# A judge that writes nothing but its verdict needs few tokens; one that reasons first needs room for it.
JUDGE_DEFAULT_MAX_OUT_LEN = 1024

CORRECT, INCORRECT, UNPARSED = "correct", "incorrect", "unparsed"

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_prompt_language(questions: list[str]) -> str:
    """'zh' when the questions are mostly CJK (more CJK characters than Latin letters over all of them), else 'en'."""
    cjk = sum(len(_CJK.findall(q)) for q in questions)
    latin = sum(len(_LATIN.findall(q)) for q in questions)
    return "zh" if cjk > latin else "en"


def prompt_sha256(language: str) -> str:
    """What the fingerprint records of a prompt: "auto" may use either, so it names both."""
    texts = [JUDGE_PROMPTS[lang] for lang in (("en", "zh") if language == "auto" else (language,))]
    return hashlib.sha256("\n\0\n".join(texts).encode()).hexdigest()


# ---- reading a judge's reply -------------------------------------------------------------------------------
_WORDS = {
    "correct": CORRECT, "right": CORRECT, "yes": CORRECT, "true": CORRECT,
    "incorrect": INCORRECT, "wrong": INCORRECT, "no": INCORRECT, "false": INCORRECT, "not correct": INCORRECT,
    "正确": CORRECT, "对": CORRECT, "是": CORRECT,
    "错误": INCORRECT, "不正确": INCORRECT, "错": INCORRECT, "否": INCORRECT,
}
_WORD_ALTERNATIVES = "|".join(sorted((re.escape(w) for w in _WORDS), key=len, reverse=True))
# "Verdict: CORRECT", "**Final verdict:** incorrect", "结论：正确", "最终结论: 错误", with optional Markdown emphasis.
_VERDICT_LINE = re.compile(
    r"^[\s>*_#-]*(?:final\s+)?(?:verdict|judg(?:e)?ment|结论|最终结论|判定|评判)[\s*_]*[:：][\s*_\"“'「]*"
    rf"({_WORD_ALTERNATIVES})(?![A-Za-z])[\s*_\"”'」.。!！]*$",
    re.IGNORECASE,
)
# A last line holding nothing but the verdict word.
_BARE_VERDICT = re.compile(rf"^[\s*_\"“'「]*({_WORD_ALTERNATIVES})[\s*_\"”'」.。!！]*$", re.IGNORECASE)
_RATIONALE_LABEL = re.compile(r"^[\s*_#]*(?:rationale|reason(?:ing)?|理由|原因)[\s*_]*[:：][\s*_]*", re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass(frozen=True)
class Judgement:
    verdict: str  # correct | incorrect | unparsed
    rationale: str  # the reply without its verdict line (the whole reply when no verdict was found)

    @property
    def correct(self) -> bool:
        return self.verdict == CORRECT


def parse_judgement(reply: Any) -> Judgement:
    """The verdict of the last verdict line of a judge's reply (in English or Chinese), and the rest as its rationale
    (a reasoning model's <think> block left out: the raw reply is kept beside them).

    A reply with no readable verdict line is 'unparsed' and counts as not correct: guessing a verdict from prose
    would score answers by the parser, not by the judge."""
    text = "" if reply is None else str(reply)
    visible = _THINKING.sub("", text).strip()
    lines = visible.splitlines()
    for position in range(len(lines) - 1, -1, -1):
        line = lines[position].strip()
        if not line:
            continue
        match = _VERDICT_LINE.match(line) or (_BARE_VERDICT.match(line) if position == _last_text_line(lines) else None)
        if match:
            rationale = "\n".join(lines[:position] + lines[position + 1 :]).strip()
            return Judgement(_WORDS[match.group(1).lower()], _RATIONALE_LABEL.sub("", rationale, count=1).strip())
    return Judgement(UNPARSED, text.strip())


def _last_text_line(lines: list[str]) -> int:
    for position in range(len(lines) - 1, -1, -1):
        if lines[position].strip():
            return position
    return -1


# ---- the judge call cache ----------------------------------------------------------------------------------
class JudgeCallCache:
    """Judge replies by (judge identity, full prompt and generation settings) in a SQLite file, shared by every run
    given the same file (the server's `<data dir>/judge-cache.sqlite`; kvstore.SqliteKeyValueStore). Empty replies
    are not kept: OpenCompass' API models return '' when a call failed for good, and a failure must be retried next
    time, not remembered."""

    def __init__(self, path: str | Path, identity: dict[str, Any]):
        self.path = Path(path)
        self.identity = identity
        self._store = SqliteKeyValueStore(self.path, "judge_calls")

    def key(self, prompt: Any, settings: dict[str, Any]) -> str:
        data = {"judge": self.identity, "settings": settings, "prompt": prompt}
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        return self._store.get_many(keys)

    def put_many(self, items: dict[str, str]) -> None:
        self._store.put_many({key: reply for key, reply in items.items() if isinstance(reply, str) and reply.strip()})


def plain_prompt(prompt: Any) -> Any:
    """A prompt as OpenCompass hands it to a model (a string, or a PromptList of chat turns) as plain JSON data."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        return [dict(turn) if isinstance(turn, dict) else plain_prompt(turn) for turn in prompt]
    return str(prompt)


def weights_signature(path: str | Path) -> str | None:
    """A cheap identity of a local checkpoint's files (names, sizes, modification times): a judge whose weights were
    replaced in place must not answer from the old weights' cache."""
    root = Path(path)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
