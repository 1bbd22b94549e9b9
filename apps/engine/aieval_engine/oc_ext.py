"""Extensions registered into OpenCompass' own registries; imported only inside the OpenCompass process.

These subclass OpenCompass' public classes (nothing of OpenCompass is patched):
- `SecretKeyOpenAISDK` reads its API key from a named environment variable, so several endpoints with
  different keys can run in one evaluation and no key is ever written into a config file, and it never
  reaches for the network to find a tokenizer.
- Both remote model classes connect only where the outbound policy allows (netpolicy.py): the policy comes
  from the environment of this process (AIEVAL_OUTBOUND_POLICY), their HTTP clients use its guarded
  transport, and a base URL it refuses stops the task when the model is built, with the reason in the log.
- Both remote model classes take a slot of their model's shared request budget (budget.py), when the config
  gives one, around every request: OpenCompass calls `acquire()` / `release()` around each request (after and
  before its own rate limiting), so that is where the slot is taken and returned; prompts and answers are
  untouched.
- `DifyChatModel` evaluates a Dify chat app: each prompt is the `query` of one blocking chat-messages
  request (built and parsed by `dify.py`, shared with the server's connection test), its key read from a
  named environment variable like `SecretKeyOpenAISDK`.
- Both remote model classes record each answered prompt's latency, token usage and retries (sample_metrics.py)
  under the name the config gives them (`sample_metrics`), when the process is given a directory for them.
- `ContainsAnswerEvaluator` is the documented forgiving scorer for free-form answers.
- `QuickNumWorkerPartitioner` / `QuickNaivePartitioner` partition exactly like OpenCompass' own, but
  mark the task configs they return as not to be yapf-formatted when dumped; the infer one also swaps in
  the continuous request pool for GenInferencer (oc_pool.ContinuousGenInferencer) and puts every pair on that
  pool into one task whose pairs run at once (oc_infer_task.PooledInferTask).
"""

from __future__ import annotations

import copy
import os
import re
import string
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import httpx
from mmengine.config import Config
from opencompass.models import OpenAISDK
from opencompass.models.base_api import BaseAPIModel
from opencompass.openicl.icl_evaluator import BaseEvaluator
from opencompass.partitioners import NaivePartitioner, NumWorkerPartitioner
from opencompass.registry import ICL_EVALUATORS, MODELS, PARTITIONERS

from .budget import Budget, open_budget
from .dify import DifyError, send_chat_message
from .netpolicy import GuardedTransport, OutboundPolicy, guarded_client
from .oc_async import AsyncChatCompletions, RetryPolicy
from .prediction_cache import PredictionCache
from .sample_metrics import HttpAttempts, MetricsWriter, record_of


class _ApproximateTokenizer:
    """Counts tokens without a vocabulary: one per CJK character, ~4 characters per token otherwise.

    OpenAISDK only uses token counts to trim over-long prompts; loading tiktoken's vocabulary would
    need the internet.
    """

    _cjk = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

    def count(self, text: str) -> int:
        cjk = len(self._cjk.findall(text))
        return cjk + (len(text) - cjk + 3) // 4


def _policy_for(base_url: str | list[str]) -> OutboundPolicy:
    """This process's outbound policy, after checking base_url against it: a refused URL fails here, with
    the reason, rather than as retried connection errors. A name that does not resolve (yet) is left to
    the first request to report."""
    policy = OutboundPolicy.from_env(os.environ)
    for url in [base_url] if isinstance(base_url, str) else base_url:
        try:
            policy.check_url(url)
        except OSError:
            pass
    return policy


