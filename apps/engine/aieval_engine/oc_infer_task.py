"""`PooledInferTask`: OpenCompass' OpenICLInferTask, with the (model, dataset) pairs of a pooled task inferred at once.

OpenICLInferTask infers its pairs one after another: each pair's request pool (oc_pool.ContinuousGenInferencer)
drains, its last answers trickle in while the server idles, and only then does the next pair start. Endpoint models
are bound by their server, not by this process, so the pairs of a job have no reason to wait for each other: this
task infers them at once, each from a thread of its own, and every pair's requests go through the process' one
request loop (oc_pool.request_loop), where one limiter per model server (concurrency.shared_limiter) and one request
rate per model bound what all pairs send together.

Which tasks are pooled is decided by the infer partitioner (oc_ext.QuickNumWorkerPartitioner): it puts every pair
of a model on the request pool into one task marked `POOLED_TASK` (one process for the job's endpoint pairs rather
than one per bucket, each importing OpenCompass). Any other task (local Hugging Face models, Dify apps, other
inferencers) runs OpenICLInferTask's own loop and command, unchanged.

Each pair gets its own copy of the task's per-pair state (OpenICLInferTask keeps it on `self`) and its own copy of
the dataset config (`_inference` writes the model and default settings into the inferencer config), then runs
OpenICLInferTask._inference itself: same dataset, retriever, prompts and inferencer, same per-pair predictions and
`tmp_<ds>.jsonl` files, so resuming and progress work as before.
"""

from __future__ import annotations

import argparse
import copy
import os.path as osp
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mmengine.config import Config
from opencompass.registry import TASKS
from opencompass.tasks import OpenICLInferTask
from opencompass.utils import (
    build_dataset_from_cfg,
    build_model_from_cfg,
    get_infer_output_path,
    get_logger,
    model_abbr_from_cfg,
    task_abbr_from_cfg,
)

# The task config key the partitioner sets on the task of pooled pairs.
POOLED_TASK = "aieval_pooled_pairs"
# Pairs being inferred at once: their pending prompts keep even the adaptive limiter's ceiling
# (concurrency.DEFAULT_CEILING) busy unless pairs are tiny; bounded because each running pair holds its dataset,
# prompts and pending requests in memory.
PAIRS_AT_ONCE = 32
_MODULE = "aieval_engine.oc_infer_task"  # this module, also when it runs as __main__


@TASKS.register_module()
class PooledInferTask(OpenICLInferTask):

    def get_command(self, cfg_path, template):
        if not self.cfg.get(POOLED_TASK):
            return super().get_command(cfg_path, template)
        # LocalRunner's debug mode runs a command that starts with a Python interpreter in its own process instead.
        return template.format(task_cmd=f"{sys.executable} -m {_MODULE} {cfg_path}")

    def run(self, cur_model=None, cur_model_abbr=None):
        if not self.cfg.get(POOLED_TASK):
            return super().run(cur_model=cur_model, cur_model_abbr=cur_model_abbr)
        self.logger.info(f"Task {task_abbr_from_cfg(self.cfg)}")
        pairs = []
        for model_cfg, dataset_cfgs in zip(self.model_cfgs, self.dataset_cfgs, strict=True):
            if cur_model is not None and cur_model_abbr == model_abbr_from_cfg(model_cfg):
                model = cur_model
            else:
                model = build_model_from_cfg(model_cfg)
            # What LocalRunner's debug mode keeps for the next task (OpenICLInferTask leaves its last model here).
            self.model, self.model_cfg = model, model_cfg
            for dataset_cfg in dataset_cfgs:
                if not osp.exists(get_infer_output_path(model_cfg, dataset_cfg, osp.join(self.work_dir,
                                                                                         "predictions"))):
                    pairs.append(self._pair(model, model_cfg, dataset_cfg))
        self.logger.info(f"Inferring {len(pairs)} (model, dataset) pairs at once (at most {PAIRS_AT_ONCE})")
        with ThreadPoolExecutor(max_workers=max(1, min(PAIRS_AT_ONCE, len(pairs))),
                                thread_name_prefix="pair") as executor:
            futures = [executor.submit(pair._infer_pair) for pair in pairs]
        failed = [(pair, future.exception()) for pair, future in zip(pairs, futures, strict=True)
                  if future.exception() is not None]
        # Pairs that can finish do (their predictions are kept for a resume); the task then fails as
        # OpenICLInferTask does on a failing pair, with the first failure (raised last: the run's cause).
        for pair, error in failed[1:]:
            self.logger.error(f"Inference of {task_abbr_from_cfg(pair.sub_cfg)} also failed: {error!r}",
                              exc_info=(type(error), error, error.__traceback__))
        if failed:
            pair, error = failed[0]
            self.logger.error(f"Inference of {task_abbr_from_cfg(pair.sub_cfg)} failed")
            raise error

    def _pair(self, model, model_cfg, dataset_cfg) -> PooledInferTask:
        """A copy of this task holding one pair's state, as OpenICLInferTask.run sets it before `_inference`."""
        pair = copy.copy(self)
        pair.model, pair.model_cfg = model, model_cfg
        pair.max_out_len = model_cfg.get("max_out_len", None)
        pair.batch_size = model_cfg.get("batch_size", None)
        pair.min_out_len = model_cfg.get("min_out_len", None)
        pair.dataset_cfg = copy.deepcopy(dataset_cfg)
        pair.infer_cfg = pair.dataset_cfg["infer_cfg"]
        pair.sub_cfg = {"models": [model_cfg], "datasets": [[pair.dataset_cfg]]}
        return pair

    def _infer_pair(self) -> None:
        self.dataset = build_dataset_from_cfg(self.dataset_cfg)
        self._inference()


def main() -> None:
    """What OpenCompass' openicl_infer.py does as a script, for a pooled task LocalRunner starts in a process."""
    parser = argparse.ArgumentParser(description="Infer a pooled task's (model, dataset) pairs at once")
    parser.add_argument("config", help="Config file path")
    args = parser.parse_args()
    started = time.time()
    PooledInferTask(Config.fromfile(args.config)).run()
    get_logger().info(f"time elapsed: {time.time() - started:.2f}s")


if __name__ == "__main__":
    main()
