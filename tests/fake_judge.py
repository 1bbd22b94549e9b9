"""Deterministic OpenAI-compatible servers on 127.0.0.1 for judge tests: a judge whose verdicts follow a fixed
rule (so tests can assert every verdict and rationale), and a model that answers each question from a table.
Both count the requests they receive."""

from __future__ import annotations

import http.server
import json
import re
import threading

from fake_openai import completion_of, send_chat_reply

from aieval_engine.local_server import free_port

# The section markers of the engine's judge prompts (aieval_engine.judge.JUDGE_PROMPTS) and of OpenCompass' own
# grader prompt (gsm8k_cascade_eval_*, aime2024_llmjudge_* and most GenericLLMEvaluator configs).
_OURS = {
    "en": ("[Question]\n", "\n\n[Reference answer]\n", "\n\n[Candidate answer]\n", "\n\nReply with"),
    "zh": ("[问题]\n", "\n\n[参考答案]\n", "\n\n[待评回答]\n", "\n\n请先用"),
}
_GRADER = re.compile(
    r"<Gold Target Begin>: ?\n(?P<gold>.*?)\n<Gold Target End>.*?<Predicted Answer Begin>: ?\n(?P<pred>.*?)\n"
    r"<Predicted (?:Answer )?End>",  # "<Predicted End>": the aime2024_llmjudge configs' variant
    re.DOTALL,
)


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def judge_reply(language: str, reference: str, candidate: str) -> str:
    """What the judge answers our prompt: correct exactly when the candidate contains the reference (ignoring case)."""
    if not reference.strip():
        raise ValueError("the prompt holds no reference answer")
    ok = reference.strip().lower() in candidate.lower()
    if language == "zh":
        return f"待评回答{'包含' if ok else '不包含'}参考答案“{reference.strip()}”。\n结论：{'正确' if ok else '错误'}"
    return (f"The candidate answer {'contains' if ok else 'does not contain'} the reference answer "
            f"\"{reference.strip()}\".\nVerdict: {'CORRECT' if ok else 'INCORRECT'}")


def grade_letter(gold: str, prediction: str) -> str:
    """What the judge answers OpenCompass' grader prompt: "A" (correct) when the prediction contains the gold answer,
    else "B"."""
    return "A" if gold.strip() and gold.strip() in prediction else "B"


def answer_for(content: str) -> str:
    for language, (q, ref, cand, end) in _OURS.items():
        if q in content and cand in content:
            return judge_reply(language, _between(content, ref, cand), _between(content, cand, end))
    match = _GRADER.search(content)
    if match:
        return grade_letter(match["gold"], match["pred"])
    raise ValueError("not a judge prompt this server knows")


class _Server:
    def __init__(self, answer):
        server = self
        self.requests: list[dict] = []
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(request)
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                content = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
                try:
                    completion = completion_of(request.get("model"), answer(content))
                except ValueError as exc:
                    self.send_error(400, str(exc))
                    return
                send_chat_reply(self, request, completion)  # streamed when asked, as the evaluated model's are

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeterministicJudge(_Server):
    """A judge model: our prompts get a one-sentence rationale and a verdict line (judge_reply), OpenCompass' grader
    prompt gets "A" or "B" (grade_letter)."""

    def __init__(self):
        super().__init__(answer_for)


class TableModel(_Server):
    """A model under evaluation answering each question with the text the table gives for it."""

    def __init__(self, answers: dict[str, str]):
        def answer(content: str) -> str:
            for question, reply in answers.items():
                if question in content:
                    return reply
            raise ValueError("unknown question")

        super().__init__(answer)
