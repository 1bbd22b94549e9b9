"""One OpenCompass inference of a custom QA dataset against an OpenAI-compatible endpoint, built the way
OpenICLInferTask builds it (dataset, retriever and prompt template from OpenCompass' own custom-dataset config), with
the inferencer class to compare: OpenCompass' GenInferencer or the continuous pool (oc_pool.ContinuousGenInferencer).
Importable by the tests, and runnable as a script so a test can kill it mid-run:

    python tests/pool_inference.py <data.jsonl> <base_url> <out_dir> <concurrency> <continuous|stock>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

API_META_TEMPLATE = {"round": [{"role": "HUMAN", "api_role": "HUMAN"},
                               {"role": "BOT", "api_role": "BOT", "generate": True}]}
PREDICTIONS = "questions.json"


def write_questions(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": f"Question {i}: what is {i} plus {i}? é中文",
                                        "answer": str(2 * i)}) + "\n" for i in range(count)), encoding="utf-8")
    return path


def model_for(url: str, concurrency: int, **settings):
    from aieval_engine.oc_ext import SecretKeyOpenAISDK

    return SecretKeyOpenAISDK(path="pool-test-model", openai_api_base=url, meta_template=API_META_TEMPLATE,
                              max_workers=concurrency, query_per_second=settings.pop("query_per_second", 1000),
                              retry=settings.pop("retry", 2), **settings)


def infer(data: Path, model, out_dir: Path, concurrency: int, kind: str = "continuous") -> list[str]:
    from opencompass.datasets.custom import make_custom_dataset_config
    from opencompass.openicl.icl_inferencer import GenInferencer
    from opencompass.registry import ICL_PROMPT_TEMPLATES, ICL_RETRIEVERS
    from opencompass.utils import build_dataset_from_cfg

    from aieval_engine.oc_pool import ContinuousGenInferencer

    cfg = make_custom_dataset_config({"path": str(data), "abbr": "questions", "data_type": "qa",
                                      "infer_method": "gen"})
    dataset = build_dataset_from_cfg(cfg)
    infer_cfg = cfg["infer_cfg"]
    retriever = ICL_RETRIEVERS.build({**infer_cfg["retriever"], "dataset": dataset})
    prompt_template = ICL_PROMPT_TEMPLATES.build(infer_cfg["prompt_template"])
    inferencer_class = ContinuousGenInferencer if kind == "continuous" else GenInferencer
    inferencer = inferencer_class(model=model, max_out_len=32, batch_size=concurrency,
                                  output_json_filepath=str(out_dir), output_json_filename=PREDICTIONS)
    return inferencer.inference(retriever, prompt_template=prompt_template)


if __name__ == "__main__":
    data, url, out, concurrency, kind = sys.argv[1:6]
    infer(Path(data), model_for(url, int(concurrency)), Path(out), int(concurrency), kind)
