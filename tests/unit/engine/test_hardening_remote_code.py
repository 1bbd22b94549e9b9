"""Issue 8, finding 2 (engine side): a checkpoint folder's own Python code never runs unless the spec asks for it.

OpenCompass' HuggingFacewithChatTemplate/HuggingFaceBaseModel default to trust_remote_code=True for the model and
the tokenizer, so the generated config must say False. Checked the way OpenCompass itself builds a model from a
config (mmengine's Config.fromfile, then opencompass.utils.build.build_model_from_cfg), on a planted checkpoint
whose code writes a marker file when imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from planted_checkpoint import plant_checkpoint

from aieval_engine.config_builder import build_config
from aieval_engine.spec import parse_spec

# What an OpenCompass task does with the config's model entry, for each config path given.
_BUILD_LIKE_OPENCOMPASS = """
import json, sys
from mmengine.config import Config
from opencompass.utils.build import build_model_from_cfg
outcomes = {}
for path in sys.argv[1:]:
    config = Config.fromfile(path, format_python_code=False)
    try:
        build_model_from_cfg(config["models"][0])
        outcomes[path] = "loaded"
    except Exception as exc:
        outcomes[path] = f"{type(exc).__name__}: {exc}"[:400]
print(json.dumps(outcomes))
"""


def _config_for(tmp_path: Path, qa_file: Path, name: str, **model) -> tuple[Path, Path]:
    marker = tmp_path / f"{name}.marker"
    checkpoint = plant_checkpoint(tmp_path / "models" / name, marker)
    spec = parse_spec({"models": [{"kind": "huggingface", "name": name, "path": str(checkpoint), **model}],
                       "datasets": [{"kind": "custom", "name": "qa", "path": str(qa_file)}]})
    return build_config(spec, tmp_path / f"job-{name}").path, marker


def test_generated_config_turns_remote_code_off_unless_the_spec_asks(tmp_path, qa_file):
    default_config, default_marker = _config_for(tmp_path, qa_file, "planted_default")
    asked_config, asked_marker = _config_for(tmp_path, qa_file, "planted_asked", trust_remote_code=True)
    assert "'trust_remote_code': False" in default_config.read_text()

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", _BUILD_LIKE_OPENCOMPASS, str(default_config), str(asked_config)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])

    # Off by default: transformers refuses the folder's code, nothing of it ran.
    assert "contains custom code which must be executed" in outcomes[str(default_config)], outcomes
    assert not default_marker.exists()
    # The same load with remote code turned on does run it: the marker is a working detector.
    assert asked_marker.exists(), outcomes
