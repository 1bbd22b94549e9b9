"""Generation settings: unset means "each dataset's own settings", as the `opencompass` CLI runs a stock config.

The built configs are loaded with mmengine exactly as OpenCompass loads them, and each inferencer's output length is
completed by OpenCompass' own rule (OpenICLInferTask fills a missing inferencer key from the model's config), so
what is checked is what a run generates, not the text of the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from aieval_engine.catalogue import resolve_builtin
from aieval_engine.config_builder import _inferencers_in, build_config, builtin_generation_settings
from aieval_engine.spec import DEFAULT_MAX_OUT_LEN, parse_spec

# Built-in configs with different habits: gsm8k sets 512, triviaqa 50, bbh (27 parts) none (the model decides),
# a 4-shot MATH config 2048 and two stop words; bbh_gen_98fba6 (same abbrs as bbh_gen) 512 and a stop word.
BUILTINS = {"gsm8k_gen": [512], "triviaqa_gen": [50], "bbh_gen": [], "math_4shot_base_gen_43d5b6": [2048]}
READ_CHECKED = {**BUILTINS, "bbh_gen_98fba6": [512]}
MODELS = [
    {"kind": "huggingface", "name": "hf", "path": "/models/tiny"},
    {"kind": "huggingface", "name": "own", "path": "/models/tiny", "max_out_len": 7},
    {"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "m"},
]


@pytest.fixture(scope="module")
def opencompass_rules():
    """mmengine's loader and OpenCompass' own default-filling rule (imports OpenCompass once for the module)."""
    from mmengine.config import Config
    from opencompass.tasks.openicl_infer import OpenICLInferTask

    def effective(config_path: Path) -> dict[str, dict[str, list]]:
        """{model abbr: {dataset abbr: [max_out_len, stopping_criteria]}} as OpenICLInferTask builds inferencers."""
        from opencompass.datasets.custom import make_custom_dataset_config

        cfg = Config.fromfile(str(config_path), format_python_code=False)
        out: dict[str, dict[str, list]] = {}
        for model in cfg.models:
            per_dataset = out.setdefault(model["abbr"], {})
            for dataset in cfg.gen_datasets:
                dataset = copy.deepcopy(dataset)
                if "infer_cfg" not in dataset:
                    dataset = make_custom_dataset_config(dataset)  # what OpenCompass does with a custom file
                inferencer = dict(dataset["infer_cfg"]["inferencer"])
                OpenICLInferTask._set_default_value(None, inferencer, "max_out_len", model.get("max_out_len"))
                per_dataset[dataset["abbr"]] = [inferencer["max_out_len"], list(inferencer.get("stopping_criteria", []))]
        return out

    return effective


def spec_with(tmp_path: Path, **params):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(3)))
    datasets = [{"kind": "builtin", "config": name} for name in BUILTINS]
    datasets.append({"kind": "custom", "name": "own-qa", "path": str(qa)})
    return parse_spec({"models": MODELS, "datasets": datasets, "params": params})


def test_unset_keeps_every_builtin_configs_own_settings_whatever_the_models_say(tmp_path, opencompass_rules):
    built = build_config(spec_with(tmp_path, limit=3), tmp_path / "job")
    assert "['max_out_len'] =" not in built.text  # nothing is written over the configs
    effective = opencompass_rules(built.path)
    assert list(effective) == ["hf", "own", "endpoint"]
    for model, own_default in (("hf", DEFAULT_MAX_OUT_LEN), ("own", 7), ("endpoint", DEFAULT_MAX_OUT_LEN)):
        lengths = effective[model]
        # A config's own length wins over the model's (its max_out_len of 7 included).
        assert lengths["gsm8k"] == [512, []]
        assert lengths["triviaqa"] == [50, []]
        assert lengths["math"] == [2048, ["Problem", "问题:"]]
        # bbh_gen sets no length: there, and only there, the model's max_out_len applies.
        bbh = [abbr for abbr in lengths if abbr.startswith("bbh-")]  # its abbrs are computed in a loop
        assert len(bbh) == 27 and {lengths[a][0] for a in bbh} == {own_default}
        assert lengths["own-qa"][0] == own_default


def test_an_explicit_max_out_len_overrides_every_builtin_config(tmp_path, opencompass_rules):
    built = build_config(spec_with(tmp_path, limit=3, max_out_len=40), tmp_path / "job")
    effective = opencompass_rules(built.path)
    for model in ("hf", "own", "endpoint"):
        lengths = effective[model]
        builtin_values = {length for abbr, (length, _) in lengths.items() if abbr != "own-qa"}
        assert builtin_values == {40}, model
        assert lengths["math"][1] == ["Problem", "问题:"]  # only the length is overridden, not the stop words
    # A custom file sets no length: its model's own setting, else the override, applies (as before).
    assert [effective[m]["own-qa"][0] for m in ("hf", "own", "endpoint")] == [40, 7, 40]


def test_the_settings_read_from_source_are_what_opencompass_loads(tmp_path, opencompass_rules):
    """What GET /datasets/builtin/{config}/settings shows (read with ast, never executed) equals what mmengine and
    OpenCompass build from the same config, for configs that set a length, set none, and set stop words."""
    for name, expected in READ_CHECKED.items():
        settings = builtin_generation_settings(resolve_builtin(name))
        assert settings.readable and settings.generates
        assert settings.max_out_len == expected, name
        spec = parse_spec({"models": [MODELS[1]], "datasets": [{"kind": "builtin", "config": name}]})
        loaded = opencompass_rules(build_config(spec, tmp_path / name).path)["own"]
        lengths = {length for length, _ in loaded.values()}
        assert lengths == (set(expected) | ({7} if settings.model_decides else set())), name
        assert settings.model_decides == (7 in lengths)
        assert settings.stopping_criteria == list(dict.fromkeys(w for _, stops in loaded.values() for w in stops))
    ppl = builtin_generation_settings(resolve_builtin("mmlu_ppl"))
    assert not ppl.generates and ppl.max_out_len == [] and not ppl.model_decides


def test_reading_settings_never_executes_the_config(tmp_path):
    planted = tmp_path / "pwned"
    config = tmp_path / "hostile_gen.py"
    config.write_text(
        "import os\n"
        f"os.system('touch {planted}')\n"
        f"__import__('os').system('touch {planted}')\n"
        "LENGTH = 300\n"
        "a = dict(inferencer=dict(type=GenInferencer, max_out_len=LENGTH, stopping_criteria=['Q:']))\n"
        f"b = dict(inferencer=dict(type=GenInferencer, max_out_len=len(open('{planted}', 'w').name)))\n"
        "c = dict(inferencer=dict(type=PPLInferencer))\n",
        encoding="utf-8",
    )
    found = _inferencers_in(config)
    assert not planted.exists()
    assert [(i.inferencer, i.max_out_len, i.stopping_criteria, i.readable) for i in found] == [
        ("GenInferencer", 300, ("Q:",), True),
        ("GenInferencer", None, (), False),  # computed: shown as unknown, never run
        ("PPLInferencer", None, (), True),
    ]
