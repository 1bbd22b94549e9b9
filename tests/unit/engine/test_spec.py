"""EvalSpec validation: valid specs load, every user mistake is one readable problem naming its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aieval_engine.spec import (
    BuiltinDatasetSpec,
    CustomDatasetSpec,
    EvalSpec,
    HuggingFaceModelSpec,
    OpenAIModelSpec,
    SpecError,
    load_spec,
    parse_spec,
)

ENDPOINT = {"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "smollm2"}
HF = {"kind": "huggingface", "name": "tiny", "path": "/models/tiny"}
CUSTOM = {"kind": "custom", "name": "my-qa", "path": "/data/qa.jsonl"}
BUILTIN = {"kind": "builtin", "config": "gsm8k_gen"}


def spec_data(models=None, datasets=None, **extra) -> dict:
    data = {"models": [ENDPOINT] if models is None else models, "datasets": [CUSTOM] if datasets is None else datasets}
    data.update(extra)
    return data


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.problems, "a SpecError must carry at least one problem"
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


# ---- valid specs -------------------------------------------------------------------------------


def test_parse_valid_spec_applies_defaults_and_normalises():
    spec = parse_spec(spec_data(models=[ENDPOINT, HF], datasets=[CUSTOM, {**BUILTIN, "config": "gsm8k_gen.py"}]))
    endpoint, hf = spec.models
    assert isinstance(endpoint, OpenAIModelSpec) and isinstance(hf, HuggingFaceModelSpec)
    assert endpoint.base_url == "http://127.0.0.1:8000/v1/"  # exactly one trailing slash
    assert (endpoint.concurrency, endpoint.temperature, endpoint.retries) == (None, 0.0, 2)  # None: adaptive
    assert (endpoint.max_concurrency, endpoint.query_per_second) == (256, None)
    assert (hf.mode, hf.dtype, hf.num_gpus) == ("chat", "float32", 0)
    custom, builtin = spec.datasets
    assert isinstance(custom, CustomDatasetSpec) and custom.scorer == "exact" and custom.infer_method == "gen"
    assert isinstance(builtin, BuiltinDatasetSpec) and builtin.config == "gsm8k_gen"  # '.py' dropped
    assert builtin.display_name == "gsm8k_gen"
    assert spec.name == "evaluation"
    assert spec.params.limit is None and spec.params.max_out_len is None and spec.params.workers == 1


def test_names_are_stripped_and_url_trailing_slashes_collapse():
    spec = parse_spec(spec_data(models=[{**ENDPOINT, "name": "  padded  ", "base_url": "https://h.example/v1///"}]))
    assert spec.models[0].name == "padded"
    assert spec.models[0].base_url == "https://h.example/v1/"


def test_unicode_and_punctuation_names_are_accepted_as_data():
    name = "模型 'quoted' \"double\" \\ {braces} ’"
    spec = parse_spec(spec_data(models=[{**ENDPOINT, "name": name}]))
    assert spec.models[0].name == name


def test_qualified_builtin_name_is_accepted():
    spec = parse_spec(spec_data(datasets=[{"kind": "builtin", "config": "gsm8k/gsm8k_gen"}]))
    assert spec.datasets[0].config == "gsm8k/gsm8k_gen"


def test_load_yaml_resolves_relative_paths_against_the_spec_file(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "spec.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "nightly",
                "models": [
                    {**HF, "path": "./models/tiny", "tokenizer_path": "../tok"},
                    # not ./ or ../ but still relative: resolved too (models are local folders, not hub ids)
                    {**HF, "name": "plain-relative", "path": "org/model", "tokenizer_path": "tok"},
                    {**HF, "name": "absolute", "path": "/abs/model"},
                ],
                "datasets": [
                    {**CUSTOM, "path": "data/qa.jsonl"},
                    {**CUSTOM, "name": "abs", "path": "/abs/qa.csv"},
                ],
                "params": {"limit": 5},
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working directory
    spec = load_spec(Path("specs/spec.yaml"))
    base = folder.resolve()
    assert spec.name == "nightly" and spec.params.limit == 5
    assert spec.models[0].path == str(base / "models/tiny")
    assert spec.models[0].tokenizer_path == str(base / "../tok")
    assert spec.models[1].path == str(base / "org/model")
    assert spec.models[1].tokenizer_path == str(base / "tok")
    assert spec.models[2].path == "/abs/model"
    assert spec.datasets[0].path == str(base / "data/qa.jsonl")
    assert spec.datasets[1].path == "/abs/qa.csv"


def test_load_json_spec(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_data(datasets=[{**CUSTOM, "path": "qa.csv"}])), encoding="utf-8")
    spec = load_spec(path)
    assert isinstance(spec.models[0], OpenAIModelSpec)
    assert spec.datasets[0].path == str(tmp_path.resolve() / "qa.csv")


def test_load_spec_unreadable_invalid_and_non_mapping_files(tmp_path):
    with pytest.raises(SpecError, match=r"cannot read .*missing\.yaml"):
        load_spec(tmp_path / "missing.yaml")

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.json is not valid JSON"):
        load_spec(bad_json)

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("models: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.yaml is not valid YAML"):
        load_spec(bad_yaml)

    a_list = tmp_path / "list.yaml"
    a_list.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SpecError, match="must contain a mapping with 'models' and 'datasets'"):
        load_spec(a_list)


def test_load_spec_reports_validation_problems_with_fields(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"models": [{**ENDPOINT, "base_url": "ftp://h/v1"}]}), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any(p.startswith("models.0.openai.base_url:") for p in info.value.problems)
    assert "datasets: Field required" in info.value.problems


# ---- user mistakes -----------------------------------------------------------------------------


def test_missing_models_and_datasets():
    assert problems_of({"datasets": [CUSTOM]}) == ["models: Field required"]
    assert problems_of({"models": [ENDPOINT]}) == ["datasets: Field required"]
    (problem,) = problems_of(spec_data(models=[]))
    assert problem.startswith("models:") and "at least 1" in problem
    (problem,) = problems_of(spec_data(datasets=[]))
    assert problem.startswith("datasets:") and "at least 1" in problem


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://h.example/v1", "must be an http:// or https:// URL with a host"),
        ("http:///v1", "must be an http:// or https:// URL with a host"),
        ("not a url", "must"),
        ("127.0.0.1:8000/v1", "must be an http:// or https:// URL with a host"),
        ("http://my host/v1", "must not contain spaces or control characters"),
        ("http://host/v 1", "must not contain spaces or control characters"),
        ("http://host/v1\nX-Injected: 1", "URL"),
        ("http://host/v1\x00", "URL"),
    ],
)
def test_bad_base_url(url, message):
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "base_url": url}]))
    assert problem.startswith("models.0.openai.base_url: ")
    assert message in problem


@pytest.mark.parametrize("name", ["1ABC", "MY-KEY", "KEY NAME", "", "$HOME", "A" * 129, "KEY\nX"])
def test_bad_env_var_name(name):
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "api_key_env": name}]))
    assert problem == "models.0.openai.api_key_env: must be an environment variable name such as OPENAI_API_KEY"


def test_good_env_var_names():
    for name in ("OPENAI_API_KEY", "_x", "k1", "A" * 128):
        assert parse_spec(spec_data(models=[{**ENDPOINT, "api_key_env": name}])).models[0].api_key_env == name


def test_unknown_kinds():
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "kind": "vllm"}]))
    assert problem.startswith("models.0:") and "'vllm'" in problem and "'openai', 'huggingface'" in problem
    (problem,) = problems_of(spec_data(datasets=[{**CUSTOM, "kind": "remote"}]))
    assert problem.startswith("datasets.0:") and "'remote'" in problem and "'builtin', 'custom'" in problem


def test_extra_fields_are_refused_everywhere():
    assert problems_of(spec_data(models=[{**ENDPOINT, "api_base": "x"}])) == [
        "models.0.openai.api_base: Extra inputs are not permitted"
    ]
    assert problems_of(spec_data(models=[{**HF, "device": "cuda"}])) == [
        "models.0.huggingface.device: Extra inputs are not permitted"
    ]
    assert problems_of(spec_data(datasets=[{**CUSTOM, "abbr": "x"}])) == [
        "datasets.0.custom.abbr: Extra inputs are not permitted"
    ]
    assert problems_of(spec_data(params={"limt": 3})) == ["params.limt: Extra inputs are not permitted"]
    assert problems_of(spec_data(runner="local")) == ["runner: Extra inputs are not permitted"]


def test_duplicate_names():
    problems = problems_of(
        spec_data(
            models=[ENDPOINT, {**HF, "name": ENDPOINT["name"]}],
            datasets=[CUSTOM, {**CUSTOM, "path": "/other.csv"}, BUILTIN, BUILTIN],
        )
    )
    text = "; ".join(problems)
    assert "models: the name 'endpoint' is used twice" in text
    assert "datasets: the name 'my-qa' is used twice" in text
    assert "datasets: the name 'gsm8k_gen' is used twice" in text


def test_names_that_differ_only_by_surrounding_space_are_duplicates():
    text = "; ".join(problems_of(spec_data(models=[ENDPOINT, {**ENDPOINT, "name": " endpoint "}])))
    assert "models: the name 'endpoint' is used twice" in text


@pytest.mark.parametrize("bad", ["two\nlines", "tab\there", "nul\x00", "bell\x07", "del\x7f", "c\rr"])
@pytest.mark.parametrize("where", ["model", "dataset", "spec"])
def test_control_characters_in_names(bad, where):
    if where == "model":
        data, field = spec_data(models=[{**ENDPOINT, "name": bad}]), "models.0.openai.name"
    elif where == "dataset":
        data, field = spec_data(datasets=[{**CUSTOM, "name": bad}]), "datasets.0.custom.name"
    else:
        data, field = spec_data(name=bad), "name"
    (problem,) = problems_of(data)
    assert problem == f"{field}: must not contain control characters such as newlines"


def test_blank_and_overlong_names():
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "name": "   "}]))
    assert problem.startswith("models.0.openai.name:")
    (problem,) = problems_of(spec_data(datasets=[{**CUSTOM, "name": "x" * 201}]))
    assert problem.startswith("datasets.0.custom.name:") and "200" in problem
    assert parse_spec(spec_data(datasets=[{**CUSTOM, "name": "x" * 200}])).datasets[0].name == "x" * 200


@pytest.mark.parametrize(
    "bad", ["next\x85line", "line\u2028separator", "para\u2029graph", "csi\x9b31m", "del\x7f", "c1\x80", "c1\x9f"]
)
def test_unicode_line_breaks_and_c1_controls_in_names(bad):
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "name": bad}]))
    assert problem.startswith("models.0.openai.name:")


def test_control_characters_in_paths_and_model_field():
    (problem,) = problems_of(spec_data(models=[{**HF, "path": "/m\n/x"}]))
    assert problem == "models.0.huggingface.path: must not contain control characters"
    (problem,) = problems_of(spec_data(models=[{**HF, "tokenizer_path": "/t\x1b[31m"}]))
    assert problem == "models.0.huggingface.tokenizer_path: must not contain control characters"
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "model": "gpt\r\nX: y"}]))
    assert problem == "models.0.openai.model: must not contain control characters"
    (problem,) = problems_of(spec_data(datasets=[{**CUSTOM, "path": "/d/a\n.jsonl"}]))
    assert problem == "datasets.0.custom.path: must not contain control characters"


@pytest.mark.parametrize("path", ["/d/qa.json", "/d/qa.txt", "/d/qa", "/d/qa.jsonl.gz", "/d/qa.parquet"])
def test_custom_dataset_extension(path):
    (problem,) = problems_of(spec_data(datasets=[{**CUSTOM, "path": path}]))
    assert problem == "datasets.0.custom.path: must be a .jsonl or .csv file"


def test_custom_dataset_extension_is_case_insensitive():
    assert parse_spec(spec_data(datasets=[{**CUSTOM, "path": "/d/QA.JSONL"}])).datasets[0].path == "/d/QA.JSONL"


@pytest.mark.parametrize(
    "config", ["gsm8k_gen; rm -rf /", "../gsm8k_gen", "gsm8k.gsm8k_gen", "a/b/c d", "gsm8k gen", "os.system", "/abs"]
)
def test_bad_builtin_config_names(config):
    (problem,) = problems_of(spec_data(datasets=[{"kind": "builtin", "config": config}]))
    assert problem.startswith("datasets.0.builtin.config: must be the name of an OpenCompass dataset config")


@pytest.mark.parametrize(
    "field, value, location, bound",
    [
        ("concurrency", 0, "models.0.openai.concurrency", "greater than or equal to 1"),
        ("concurrency", 4097, "models.0.openai.concurrency", "less than or equal to 4096"),
        ("max_concurrency", 0, "models.0.openai.max_concurrency", "greater than or equal to 1"),
        ("temperature", -0.1, "models.0.openai.temperature", "greater than or equal to 0"),
        ("temperature", 2.5, "models.0.openai.temperature", "less than or equal to 2"),
        ("timeout", 0, "models.0.openai.timeout", "greater than or equal to 1"),
        ("retries", 11, "models.0.openai.retries", "less than or equal to 10"),
        ("max_seq_len", 8, "models.0.openai.max_seq_len", "greater than or equal to 16"),
        ("max_out_len", 0, "models.0.openai.max_out_len", "greater than or equal to 1"),
        ("query_per_second", 1001, "models.0.openai.query_per_second", "less than or equal to 1000"),
    ],
)
def test_out_of_range_model_params(field, value, location, bound):
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, field: value}]))
    assert problem.startswith(location + ":") and bound in problem


@pytest.mark.parametrize(
    "params, location, bound",
    [
        ({"limit": 0}, "params.limit", "greater than or equal to 1"),
        ({"limit": -5}, "params.limit", "greater than or equal to 1"),
        ({"max_out_len": 40000}, "params.max_out_len", "less than or equal to 32768"),
        ({"seed": -1}, "params.seed", "greater than or equal to 0"),
        ({"workers": 0}, "params.workers", "greater than or equal to 1"),
        ({"workers": 65}, "params.workers", "less than or equal to 64"),
        ({"timeout_s": 0}, "params.timeout_s", "greater than 0"),
        ({"limit": "ten"}, "params.limit", "integer"),
    ],
)
def test_out_of_range_run_params(params, location, bound):
    (problem,) = problems_of(spec_data(params=params))
    assert problem.startswith(location + ":") and bound in problem


def test_hf_enums_and_ranges():
    problems = problems_of(spec_data(models=[{**HF, "dtype": "int4", "mode": "instruct", "batch_size": 0, "num_gpus": 65}]))
    fields = sorted(p.split(":")[0] for p in problems)
    assert fields == [
        "models.0.huggingface.batch_size",
        "models.0.huggingface.dtype",
        "models.0.huggingface.mode",
        "models.0.huggingface.num_gpus",
    ]


def test_custom_dataset_enums():
    problems = problems_of(spec_data(datasets=[{**CUSTOM, "data_type": "cloze", "infer_method": "ll", "scorer": "regex"}]))
    assert sorted(p.split(":")[0] for p in problems) == [
        "datasets.0.custom.data_type",
        "datasets.0.custom.infer_method",
        "datasets.0.custom.scorer",
    ]


def test_several_problems_are_all_reported():
    problems = problems_of(
        spec_data(models=[{**ENDPOINT, "base_url": "ftp://x", "api_key_env": "9"}], datasets=[{**CUSTOM, "path": "x.txt"}])
    )
    assert {p.split(":")[0] for p in problems} == {
        "models.0.openai.base_url",
        "models.0.openai.api_key_env",
        "datasets.0.custom.path",
    }


# ---- secrets -----------------------------------------------------------------------------------


SECRET = "sk-test-DO-NOT-LEAK-4242"


def test_api_key_never_appears_in_dumps():
    spec = parse_spec(spec_data(models=[{**ENDPOINT, "api_key": SECRET}]))
    assert spec.models[0].resolved_api_key({}) == SECRET
    public = spec.public_dict()
    assert "api_key" not in public["models"][0]
    assert SECRET not in json.dumps(public)
    assert SECRET not in spec.model_dump_json()
    assert SECRET not in repr(spec) and SECRET not in str(spec)
    assert SECRET not in json.dumps(spec.model_dump(mode="json"))
    # a public dump is itself a valid spec (without the key)
    again = EvalSpec.model_validate(public)
    assert again.models[0].api_key is None and again.models[0].name == "endpoint"


def test_resolved_api_key_prefers_memory_then_env():
    with_env = OpenAIModelSpec(**{**ENDPOINT, "api_key_env": "MY_KEY"})
    assert with_env.resolved_api_key({"MY_KEY": "from-env"}) == "from-env"
    assert with_env.resolved_api_key({}) is None
    both = OpenAIModelSpec(**{**ENDPOINT, "api_key_env": "MY_KEY", "api_key": "mem"})
    assert both.resolved_api_key({"MY_KEY": "from-env"}) == "mem"
    assert OpenAIModelSpec(**ENDPOINT).resolved_api_key({"OPENAI_API_KEY": "x"}) is None


def test_base_url_query_string_is_refused_or_kept_intact():
    import httpx

    try:
        spec = parse_spec(spec_data(models=[{**ENDPOINT, "base_url": "https://h.example/v1?api-version=2024-06-01"}]))
    except SpecError as exc:
        assert exc.problems[0].startswith("models.0.openai.base_url:")
        return
    assert httpx.URL(spec.models[0].base_url).params["api-version"] == "2024-06-01"


@pytest.mark.parametrize(
    "url", ["https://h.example/v1?api-version=2024-06-01", "https://h.example/v1#frag", "https://h.example/v1?", "https://h.example/v1#"]
)
def test_base_url_query_or_fragment_is_refused_with_a_message(url):
    # appending '/' would otherwise turn ?api-version=2024-06-01 into ?api-version=2024-06-01/
    (problem,) = problems_of(spec_data(models=[{**ENDPOINT, "base_url": url}]))
    assert problem.startswith("models.0.openai.base_url:") and "?query or #fragment" in problem
    assert parse_spec(spec_data(models=[{**ENDPOINT, "base_url": "https://h.example/v1"}])).models[0].base_url == (
        "https://h.example/v1/"
    )