class _SharedBudget:
    """Mixin for BaseAPIModel subclasses: every request also holds a slot of the shared budget named in the config
    (`shared_budget={'key': ..., 'max_concurrency': n}`), in the store this process was given (budget.py)."""

    _budget: Budget | None = None

    def _open_budget(self, shared_budget: dict | None) -> None:
        self._budget = None
        self._budget_holders = threading.local()  # acquire() and release() of one request run on one thread
        if shared_budget:
            self._budget = open_budget(str(shared_budget["key"]), int(shared_budget["max_concurrency"]))

    def acquire(self):
        super().acquire()  # the rate limit first: a slot is not held while waiting for the next allowed moment
        if self._budget is not None:
            held = getattr(self._budget_holders, "stack", None)
            if held is None:
                held = self._budget_holders.stack = []
            held.append(self._budget.acquire())

    def release(self):
        try:
            held = getattr(self._budget_holders, "stack", None) if self._budget is not None else None
            if held:
                self._budget.release(held.pop())
        finally:
            super().release()


@MODELS.register_module()
class SecretKeyOpenAISDK(AsyncChatCompletions, _SharedBudget, OpenAISDK):
    """`sample_metrics`: the name (the model's abbr) its per-prompt latency and token records are written under, when
    this process is given a directory for them (sample_metrics.py). `agenerate` (oc_async.py) is the async request
    path the continuous pool (oc_pool.ContinuousGenInferencer) uses: same request, same answer; it streams the answer
    (to time its first token) unless `stream` is False, for servers that cannot stream."""

    def __init__(self, key_env: str | None = None, shared_budget: dict | None = None,
                 sample_metrics: str | None = None, request_pool: dict | None = None,
                 prediction_cache: dict | None = None, stream: bool = True, **kwargs):
        self.request_pool = request_pool  # the pool's limiter settings (concurrency.limiter_for); None: fixed C
        self.stream_answers = stream
        # answers to requests asked before, for the pool (prediction_cache.py); None: every prompt is sent
        self.prediction_cache = PredictionCache.from_config(prediction_cache)
        self._open_budget(shared_budget)
        self._metrics = MetricsWriter(sample_metrics)
        self._http_attempts = HttpAttempts()
        kwargs["key"] = (os.environ.get(key_env) if key_env else None) or "EMPTY"
        self.outbound_policy = _policy_for(kwargs.get("openai_api_base") or [])
        # OpenAISDK builds its own httpx.Client from http_client_cfg; the guarded transport takes the place
        # of the default one (same connection limits as OpenAISDK's own client).
        kwargs["http_client_cfg"] = {
            "transport": GuardedTransport(self.outbound_policy,
                                          limits=httpx.Limits(max_keepalive_connections=2048, max_connections=4096)),
            "trust_env": False,
            **({"event_hooks": self._http_attempts.event_hooks()} if self._metrics.enabled else {}),
        }
        super().__init__(**kwargs)

    def _generate(self, input, max_out_len: int, temperature: float) -> str:
        # OpenAISDK answers one prompt per call, on one thread: the hooks time this thread's HTTP attempts and read
        # their usage, and the answer is OpenAISDK's own, untouched.
        if not self._metrics.enabled:
            return super()._generate(input, max_out_len, temperature)
        self._http_attempts.begin()
        try:
            answer = super()._generate(input, max_out_len, temperature)
        finally:
            attempts, requests = self._http_attempts.end()
        self._metrics.write(input, record_of(attempts, requests))
        return answer

    def _init_tokenizer(self):
        if self.tokenizer_path and os.path.isdir(self.tokenizer_path):
            from transformers import AutoTokenizer

            # Only the vocabulary is needed to count tokens: a tokenizer folder's own Python code never runs.
            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, trust_remote_code=False)
            self.tokenizer_type = "hf"
        else:
            self.tokenizer = _ApproximateTokenizer()
            self.tokenizer_type = "approximate"

    def get_token_len(self, prompt: str) -> int:
        if self.tokenizer_type == "approximate":
            return self.tokenizer.count(prompt)
        return super().get_token_len(prompt)


_ROLE_LABELS = {"HUMAN": "User", "BOT": "Assistant", "SYSTEM": "System"}


def prompt_to_query(prompt) -> str:
    """The text sent as a Dify `query`: a chat app takes one message per request, so a prompt of one user
    turn is sent as is, and a longer one (few-shot rounds, a system part) as a 'Role: text' transcript."""
    if isinstance(prompt, str):
        return prompt
    turns = [(str(item.get("role", "HUMAN")), str(item.get("prompt", ""))) for item in prompt if isinstance(item, dict)]
    if len(turns) == 1 and turns[0][0] == "HUMAN":
        return turns[0][1]
    return "\n\n".join(f"{_ROLE_LABELS.get(role, role.title())}: {text}" for role, text in turns)


