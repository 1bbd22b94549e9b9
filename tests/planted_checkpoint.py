"""A "checkpoint" folder as an attacker would plant it: config.json points transformers at the folder's own
Python file (auto_map), and that file writes a marker file the moment it is imported. If the marker exists,
code from the folder ran. Shared by the engine's and the server's remote-code tests."""

from __future__ import annotations

import json
from pathlib import Path

_CODE = '''\
from pathlib import Path

Path({marker!r}).write_text("code from the checkpoint folder ran")

from transformers import LlamaConfig, LlamaForCausalLM


class PlantedConfig(LlamaConfig):
    model_type = "planted"


class PlantedModel(LlamaForCausalLM):
    config_class = PlantedConfig
'''


def plant_checkpoint(folder: Path, marker: Path) -> Path:
    """Write the planted checkpoint into `folder`; importing its code creates `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    # A model type transformers does not know: only the folder's own code could load it.
    config = {
        "model_type": "planted",
        "architectures": ["PlantedModel"],
        "auto_map": {"AutoConfig": "planted.PlantedConfig", "AutoModelForCausalLM": "planted.PlantedModel"},
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "planted.py").write_text(_CODE.format(marker=str(marker)), encoding="utf-8")
    return folder
