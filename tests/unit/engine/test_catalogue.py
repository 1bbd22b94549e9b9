"""catalogue: OpenCompass' shipped dataset configs, read as source (no OpenCompass import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aieval_engine.catalogue import (
    UnknownDatasetError,
    data_hint,
    list_builtin_names,
    local_data_path,
    missing_data,
    opencompass_root,
    resolve_builtin,
)
from aieval_engine.spec import BuiltinDatasetSpec


def test_gsm8k_gen_resolves_statically():
    dataset = resolve_builtin("gsm8k_gen")
    assert dataset.name == "gsm8k_gen"
    assert dataset.folder == "gsm8k"
    assert dataset.qualified_name == "gsm8k/gsm8k_gen"
    assert dataset.module == "opencompass.configs.datasets.gsm8k.gsm8k_gen"
    assert dataset.file == opencompass_root() / "configs" / "datasets" / "gsm8k" / "gsm8k_gen.py"
    assert dataset.dataset_vars == ("gsm8k_datasets",)
    # the path comes from the config it imports (gsm8k_gen -> gsm8k_gen_<hash>)
    assert dataset.data_paths == ("opencompass/gsm8k",)
    assert [local_data_path(p) for p in dataset.data_paths] == ["data/gsm8k"]
    assert resolve_builtin("gsm8k/gsm8k_gen") == dataset


def test_resolving_a_builtin_imports_nothing_of_opencompass():
    # In a fresh interpreter: this test process may have imported OpenCompass for other tests.
    code = ("import sys; from aieval_engine.catalogue import resolve_builtin; resolve_builtin('gsm8k_gen'); "
            "print(sorted(m for m in sys.modules if m.startswith('opencompass.') and m != 'opencompass.configs'))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "opencompass.datasets" not in imported and "opencompass.models" not in imported, imported


def test_local_data_path():
    assert local_data_path("opencompass/gsm8k") == "data/gsm8k"
    assert local_data_path("/abs/data") is None
    assert local_data_path("./data/x/../y") == "data/y"  # unmapped paths are used as written, normalised


def test_unknown_name_gives_guidance():
    with pytest.raises(UnknownDatasetError) as info:
        resolve_builtin("no_such_dataset_gen")
    assert str(info.value) == (
        "no OpenCompass dataset config is named 'no_such_dataset_gen'; "
        "see `aieval datasets` for the names this installation ships"
    )
    with pytest.raises(UnknownDatasetError, match="no OpenCompass dataset config is named 'math/gsm8k_gen'"):
        resolve_builtin("math/gsm8k_gen")  # exists, but not in that folder


def test_ambiguous_name_lists_the_qualified_options():
    with pytest.raises(UnknownDatasetError) as info:
        resolve_builtin("flores_gen")
    assert str(info.value) == "'flores_gen' is ambiguous; use one of: PMMEval/flores_gen, flores/flores_gen"
    # a qualified name picks one
    assert resolve_builtin("flores/flores_gen").folder == "flores"
    assert resolve_builtin("PMMEval/flores_gen").module == "opencompass.configs.datasets.PMMEval.flores_gen"
    assert BuiltinDatasetSpec(config="PMMEval/flores_gen").config == "PMMEval/flores_gen"


def _ambiguous_options(name: str) -> list[str]:
    with pytest.raises(UnknownDatasetError) as info:
        resolve_builtin(name)
    message = str(info.value)
    assert message.startswith(f"{name!r} is ambiguous; use one of: ")
    return message.split("use one of: ")[1].split(", ")


def test_nested_qualified_names_resolve():
    options = _ambiguous_options("compassbench_v1_1_math_gen_1dc21d")
    assert options == [
        "compassbench_20_v1_1/math/compassbench_v1_1_math_gen_1dc21d",
        "compassbench_20_v1_1_public/math/compassbench_v1_1_math_gen_1dc21d",
    ]
    for option in options:
        assert resolve_builtin(option).qualified_name == option
    # the last folder alone does not tell them apart
    with pytest.raises(UnknownDatasetError, match="is ambiguous"):
        resolve_builtin("math/compassbench_v1_1_math_gen_1dc21d")


def test_every_suggested_option_is_accepted_by_the_spec():
    # the ambiguity message suggests nested names such as 'compassbench_20_v1_1/math/...'
    options = _ambiguous_options("compassbench_v1_1_math_gen_1dc21d")
    assert any(option.count("/") >= 2 for option in options)
    for option in options:
        assert BuiltinDatasetSpec(config=option).config == option


def test_config_without_dataset_list_is_refused():
    with pytest.raises(UnknownDatasetError) as info:
        resolve_builtin("MathBench/mathbench_prompt")  # a prompt module, not a dataset config
    assert str(info.value) == "the config 'MathBench/mathbench_prompt' defines no '*_datasets' list to evaluate"


def test_list_builtin_names_is_sorted_and_complete():
    names = list_builtin_names()
    assert names == sorted(names)
    assert "gsm8k_gen" in names and "mathbench_prompt" in names
    assert len(names) == len(set(names)) > 500
    assert "__init__" not in names


def test_missing_data_when_absent_and_present(tmp_path):
    dataset = resolve_builtin("gsm8k_gen")
    assert missing_data(dataset, tmp_path) == [tmp_path / "data" / "gsm8k"]
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    assert missing_data(dataset, tmp_path) == [tmp_path / "data" / "gsm8k"]  # an empty folder is not data
    (tmp_path / "data" / "gsm8k" / "test.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    assert missing_data(dataset, tmp_path) == []


def test_data_hint_names_the_path_and_the_cache(tmp_path):
    dataset = resolve_builtin("gsm8k_gen")
    hint = data_hint(dataset, missing_data(dataset, tmp_path), tmp_path)
    assert "'gsm8k_gen'" in hint
    assert f"missing {tmp_path / 'data' / 'gsm8k'}" in hint
    assert f"COMPASS_DATA_CACHE={tmp_path}/data/" in hint
    assert "gsm8k.zip" in hint and "aieval datasets fetch gsm8k" in hint  # what to import or run


def test_builtin_abbrs_are_the_constant_abbr_values():
    assert resolve_builtin("gsm8k_gen").abbrs == ("gsm8k",)