@MODELS.register_module()
class DifyChatModel(RetryPolicy, _SharedBudget, BaseAPIModel):
    """A Dify chat app as an OpenCompass API model: one blocking chat-messages call per sample, the app's
    `answer` as the prediction. Retries rate limits (429), server errors (5xx) and network failures with
    backoff; any other error (bad key, bad request) stops the task at once with Dify's own message."""

    def __init__(
        self,
        base_url: str,
        key_env: str | None = None,
        path: str | None = None,
        inputs: list[list[str]] | dict[str, str] | None = None,  # (name, value) pairs as the config builder writes
        timeout: float = 120,
        max_workers: int = 8,
        query_per_second: int = 8,
        retry: int = 2,
        max_seq_len: int = 4096,
        meta_template: dict | None = None,
        shared_budget: dict | None = None,
        sample_metrics: str | None = None,
        **kwargs,
    ):
        self._open_budget(shared_budget)
        self._metrics = MetricsWriter(sample_metrics)  # as SecretKeyOpenAISDK's
        super().__init__(path=path or base_url, query_per_second=query_per_second, retry=retry,
                         max_seq_len=max_seq_len, meta_template=meta_template, **kwargs)
        self.base_url = base_url
        self.inputs = dict(inputs or {})
        self.timeout = timeout
        self.max_workers = max_workers
        self._key = (os.environ.get(key_env) if key_env else None) or None
        self.tokenizer = _ApproximateTokenizer()
        self._client = guarded_client(_policy_for(base_url), limits=httpx.Limits(max_connections=max_workers))

    def generate(self, inputs, max_out_len: int = 512, **kwargs) -> list[str]:
        # max_out_len and sampling settings belong to the Dify app's own configuration.
        if len(inputs) == 1:
            return [self._ask(inputs[0])]
        with ThreadPoolExecutor(max_workers=self.max_workers) as executor:
            return list(executor.map(self._ask, inputs))

    def _ask(self, prompt) -> str:
        query = prompt_to_query(prompt)
        attempts = self.retry + 1
        for attempt in range(1, attempts + 1):
            self.acquire()
            try:
                started = time.perf_counter()
                reply = send_chat_message(self.base_url, query, self._key, inputs=self.inputs,
                                          timeout=self.timeout, client=self._client)
                self._metrics.write(prompt, {
                    "latency_s": round(time.perf_counter() - started, 6), "ttft_s": None,
                    "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                    "retries": attempt - 1})
                return reply.answer
            except DifyError as exc:
                error = exc
            finally:
                self.release()
            if not error.retryable or attempt == attempts:
                break
            delay = self.retry_delay(attempt, error.retry_after)
            self.logger.warning(f"Dify call failed ({error}); retry {attempt}/{self.retry} in {delay:g} s")
            time.sleep(delay)
        tried = f" after {attempt} attempts" if attempt > 1 else ""
        raise RuntimeError(f"Calling Dify failed{tried}: {error}")

    def get_token_len(self, prompt: str) -> int:
        return self.tokenizer.count(prompt)


_PUNCTUATION = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】")


# Punctuation that belongs to a number stays: the '.' and ',' in 8.5 and 8,000, a sign before a digit.
_NUMBER_PUNCTUATION = re.compile(r"(?<=\d)[.,](?=\d)|[-+](?=\d)")


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, punctuation removed (except inside numbers), whitespace collapsed:
    '  Paris.' -> 'paris', 'It costs 8,000.' -> 'it costs 8,000'."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    keep = {m.start() for m in _NUMBER_PUNCTUATION.finditer(text)}
    text = "".join(" " if ch in _PUNCTUATION and i not in keep else ch for i, ch in enumerate(text))
    return " ".join(text.split())


def _contains(prediction: str, reference: str) -> bool:
    # Chinese and Japanese are written without spaces, so whole-word matching only applies elsewhere.
    if _ApproximateTokenizer._cjk.search(reference):
        return reference in prediction
    return f" {reference} " in f" {prediction} "


@ICL_EVALUATORS.register_module()
class ContainsAnswerEvaluator(BaseEvaluator):
    """Correct when the normalised reference appears in the normalised prediction (as whole words,
    except in CJK text)."""

    def score(self, predictions, references):
        if len(predictions) != len(references):
            return {"error": "predictions and references have different lengths"}
        details = []
        correct = 0
        for prediction, reference in zip(predictions, references, strict=True):
            pred, ref = normalize_answer(prediction), normalize_answer(reference)
            hit = bool(ref) and _contains(pred, ref)
            correct += hit
            details.append({"pred": prediction, "answer": reference, "correct": hit})
        return {"accuracy": 100 * correct / len(predictions) if predictions else 0.0, "details": details}


def _skip_code_formatting(tasks):
    """OpenCompass dumps every task's config to a temporary file before running it, and mmengine runs
    yapf over that dump: seconds per task, more than a small evaluation's whole inference. The file is
    an intermediate nobody reads, so formatting it buys nothing; the content is unchanged."""
    for task in tasks:
        if isinstance(task, list):
            _skip_code_formatting(task)
        elif isinstance(task, Config):
            object.__setattr__(task, "_format_python_code", False)
    return tasks


def _on_request_pool(model) -> bool:
    """Whether a model config's requests go through the continuous pool: the config builder gives pooled endpoint
    models `request_pool` settings; a proxied one keeps OpenCompass' own path (AsyncChatCompletions)."""
    return bool(model.get("request_pool")) and not model.get("proxy_url")


@PARTITIONERS.register_module()
class QuickNumWorkerPartitioner(NumWorkerPartitioner):
    """The infer partitioner: also gives every GenInferencer dataset the continuous request pool (oc_pool.py).

    Pairs on the pool (a model with `request_pool` settings, a GenInferencer dataset) are not split or bucketed by
    `num_worker`: they all go into one task that oc_infer_task.PooledInferTask infers at once in one process, where one
    limiter per server bounds them together. The other pairs are partitioned exactly as NumWorkerPartitioner does."""

    def partition(self, model_dataset_combinations, work_dir, out_dir, add_cfg={}):  # noqa: B006 - OpenCompass' signature
        from opencompass.utils import get_infer_output_path, model_abbr_from_cfg

        from .oc_infer_task import POOLED_TASK
        from .oc_pool import is_gen_inferencer

        pooled: dict[str, tuple] = {}  # model abbr -> (model config, its datasets still to infer)
        others = []
        for combination in model_dataset_combinations:
            for model in combination["models"]:
                rest = []
                for dataset in combination["datasets"]:
                    if not _on_request_pool(model) or not is_gen_inferencer(dataset):
                        rest.append(dataset)
                    elif not os.path.exists(get_infer_output_path(model, dataset, out_dir)):
                        # a copy per model: OpenICLInferTask writes the model into the dataset's inferencer config
                        pooled.setdefault(model_abbr_from_cfg(model), (model, []))[1].append(copy.deepcopy(dataset))
                if rest:
                    others.append({"models": [model], "datasets": rest})
        tasks = super().partition(others, work_dir, out_dir, add_cfg) if others else []
        if pooled:
            tasks.insert(0, Config({"models": [model for model, _ in pooled.values()],
                                    "datasets": [datasets for _, datasets in pooled.values()],
                                    "work_dir": work_dir, POOLED_TASK: True, **add_cfg}))
        return tasks

    def __call__(self, cfg):
        # oc_pool imports OpenCompass' inferencers: only the process that makes the tasks needs them
        from .oc_pool import use_continuous_pool

        tasks = super().__call__(cfg)
        use_continuous_pool(tasks)
        return _skip_code_formatting(tasks)


@PARTITIONERS.register_module()
class QuickNaivePartitioner(NaivePartitioner):
    def __call__(self, cfg):
        return _skip_code_formatting(super().__call__(cfg))
