"""A built-in benchmark run through the API with no generation settings reproduces the `opencompass` CLI on the
stock config: same predictions, same score.

gsm8k_gen sets 512 output tokens itself. The tiny random model talks until it is stopped, so a run that caps the
length anywhere below 512 (the API's old default of 256, the wizard's old 64) gives other predictions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from server_it_helpers import PYTHON, embedded_stack, start_embedded

pytestmark = [pytest.mark.slow, pytest.mark.gsm8k]
OPENCOMPASS = str(Path(PYTHON).parent / "opencompass")
LIMIT = 4

# The stock gsm8k config, the same slice, and a model written as a person would for this checkpoint. Its
# max_out_len of 1024 is there on purpose: a config's own setting wins over a model's, in the CLI as on the platform.
CLI_CONFIG = """\
from mmengine.config import read_base

with read_base():
    from opencompass.configs.datasets.gsm8k.gsm8k_gen import gsm8k_datasets

from opencompass.models import HuggingFacewithChatTemplate

datasets = gsm8k_datasets
for dataset in datasets:
    dataset['reader_cfg']['test_range'] = '[0:{limit}]'

models = [dict(
    type=HuggingFacewithChatTemplate, abbr='tiny', path={path!r}, tokenizer_path={path!r},
    model_kwargs=dict(torch_dtype='torch.float32', trust_remote_code=False, device_map='cpu'),
    tokenizer_kwargs=dict(trust_remote_code=False), generation_kwargs=dict(do_sample=False),
    max_seq_len=2048, max_out_len=1024, batch_size=8, run_cfg=dict(num_gpus=0),
)]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models, shared_gsm8k):
    data_dir = tmp_path_factory.mktemp("fidelity-data")
    # The server reads built-in data from <data dir>/compass/data/<name>, as OpenCompass does from COMPASS_DATA_CACHE.
    (data_dir / "compass" / "data").mkdir(parents=True)
    (data_dir / "compass" / "data" / "gsm8k").symlink_to(shared_gsm8k, target_is_directory=True)
    stack = embedded_stack(data_dir, tmp_path_factory.mktemp("fidelity-logs"))
    stack.env.pop("COMPASS_DATA_CACHE", None)
    stack.tiny = shutil.copytree(tiny_models[0], data_dir / "models" / "tiny")
    start_embedded(stack)
    try:
        yield stack
    finally:
        stack.stop()


def run_cli(stack, tmp_path: Path) -> Path:
    config = tmp_path / "gsm8k_stock.py"
    config.write_text(CLI_CONFIG.format(limit=LIMIT, path=str(stack.tiny)), encoding="utf-8")
    work_dir = tmp_path / "cli"
    completed = subprocess.run(
        [OPENCOMPASS, str(config), "--debug", "-w", str(work_dir)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "COMPASS_DATA_CACHE": str(stack.data_dir / "compass")})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = [p for p in work_dir.iterdir() if p.is_dir()]
    return run_dir


def predictions(stack, evaluation_id: int) -> list[str]:
    samples = stack.client.get(f"/evaluations/{evaluation_id}/samples", params={"page_size": 50}).json()["items"]
    return [s["prediction"] for s in sorted(samples, key=lambda s: s["index"])]


def test_a_builtin_run_without_settings_equals_the_opencompass_cli_on_the_stock_config(stack, tmp_path):
    client = stack.client
    own = client.get("/datasets/builtin/gsm8k_gen/settings").json()
    assert own["max_out_len"] == [512] and not own["model_decides"]

    model = client.post("/models", json={"name": "tiny", "kind": "huggingface", "path": str(stack.tiny)})
    assert model.status_code == 201, model.text
    body = {"model_ids": [model.json()["id"]], "builtin_datasets": ["gsm8k_gen"]}
    as_shipped = stack.submit({**body, "name": "gsm8k as shipped", "params": {"limit": LIMIT}})
    # A deliberate override, as the API's old default forced on every run: the comparison must tell it apart.
    capped = stack.submit({**body, "name": "gsm8k capped", "params": {"limit": LIMIT, "max_out_len": 256}})
    detail = stack.finished(as_shipped, timeout=300)
    assert detail["status"] == "succeeded", detail
    assert "max_out_len" not in detail["params"]
    ours = predictions(stack, as_shipped)
    (score,) = [s for s in detail["scores"] if s["metric"] == "accuracy"]
    capped_detail = stack.finished(capped, timeout=300)
    assert capped_detail["status"] == "succeeded" and capped_detail["params"]["max_out_len"] == 256

    cli_run = run_cli(stack, tmp_path)
    cli_predictions = json.loads((cli_run / "predictions" / "tiny" / "gsm8k.json").read_text(encoding="utf-8"))
    theirs = [cli_predictions[str(i)]["prediction"] for i in range(len(cli_predictions))]
    cli_accuracy = json.loads((cli_run / "results" / "tiny" / "gsm8k.json").read_text(encoding="utf-8"))["accuracy"]

    assert len(ours) == len(theirs) == LIMIT
    assert ours == theirs
    assert score["value"] == pytest.approx(cli_accuracy) and score["n"] == LIMIT
    # The override is applied: every answer is cut shorter than the CLI's, so equality above is not luck.
    assert all(len(cut) < len(full) for cut, full in zip(predictions(stack, capped), theirs, strict=True))
