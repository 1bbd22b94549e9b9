"""`ContinuousGenInferencer`: OpenCompass' GenInferencer with a continuous pool of in-flight requests.

GenInferencer hands the model a batch of C prompts, the model answers them from C fresh threads, and the next
batch starts when the slowest answer is in: the server idles through every batch's tail. This inferencer builds
the same prompts with GenInferencer's own methods, then keeps up to the limiter's number of requests in flight all
the time, on one event loop (the model's async request path, oc_async.AsyncChatCompletions.agenerate), so each
answer that comes back makes room for the next request at once. That loop is the process' one request loop
(`request_loop`): pairs inferred at once (oc_infer_task.PooledInferTask) each run their pool on it, and share one
limiter per model server and one request rate per model, so those bound the whole job, not each pair.

What OpenCompass sees does not change: the predictions file is written by GenInferencer's own output handler in the
same format; `tmp_<name>.jsonl` is written in index order as a contiguous prefix (OpenCompass resumes at
len(results)), in chunks: whenever the prefix has grown by the pool's concurrency, or every FLUSH_EVERY_S, so
progress moves per request and a crash loses at most one chunk. Models without the async path (local Hugging Face
models, Dify apps, a proxied endpoint) and GenInferencer features the pool does not cover (multi-round chats,
several sequences per prompt, message dumps, length and timer dumps) run GenInferencer's own loop.

The config builder does not name this class: `use_continuous_pool` swaps it in for GenInferencer in the task
configs of the project's own infer partitioner (oc_ext.QuickNumWorkerPartitioner), after OpenCompass has turned
custom datasets into full configs, so built-in and custom datasets alike get it, and a config run without the
project's pipeline (quick_pipeline=False: benchmarks, the `opencompass` CLI) stays stock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import os.path as osp
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from opencompass.openicl.icl_inferencer import GenInferencer
from opencompass.openicl.icl_inferencer.icl_base_inferencer import GenInferencerOutputHandler
from opencompass.registry import ICL_INFERENCERS
from opencompass.utils.logging import get_logger

from .concurrency import FixedLimiter, Limiter, shared_limiter
from .oc_async import RequestRate
from .prediction_cache import PoolCache

FLUSH_EVERY_S = 0.5
# Prompts handed to the event loop ahead of the requests in flight: bounds memory for large datasets, and stays
# above any limiter's ceiling so the limiter, not this window, decides how many are in flight.
WINDOW_MIN = 1024
CONTINUOUS_INFERENCER = f"{__name__}.ContinuousGenInferencer"

logger = get_logger(__name__)


def pool_limiter(model, batch_size: int | None) -> Limiter:
    """The model's `request_pool` settings (concurrency.limiter_for), shared by every pair of this process that
    calls the same server; without them, GenInferencer's own concurrency: a batch of `batch_size` prompts answered
    by at most `max_workers` threads."""
    settings = getattr(model, "request_pool", None)
    if settings:
        return shared_limiter(str(model.openai_api_base), settings)
    workers = [n for n in (getattr(model, "max_workers", None), batch_size) if n]
    return FixedLimiter(min(workers) if workers else 1)


_request_loop: tuple[int, asyncio.AbstractEventLoop] | None = None  # (pid, loop): a forked child starts its own
_request_loop_lock = threading.Lock()


def request_loop() -> asyncio.AbstractEventLoop:
    """This process' one event loop for model requests, run by a daemon thread of its own and started on first use.
    Every pool of the process runs on it, so pairs inferred at once from several threads (oc_infer_task) share one
    limiter per model server (concurrency.shared_limiter is per loop) and one request rate per model."""
    global _request_loop
    with _request_loop_lock:
        if _request_loop is None or _request_loop[0] != os.getpid() or _request_loop[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="request-loop", daemon=True).start()
            _request_loop = (os.getpid(), loop)
        return _request_loop[1]


def _run_to_completion(coroutine) -> None:
    """Run a pool on the process' request loop and wait for its end. OpenCompass calls inferencers synchronously,
    possibly from a thread that already runs an event loop of its own (a notebook, a test session holding a browser
    driver): that loop is never used, so nothing nests."""
    future = asyncio.run_coroutine_threadsafe(coroutine, request_loop())
    try:
        future.result()
    except BaseException:
        future.cancel()  # an interrupted caller takes its requests along
        raise


_shared_rates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakKeyDictionary] = \
    weakref.WeakKeyDictionary()


def shared_rate(model, per_second: float) -> RequestRate:
    """One request rate per model (object) and event loop: the model's `query_per_second` bounds all its pairs
    running at once together, as it did when they ran one after another."""
    per_model = _shared_rates.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    rate = per_model.get(model)
    if rate is None or rate.per_second != float(per_second):
        rate = per_model[model] = RequestRate(per_second)
    return rate


_shared_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakKeyDictionary] = \
    weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def shared_client(model):
    """The model's async client, shared by its pools running at once on this loop, so pairs reuse one set of
    keep-alive connections instead of each opening its own (a new connection per request, roughly, when pairs are
    small); closed when the last of them ends."""
    per_model = _shared_clients.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    entry = per_model.get(model)
    if entry is None:
        entry = per_model[model] = [model.async_client(), 0]  # [client, pools using it]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            if per_model.get(model) is entry:
                del per_model[model]
            await entry[0].aclose()


@ICL_INFERENCERS.register_module()
class ContinuousGenInferencer(GenInferencer):

    def _uses_pool(self) -> bool:
        generation_kwargs = getattr(self.model, "generation_kwargs", None) or {}
        return (getattr(self.model, "supports_async_pool", False) and hasattr(self.model, "agenerate")
                and not self.multiround and not self.dump_only_message_path and not self.dump_res_length
                and not self.dump_timer and generation_kwargs.get("num_return_sequences", 1) == 1)

    def inference(self, retriever, ice_template=None, prompt_template=None, output_json_filepath=None,
                  output_json_filename=None) -> list:
        if not self._uses_pool():
            return super().inference(retriever, ice_template=ice_template, prompt_template=prompt_template,
                                     output_json_filepath=output_json_filepath,
                                     output_json_filename=output_json_filename)
        # Steps 1-3 and the resume point exactly as GenInferencer.inference.
        output_handler = GenInferencerOutputHandler()
        output_json_filepath = output_json_filepath or self.output_json_filepath
        output_json_filename = output_json_filename or self.output_json_filename
        ice_idx_list = retriever.retrieve()
        prompt_list = self.get_generation_prompt_list_from_retriever_indices(
            ice_idx_list, retriever, self.gen_field_replace_token, max_seq_len=self.max_seq_len,
            ice_template=ice_template, prompt_template=prompt_template)
        ds_reader = retriever.dataset_reader
        golds: list[Any] = [None] * len(prompt_list)
        if ds_reader.output_column:
            golds = list(ds_reader.dataset["test"][ds_reader.output_column])
        tmp_jsonl_filename = Path("tmp_" + output_json_filename).with_suffix(".jsonl").name
        tmp_jsonl_filepath = Path(output_json_filepath) / tmp_jsonl_filename
        start = len(output_handler.restore_from_jsonl(output_json_filepath, tmp_jsonl_filename))

        # GenInferencer parses each batch's templates once for `origin_prompt` and once more inside
        # generate_from_template for the request; parsing is per prompt, so all at once gives the same prompts.
        parsed = self.model.parse_template(list(prompt_list[start:]), mode="gen")
        logger.info(f"Starting inference process (continuous pool) for {len(parsed)} prompts from index {start}")
        if self.is_main_process:
            os.makedirs(output_json_filepath, exist_ok=True)
        _run_to_completion(self._run_pool(parsed, golds, start, output_handler, output_json_filepath,
                                          tmp_jsonl_filename))

        if self.is_main_process:
            output_handler.write_to_json(output_json_filepath, output_json_filename)
            if osp.exists(tmp_jsonl_filepath):
                os.remove(tmp_jsonl_filepath)
        return [sample["prediction"] for sample in output_handler.results_dict.values()]

    async def _run_pool(self, parsed: list, golds: list, start: int, output_handler: GenInferencerOutputHandler,
                        save_dir: str, tmp_name: str) -> None:
        model = self.model
        limiter = pool_limiter(model, self.batch_size)
        settings = getattr(model, "request_pool", None)
        # The platform's configs say in request_pool whether there is a rate cap at all (the model's own
        # query_per_second is then only what OpenCompass' sync path needs); a hand-written config gives the model's.
        per_second = settings.get("query_per_second") if settings else getattr(model, "query_per_second", None)
        rate = shared_rate(model, per_second) if per_second else None
        answers: dict[int, str] = {}
        saved = 0  # prompts (of `parsed`) whose results are in output_handler, a contiguous prefix
        flushed = 0
        last_flush = time.monotonic()
        # Prompts the model answered before, same request and seed (prediction_cache.py): no request, no slot.
        cached = await asyncio.to_thread(PoolCache, model, parsed, self.max_out_len, start,
                                         tmp_name.removeprefix("tmp_").removesuffix(".jsonl"))
        answers.update(cached.answers)

        def save_prefix(force: bool = False) -> None:
            nonlocal saved, flushed, last_flush
            while saved in answers:
                output_handler.save_results(parsed[saved], answers.pop(saved), start + saved,
                                            gold=golds[start + saved])
                saved += 1
            chunk = max(1, int(getattr(limiter, "limit", 1) or 1))  # an adaptive limit moves
            due = saved - flushed >= chunk or time.monotonic() - last_flush >= FLUSH_EVERY_S
            if saved > flushed and (force or due) and self.is_main_process:
                output_handler.write_to_jsonl(save_dir, tmp_name)
                cached.saved(saved)
                flushed = saved
                last_flush = time.monotonic()

        most = getattr(limiter, "ceiling", None) or getattr(limiter, "limit", 1)
        window = asyncio.Semaphore(max(WINDOW_MIN, 4 * int(most)))
        failures: list[BaseException] = []
        remaining = len(parsed) - len(cached.answers)
        finished = asyncio.Event()
        if not remaining:
            finished.set()

        async def answer(client, position: int) -> None:
            nonlocal remaining
            try:
                # The request gets its own copy, as generate_from_template parses its own: OpenAISDK may trim
                # chat messages in place, and origin_prompt must stay what OpenCompass would record.
                answers[position] = await model.agenerate(client, copy.deepcopy(parsed[position]), self.max_out_len,
                                                          limiter=limiter, rate=rate,
                                                          cache_key=cached.key(position))
                save_prefix()
            except Exception as exc:  # noqa: BLE001 - re-raised by _run_pool, after the answered prefix is saved
                failures.append(exc)
            finally:
                window.release()
                remaining -= 1
                if failures or not remaining:
                    finished.set()

        async with shared_client(model) as client:
            tasks: set[asyncio.Task] = set()
            try:
                for position in range(len(parsed)):
                    if position in cached.answers:
                        continue
                    await window.acquire()
                    if failures:
                        break
                    task = asyncio.create_task(answer(client, position))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                # The first request that fails for good stops the run, as an exception in GenInferencer does.
                await finished.wait()
            finally:
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                save_prefix(force=True)  # whatever is answered in order survives a failure
                cached.saved(saved)  # and every answer the model gave stays in the cache
        if failures:
            raise failures[0]


def use_continuous_pool(task_configs) -> None:
    """In OpenCompass task configs (as a partitioner returns them): every dataset whose inferencer is OpenCompass'
    GenInferencer gets ContinuousGenInferencer instead (a subclass: same settings, same output). A plain data edit;
    the class is named by its import path, which OpenCompass' registry resolves in the task's own process."""
    for task in task_configs:
        if isinstance(task, list):
            use_continuous_pool(task)
            continue
        for dataset_list in task.get("datasets", []):
            for dataset in dataset_list:
                if is_gen_inferencer(dataset):
                    dataset["infer_cfg"]["inferencer"]["type"] = CONTINUOUS_INFERENCER


def is_gen_inferencer(dataset) -> bool:
    """Whether a dataset config's inferencer is OpenCompass' GenInferencer (by class or registered name)."""
    inferencer = dataset.get("infer_cfg", {}).get("inferencer")
    if inferencer is None:
        return False
    kind = inferencer.get("type")
    name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__name__}"
    return kind is GenInferencer or name == "GenInferencer" or (
        name.startswith("opencompass.") and name.endswith(".GenInferencer"))
