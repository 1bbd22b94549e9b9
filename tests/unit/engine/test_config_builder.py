"""config_builder: the generated config is Python that OpenCompass executes, so user text must only ever be
inert data in it. Hostile names and paths are pushed through the real builder and the output is checked
with `ast` and `tokenize`, and once through mmengine exactly as OpenCompass loads it."""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import math
import re
import tokenize
from pathlib import Path

import pytest

from aieval_engine.catalogue import resolve_builtin
from aieval_engine.config_builder import (
    REFERENCES,
    UNADAPTED_CONCURRENCY,
    UNLIMITED_QUERY_PER_SECOND,
    BuiltConfig,
    DatasetShard,
    Ref,
    build_config,
    plan_datasets,
    render_literal,
    safe_abbr,
    shard_ranges,
)
from aieval_engine.spec import DEFAULT_MAX_OUT_LEN, SpecError, parse_spec

HOSTILE = [
    "'''",
    '"""',
    "\\",
    "a\\",
    "\\'",
    "{}",
    "{0} %s %(x)s {{x}}",
    "__import__('os').system('touch /tmp/pwned')",
    "'); import os; os.system('x",
    '"); import os; os.system("x',
    "'''); __import__('os').system('id'); x=('''",
    "../../etc/passwd",
    "# not a comment",
    "${HOME} $(id) `id`",
    "名前 ünïcödé 🚀 ‮reversed",
    "x" * 180,
    "\\N{BULLET} \\x41 \\u0041",
    "exec(compile('1','f','exec'))",
]
HOSTILE_IDS = [f"h{i}" for i in range(len(HOSTILE))]

ALLOWED_NAMES = set(REFERENCES) | {
    "read_base",
    "datasets",
    "gen_datasets",
    "ppl_datasets",
    "models",
    "ppl_models",
    "model_dataset_combinations",
    "dataset",
    "dict",
}
# OpenCompass' pipeline settings: assigned at top level, never read back inside the config.
STORE_ONLY_NAMES = {"infer", "eval"}
ALLOWED_IMPORT_MODULES = {"mmengine.config"} | {
    re.match(r"from (\S+) import", line).group(1) for line in REFERENCES.values()
}
ALLOWED_NODES = (
    ast.Module, ast.ImportFrom, ast.alias, ast.With, ast.withitem, ast.Assign, ast.For, ast.If, ast.Delete,
    ast.Name, ast.Load, ast.Store, ast.Del, ast.Constant, ast.List, ast.Dict, ast.Starred, ast.BinOp, ast.Add,
    ast.Call, ast.keyword, ast.Subscript, ast.Compare, ast.In, ast.Attribute,
)  # fmt: skip
ABBR_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.\-]*$")
SECRET = "sk-live-THIS-MUST-NOT-LEAK-7f3a"


def assert_inert(text: str, *, contains: list[str] = ()) -> ast.Module:
    """The allowlist check of a generated config; returns its tree."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        assert isinstance(node, ALLOWED_NODES), f"unexpected {type(node).__name__}: {ast.unparse(node)[:200]}"
        if isinstance(node, ast.Name):
            if node.id in STORE_ONLY_NAMES:
                assert isinstance(node.ctx, ast.Store), f"{node.id} may only be assigned"
            else:
                assert node.id in ALLOWED_NAMES or node.id.startswith("builtin_"), node.id
        elif isinstance(node, ast.Call):
            func = node.func
            # dict(...) for model_dataset_combinations, read_base() for built-ins, dataset.get() in overrides
            ok = (isinstance(func, ast.Name) and func.id in ("dict", "read_base")) or (
                isinstance(func, ast.Attribute) and func.attr == "get"
                and isinstance(func.value, ast.Name) and func.value.id == "dataset"
            )  # fmt: skip
            assert ok, f"unexpected call {ast.unparse(node)[:200]}"
        elif isinstance(node, ast.Attribute):
            assert isinstance(node.value, ast.Name) and node.value.id == "dataset" and node.attr == "get"
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            assert node.module in ALLOWED_IMPORT_MODULES or node.module.startswith(
                "opencompass.configs.datasets."
            ), node.module
            for alias in node.names:
                if node.module.startswith("opencompass.configs.datasets."):
                    assert alias.name.endswith("_datasets") and alias.asname.startswith("builtin_")
                else:
                    assert alias.asname is None and (alias.name in REFERENCES or alias.name == "read_base")
        elif isinstance(node, ast.Constant):
            assert node.value is None or isinstance(node.value, (str, int, float, bool))
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    # Everything outside string literals and comments: user text must never reach it.
    code = " ".join(
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type not in (tokenize.STRING, tokenize.COMMENT)
    )
    for value in contains:
        assert any(value in s for s in strings), f"{value!r} is not a string constant in the config"
        for fragment in ("__import__", "system", "exec", "etc", "passwd", "名前", "HOME"):
            if fragment in value:
                assert fragment not in code, f"{fragment!r} leaked out of string constants"
    return tree


def _literal(node):
    """Like ast.literal_eval, but bare names become '<Name>' and *names become ('*', name)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Name):
        return f"<{node.id}>"
    if isinstance(node, ast.Starred):
        return ("*", node.value.id)
    if isinstance(node, ast.Call):
        return {"<call>": node.func.id, **{kw.arg: _literal(kw.value) for kw in node.keywords}}
    if isinstance(node, ast.BinOp):
        return ("+", _literal(node.left), _literal(node.right))
    raise AssertionError(f"not data: {ast.unparse(node)}")


def assignments(text: str) -> dict:
    tree = ast.parse(text)
    return {
        node.targets[0].id: _literal(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def data_file(folder: Path, stem: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (stem.replace("/", "_")[:200] + ".jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


QA = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
MCQ = [{"question": "q", "A": "x", "B": "y", "answer": "A"}, {"question": "q", "A": "x", "B": "y", "answer": "B"}]


def endpoint(**overrides) -> dict:
    return {"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:8000/v1", "model": "m", **overrides}


def hf(**overrides) -> dict:
    return {"kind": "huggingface", "name": "hf", "path": "/models/tiny", **overrides}


# ---- validation refuses what could break out of a line -------------------------------------------


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "x'\nimport os\n'", "a\x00b", "a\x1bb"])
def test_line_breaking_names_never_reach_the_builder(bad, tmp_path):
    path = data_file(tmp_path, "qa", QA)
    for data in (
        {"models": [hf(name=bad)], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]},
        {"models": [hf()], "datasets": [{"kind": "custom", "name": bad, "path": str(path)}]},
        {"models": [hf(path="/m/" + bad)], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]},
        {"models": [endpoint(model=bad)], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]},
        {"models": [endpoint(base_url="http://h/v1?" + bad)], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]},
    ):
        with pytest.raises(SpecError) as info:
            parse_spec(data)
        assert re.search(r"(name|path|model|base_url):", str(info.value)), info.value.problems


# ---- hostile names and paths ------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_text_is_inert_data(hostile, tmp_path):
    data_path = data_file(tmp_path / "data" / "sub", hostile, QA)
    traversal_path = str(tmp_path / "data" / "sub" / ".." / "sub" / data_path.name)
    hf_path = "/models/" + hostile
    spec = parse_spec(
        {
            "name": hostile,
            "models": [
                hf(name=hostile, path=hf_path, tokenizer_path="/tok/" + hostile),
                endpoint(
                    name=hostile + " (endpoint)",
                    model=hostile,
                    base_url="https://llm.example:8443/v1/a'b\"c{}/%27",
                    tokenizer_path="/tok/" + hostile,
                ),
            ],
            "datasets": [
                {"kind": "custom", "name": hostile, "path": traversal_path},
                {"kind": "custom", "name": hostile + "-contains", "path": str(data_path), "scorer": "contains"},
            ],
            "params": {"limit": 7, "max_out_len": 33},
        }
    )
    built = build_config(spec, tmp_path / "job")
    assert built.path.read_text(encoding="utf-8") == built.text
    resolved_hf = str(Path(hf_path).resolve())
    canonical = [str((tmp_path / "job" / "data" / f"{d.abbr}.jsonl").resolve()) for d in built.datasets]
    tree = assert_inert(built.text, contains=[resolved_hf, hostile, *canonical])
    # The user's file is copied to <job>/data/<abbr>.jsonl: its hostile name never reaches the config.
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not any(data_path.name in s for s in strings), data_path.name
    assert not any(str(data_path.parent) in s for s in strings)
    for planned, copy in zip(built.datasets, canonical, strict=True):
        assert planned.evaluated_path.resolve() == Path(copy)
        assert planned.data_type == "qa"
        assert [json.loads(line) for line in Path(copy).read_text(encoding="utf-8").splitlines()] == QA
        assert planned.sha256 == hashlib.sha256(data_path.read_bytes()).hexdigest()  # of the user's file

    values = assignments(built.text)
    hf_cfg, api_cfg = values["models"]
    assert hf_cfg["path"] == resolved_hf
    assert hf_cfg["tokenizer_path"] == str(Path("/tok/" + hostile).resolve())
    assert api_cfg["path"] == hostile  # the model name the endpoint receives, byte for byte
    assert api_cfg["openai_api_base"] == spec.models[1].base_url
    assert api_cfg["openai_api_base"] == "https://llm.example:8443/v1/a'b\"c{}/%27/"
    assert api_cfg["tokenizer_path"] == "/tok/" + hostile
    qa_cfg, contains_cfg = values["gen_datasets"]
    assert [qa_cfg["path"], contains_cfg["path"]] == canonical
    assert "/../" not in qa_cfg["path"]
    assert qa_cfg["data_type"] == contains_cfg["data_type"] == "qa"
    assert contains_cfg["evaluator"] == "<ContainsAnswerEvaluator>"

    # Display names stay out of the config: only the sanitised abbreviations go in.
    abbrs = [hf_cfg["abbr"], api_cfg["abbr"], qa_cfg["abbr"], contains_cfg["abbr"]]
    for abbr in abbrs:
        assert ABBR_RE.match(abbr) and not abbr.startswith("."), abbr
    assert built.models == {hf_cfg["abbr"]: hostile, api_cfg["abbr"]: hostile + " (endpoint)"}
    assert [d.abbr for d in built.datasets] == [qa_cfg["abbr"], contains_cfg["abbr"]]
    assert [d.spec.name for d in built.datasets] == [hostile, hostile + "-contains"]


def test_base_url_with_query_string_is_inert(tmp_path):
    url = "https://llm.example/v1?x='''&y=\"\"\"&z=__import__('os').system('id')&w={}\\"
    path = data_file(tmp_path, "qa", QA)
    try:
        spec = parse_spec({"models": [endpoint(base_url=url)], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]})
    except SpecError as exc:  # refusing query strings would also be a fix for the xfail in test_spec.py
        assert exc.problems[0].startswith("models.0.openai.base_url:")
        return
    built = build_config(spec, tmp_path / "job")
    assert_inert(built.text, contains=[url])
    (model,) = assignments(built.text)["models"]
    assert model["openai_api_base"] == spec.models[0].base_url and model["openai_api_base"].startswith(url)


def test_all_hostile_names_in_one_spec_get_unique_safe_abbrs(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    names = HOSTILE + [".hidden", "..", "-", "a b", "a_b", "a/b", "A B", "ok-name_1.0"]
    spec = parse_spec(
        {
            "models": [hf(name=n) for n in names],
            "datasets": [{"kind": "custom", "name": n, "path": str(path)} for n in names],
        }
    )
    built = build_config(spec, tmp_path / "job")
    tree = assert_inert(built.text)
    assert list(built.models.values()) == [n.strip() for n in names]
    model_abbrs = list(built.models)
    dataset_abbrs = [d.abbr for d in built.datasets]
    for abbrs in (model_abbrs, dataset_abbrs):
        assert len(set(abbrs)) == len(names)
        assert all(ABBR_RE.match(a) and not a.startswith(".") for a in abbrs), abbrs
    assert model_abbrs == dataset_abbrs  # same names, same derivation
    assert built.models["ok-name_1.0"] == "ok-name_1.0"  # already safe: unchanged
    values = assignments(built.text)
    assert [m["abbr"] for m in values["models"]] == model_abbrs
    assert [d["abbr"] for d in values["gen_datasets"]] == dataset_abbrs
    assert isinstance(tree, ast.Module)


def test_safe_abbr_properties():
    for name in HOSTILE + [".hidden", "..", "...", "-x-", "_", " a ", "ok", "a.b-c_d"]:
        first = safe_abbr(name, set())
        assert first == safe_abbr(name, set()) == safe_abbr(name, {"unrelated"})  # stable
        assert ABBR_RE.match(first) and not first.startswith("."), (name, first)
        assert len(first) <= 48 + 7
    assert safe_abbr("ok", set()) == "ok"
    assert safe_abbr("a.b-c_d", set()) == "a.b-c_d"
    assert re.fullmatch(r"item-[0-9a-f]{6}", safe_abbr("..", set()))
    assert re.fullmatch(r"hidden-[0-9a-f]{6}", safe_abbr(".hidden", set()))
    # names that sanitise alike still differ
    assert len({safe_abbr(n, set()) for n in ("a b", "a/b", "a:b", "a_b", "a\\b")}) == 5
    taken: set[str] = set()
    assert [safe_abbr("same", taken) for _ in range(3)] == ["same", "same-2", "same-3"]
    assert taken == {"same", "same-2", "same-3"}


# ---- API keys -----------------------------------------------------------------------------------------


def test_api_keys_only_travel_in_secret_env(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [
                endpoint(name="in-memory", api_key=SECRET),
                hf(),
                endpoint(name="from-env", api_key_env="MY_PROVIDER_KEY"),
                endpoint(name="no-key"),
            ],
            "datasets": [{"kind": "custom", "name": "d", "path": str(path)}],
        }
    )
    env_secret = SECRET + "-env"
    built = build_config(spec, tmp_path / "job", {"MY_PROVIDER_KEY": env_secret})
    assert built.secret_env == {"AIEVAL_API_KEY_0": SECRET, "AIEVAL_API_KEY_2": env_secret}
    on_disk = (tmp_path / "job" / "config.py").read_text(encoding="utf-8")
    for text in (built.text, on_disk, repr(built)):
        assert SECRET not in text and "sk-live" not in text
        assert "MY_PROVIDER_KEY" not in text or text is not built.text
    assert "MY_PROVIDER_KEY" not in built.text  # not even the user's variable name: the run gets its own
    models = assignments(built.text)["models"]
    assert [m.get("key_env") for m in models] == ["AIEVAL_API_KEY_0", None, "AIEVAL_API_KEY_2", None]
    assert all("key" not in m for m in models)


def test_missing_api_key_env_is_a_spec_error(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf(), endpoint(name="needs key", api_key_env="ABSENT_KEY_VAR")],
            "datasets": [{"kind": "custom", "name": "d", "path": str(path)}],
        }
    )
    with pytest.raises(SpecError) as info:
        build_config(spec, tmp_path / "job", {"OTHER": "x"})
    assert info.value.problems == ["models[1] (needs key): the environment variable ABSENT_KEY_VAR is not set"]
    assert not (tmp_path / "job" / "config.py").exists()


# ---- render_literal and Ref ---------------------------------------------------------------------------


def test_render_literal_round_trips_plain_data():
    value = {
        "s": HOSTILE,
        "n": [0, -1, 2**70, 1.5, -0.0, 1e-300, True, False, None],
        "nested": {"t": ("a", "b"), "empty": {}, "l": []},
    }
    source = render_literal(value)
    back = ast.literal_eval(source)
    assert back == {**value, "nested": {"t": ["a", "b"], "empty": {}, "l": []}}
    assert type(back["n"][6]) is bool and type(back["n"][2]) is int


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": math.inf}])
def test_render_literal_rejects_non_finite_numbers(value):
    with pytest.raises(ValueError, match="non-finite"):
        render_literal(value)


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), Path("/x"), 1 + 2j, {1: "int key"}, {("t",): 1}])
def test_render_literal_rejects_unknown_types(value):
    with pytest.raises(TypeError):
        render_literal(value)


def test_ref_allows_only_known_names():
    for name in REFERENCES:
        assert render_literal({"type": Ref(name)}) == f"{{'type': {name}}}"
    for name in ("os", "__import__", "eval", "dict", "HuggingFacewithChatTemplate()", ""):
        with pytest.raises(ValueError, match="not an allowed config reference"):
            Ref(name)


# ---- dataset planning ---------------------------------------------------------------------------------


def test_ppl_with_an_endpoint_is_refused(tmp_path):
    path = data_file(tmp_path, "mcq", MCQ)
    spec = parse_spec(
        {
            "models": [hf(), endpoint(name="api")],
            "datasets": [{"kind": "custom", "name": "mcq", "path": str(path), "infer_method": "ppl"}],
        }
    )
    with pytest.raises(SpecError) as info:
        build_config(spec, tmp_path / "job")
    (problem,) = info.value.problems
    assert problem.startswith("models (api): ppl datasets need the log-likelihood")


def test_ppl_needs_mcq_and_contains_needs_qa(tmp_path):
    qa, mcq = data_file(tmp_path, "qa", QA), data_file(tmp_path, "mcq", MCQ)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [
                {"kind": "custom", "name": "qa-ppl", "path": str(qa), "infer_method": "ppl"},
                {"kind": "custom", "name": "mcq-contains", "path": str(mcq), "scorer": "contains"},
                {"kind": "custom", "name": "missing", "path": str(tmp_path / "nope.jsonl")},
                {"kind": "builtin", "config": "no_such_dataset_gen"},
            ],
        }
    )
    with pytest.raises(SpecError) as info:
        plan_datasets(spec)
    problems = sorted(info.value.problems)  # the order is checked in test_problems_are_listed_in_dataset_order
    assert len(problems) == 4
    assert problems[0] == "datasets[0] (qa-ppl): ppl (likelihood) scoring needs a multiple-choice file"
    assert problems[1] == (
        "datasets[1] (mcq-contains): the 'contains' scorer is for question-answer files, not multiple choice"
    )
    assert problems[2].startswith("datasets[2] (missing): cannot read ") and "nope.jsonl" in problems[2]
    assert problems[3].startswith("datasets[3] (no_such_dataset_gen): no OpenCompass dataset config is named")


def test_limit_sets_test_range_on_custom_and_loop_for_builtins(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}, {"kind": "builtin", "config": "gsm8k_gen"}],
            "params": {"limit": 5},
        }
    )
    built = build_config(spec, tmp_path / "job")
    tree = assert_inert(built.text)
    values = assignments(built.text)
    canonical = str((tmp_path / "job" / "data" / "qa.jsonl").resolve())
    assert values["gen_datasets"] == [
        {"path": canonical, "abbr": "qa", "infer_method": "gen", "data_type": "qa", "test_range": "[0:5]"},
        ("*", "builtin_1_gsm8k_datasets"),
    ]
    assert values["ppl_datasets"] == []
    assert values["datasets"] == ("+", "<gen_datasets>", "<ppl_datasets>")
    assert "    from opencompass.configs.datasets.gsm8k.gsm8k_gen import gsm8k_datasets as builtin_1_gsm8k_datasets" in (
        built.text.splitlines()
    )
    loops = [n for n in tree.body if isinstance(n, ast.For)]
    assert len(loops) == 1 and ast.unparse(loops[0].iter) == "datasets"
    assert "dataset['reader_cfg']['test_range'] = '[0:5]'" in ast.unparse(loops[0])
    assert isinstance(tree.body[tree.body.index(loops[0]) + 1], ast.Delete)  # `dataset` does not leak out
    assert [d.builtin.name if d.builtin else d.abbr for d in built.datasets] == ["qa", "gsm8k_gen"]
    assert built.datasets[0].rows == 2 and built.datasets[1].rows is None


def test_no_limit_means_no_test_range_and_no_loop(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "qa", "path": str(path), "data_type": "qa"}]})
    built = build_config(spec, tmp_path / "job")
    tree = assert_inert(built.text)
    assert not any(isinstance(n, ast.For) for n in tree.body)
    (dataset,) = assignments(built.text)["gen_datasets"]
    canonical = str((tmp_path / "job" / "data" / "qa.jsonl").resolve())
    assert dataset == {"path": canonical, "abbr": "qa", "infer_method": "gen", "data_type": "qa"}
    assert Path(canonical).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    assert "with read_base()" not in built.text  # no built-ins, nothing to import
    assert "model_dataset_combinations" not in built.text and "ppl_models" not in built.text


def test_max_out_len_precedence(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    datasets = [{"kind": "custom", "name": "qa", "path": str(path)}]
    models = [hf(), hf(name="own", max_out_len=7), endpoint()]

    built = build_config(parse_spec({"models": models, "datasets": datasets}), tmp_path / "a")
    assert [m["max_out_len"] for m in assignments(built.text)["models"]] == [DEFAULT_MAX_OUT_LEN, 7, DEFAULT_MAX_OUT_LEN]
    assert "infer_cfg" not in built.text  # built-ins keep their own setting

    built = build_config(parse_spec({"models": models, "datasets": datasets, "params": {"max_out_len": 40}}), tmp_path / "b")
    assert [m["max_out_len"] for m in assignments(built.text)["models"]] == [40, 7, 40]
    tree = assert_inert(built.text)
    (loop,) = [n for n in tree.body if isinstance(n, ast.For)]
    assert "dataset['infer_cfg']['inferencer']['max_out_len'] = 40" in ast.unparse(loop)


def test_ppl_with_hf_chat_model_pairs_ppl_datasets_with_the_base_class(tmp_path):
    qa, mcq = data_file(tmp_path, "qa", QA), data_file(tmp_path, "mcq", MCQ)
    spec = parse_spec(
        {
            "models": [hf(name="chatty", mode="chat", dtype="bfloat16")],
            "datasets": [
                {"kind": "custom", "name": "qa", "path": str(qa)},
                {"kind": "custom", "name": "mcq-ppl", "path": str(mcq), "infer_method": "ppl"},
            ],
        }
    )
    built = build_config(spec, tmp_path / "job")
    assert_inert(built.text)
    values = assignments(built.text)
    (gen_model,) = values["models"]
    (ppl_model,) = values["ppl_models"]
    assert gen_model["type"] == "<HuggingFacewithChatTemplate>"
    assert ppl_model["type"] == "<HuggingFaceBaseModel>"
    assert gen_model["abbr"] == ppl_model["abbr"] == "chatty"  # one model, two roles
    assert ppl_model["model_kwargs"] == {"torch_dtype": "torch.bfloat16", "trust_remote_code": False, "device_map": "cpu"}
    assert [d["abbr"] for d in values["gen_datasets"]] == ["qa"]
    assert [(d["abbr"], d["infer_method"]) for d in values["ppl_datasets"]] == [("mcq-ppl", "ppl")]
    assert values["model_dataset_combinations"] == [
        {"<call>": "dict", "models": "<models>", "datasets": "<gen_datasets>"},
        {"<call>": "dict", "models": "<ppl_models>", "datasets": "<ppl_datasets>"},
    ]
    assert [d.infer_method for d in built.datasets] == ["gen", "ppl"]


def test_hf_model_settings(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf(name="base", mode="base", num_gpus=2, dtype="auto", batch_size=3, max_seq_len=512)],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}],
        }
    )
    (model,) = assignments(build_config(spec, tmp_path / "job").text)["models"]
    assert model["type"] == "<HuggingFaceBaseModel>"
    # no device_map when GPUs are asked for; no checkpoint code unless the spec asks (test_hardening_remote_code.py)
    assert model["model_kwargs"] == {"torch_dtype": "auto", "trust_remote_code": False}
    assert model["tokenizer_kwargs"] == {"trust_remote_code": False}
    assert model["run_cfg"] == {"num_gpus": 2}
    assert (model["batch_size"], model["max_seq_len"]) == (3, 512)
    assert model["generation_kwargs"] == {"do_sample": False}
    assert model["tokenizer_path"] == model["path"] == "/models/tiny"


def test_endpoint_model_settings(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [endpoint(concurrency=3, query_per_second=5, retries=0, timeout=9, temperature=0.5, max_seq_len=999)],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}],
        }
    )
    (model,) = assignments(build_config(spec, tmp_path / "job").text)["models"]
    assert model["type"] == "<SecretKeyOpenAISDK>"
    assert model["openai_api_base"] == "http://127.0.0.1:8000/v1/"
    assert (model["batch_size"], model["max_workers"], model["query_per_second"]) == (3, 3, 5)
    assert model["request_pool"] == {"concurrency": 3, "max_concurrency": 256, "query_per_second": 5}
    assert (model["retry"], model["timeout"], model["temperature"], model["max_seq_len"]) == (0, 9, 0.5, 999)
    assert model["key_env"] is None and model["run_cfg"] == {"num_gpus": 0}
    assert model["meta_template"]["round"][1] == {"role": "BOT", "api_role": "BOT", "generate": True}
    assert model["stream"] is True  # the pool streams its requests (time to first token) unless told not to
    spec = parse_spec({"models": [endpoint(stream=False)], "datasets": [{"kind": "custom", "name": "qa",
                                                                         "path": str(path)}]})
    assert assignments(build_config(spec, tmp_path / "no-stream").text)["models"][0]["stream"] is False


def test_endpoint_concurrency_adapts_by_default_within_the_lowest_ceiling(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    datasets = [{"kind": "custom", "name": "qa", "path": str(path)}]

    def model_config(**settings):
        spec = parse_spec({"models": [endpoint(**settings)], "datasets": datasets})
        return assignments(build_config(spec, tmp_path / "job").text)["models"][0]

    # nothing set: adaptive up to the default ceiling, no rate limit (OpenCompass still gets a number)
    model = model_config()
    assert model["request_pool"] == {"concurrency": None, "max_concurrency": 256, "query_per_second": None}
    # the batch OpenCompass' own paths use where the request pool does not run (oc_pool's fallbacks): a modest one
    assert model["query_per_second"] == UNLIMITED_QUERY_PER_SECOND and model["batch_size"] == UNADAPTED_CONCURRENCY
    # an administrator's per-model cap (the shared budget) lowers the ceiling, and a fixed number with it
    budget = {"key": "budget:model:1", "max_concurrency": 16}
    model = model_config(max_concurrency=100, shared_budget=budget)
    assert model["request_pool"]["max_concurrency"] == 16 and model["request_pool"]["concurrency"] is None
    model = model_config(concurrency=64, shared_budget=budget)
    assert model["request_pool"]["concurrency"] == 16 and model["batch_size"] == 16
    assert model_config(max_concurrency=40)["request_pool"]["max_concurrency"] == 40
    assert model_config(max_concurrency=4)["batch_size"] == 4, "never above the ceiling"
    # A Dify app is sent in OpenCompass' own batches: nothing adapts, so unset means the modest fixed number.
    dify = parse_spec({"models": [{"kind": "dify", "name": "app", "base_url": "http://127.0.0.1:9/v1"}],
                       "datasets": datasets})
    config = assignments(build_config(dify, tmp_path / "dify").text)["models"][0]
    assert "request_pool" not in config and config["batch_size"] == config["max_workers"] == UNADAPTED_CONCURRENCY


def test_quick_pipeline_follows_workers(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    data = {"models": [hf()], "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}], "params": {"workers": 3}}
    built = build_config(parse_spec(data), tmp_path / "quick")
    assert_inert(built.text)
    values = assignments(built.text)
    assert values["infer"] == {
        "partitioner": {"type": "<QuickNumWorkerPartitioner>", "num_worker": 3},
        "runner": {"type": "<LocalRunner>", "max_num_workers": 3, "task": {"type": "<PooledInferTask>"}},
    }
    assert values["eval"] == {
        "partitioner": {"type": "<QuickNaivePartitioner>"},
        "runner": {"type": "<LocalRunner>", "max_num_workers": 3, "task": {"type": "<OpenICLEvalTask>"}},
    }
    plain = build_config(parse_spec(data), tmp_path / "plain", quick_pipeline=False)
    assert_inert(plain.text)
    assert "infer" not in assignments(plain.text) and "eval" not in assignments(plain.text)
    for name in ("QuickNumWorkerPartitioner", "QuickNaivePartitioner", "LocalRunner", "PooledInferTask"):
        assert name in built.text and name not in plain.text
    assert assignments(plain.text)["models"] == values["models"]


def test_config_sha256_tracks_text(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}]})
    a = build_config(spec, tmp_path / "a")
    again = build_config(spec, tmp_path / "a")
    assert a.text == again.text and a.sha256 == again.sha256 and len(a.sha256) == 64
    # Custom data is read from the job's own canonical copy, so job folders differ only in that path.
    b = build_config(spec, tmp_path / "b")
    assert b.text != a.text
    assert a.text.replace(str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())) == b.text
    c = build_config(spec.model_copy(update={"params": spec.params.model_copy(update={"limit": 1})}), tmp_path / "a")
    assert c.sha256 != a.sha256
    assert isinstance(a, BuiltConfig)


# ---- executed the way OpenCompass loads it ------------------------------------------------------------


def test_mmengine_loads_hostile_config_without_executing_anything(tmp_path, monkeypatch):
    from mmengine.config import Config

    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {canary}')"
    payload_rel = "x'''\"\"\"\\{}__import__('os').system('touch pwned')"  # also valid as a file name
    data = data_file(tmp_path / "data", payload_rel, QA)
    spec = parse_spec(
        {
            "name": payload,
            "models": [
                hf(name=payload, path=str(tmp_path / "m") + "/" + payload.replace("/", "_")),
                endpoint(name="'''" + payload, model="'); " + payload + "; ('", api_key=SECRET),
            ],
            "datasets": [{"kind": "custom", "name": "'''" + payload + '"""', "path": str(data)}],
            "params": {"limit": 3, "max_out_len": 12},
        }
    )
    built = build_config(spec, tmp_path / "job")
    cfg = Config.fromfile(str(built.path), format_python_code=False)

    assert not canary.exists() and not (tmp_path / "pwned").exists()
    (dataset,) = cfg.datasets
    assert dataset["path"] == str((tmp_path / "job" / "data" / f"{built.datasets[0].abbr}.jsonl").resolve())
    assert data.name not in built.text and "pwned')" not in dataset["path"]  # the hostile file name stays out
    assert dataset["data_type"] == "qa"
    assert dataset["abbr"] == built.datasets[0].abbr
    assert dataset["test_range"] == "[0:3]"
    hf_cfg, api_cfg = cfg.models
    assert hf_cfg["path"] == str(tmp_path / "m") + "/" + payload.replace("/", "_")
    assert api_cfg["path"] == "'); " + payload + "; ('"
    assert api_cfg["key_env"] == "AIEVAL_API_KEY_1"
    assert [hf_cfg["abbr"], api_cfg["abbr"]] == list(built.models)
    assert SECRET not in built.path.read_text(encoding="utf-8")
    assert len(cfg.gen_datasets) == 1 and cfg.ppl_datasets == []


# ---- bugs ---------------------------------------------------------------------------------------------


def _opencompass_first_row(path: str) -> dict:
    """What OpenCompass' parse_example_dataset (opencompass/datasets/custom.py:479-495) makes of a custom
    file when it expands the config: the first row, read with encoding='utf-8', raw csv header."""
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as handle:
            return json.loads(handle.readline())
    with open(path, encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return dict(zip(header, next(reader), strict=False))  # as OpenCompass does


def test_opencompass_reads_plain_files_like_the_validator(tmp_path):
    for name, raw in (("a.jsonl", b'{"question": "q", "answer": "a"}\r\n'), ("a.csv", b"question,answer\r\nq,a\r\n")):
        path = tmp_path / name
        path.write_bytes(raw)
        spec = parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]})
        built = build_config(spec, tmp_path / ("job-" + name))
        (dataset,) = assignments(built.text)["gen_datasets"]
        assert sorted(_opencompass_first_row(dataset["path"])) == ["answer", "question"]


@pytest.mark.parametrize(
    "name, raw, rows",
    [
        ("bom.jsonl", b'\xef\xbb\xbf{"question": "q", "answer": "a"}\n', [{"question": "q", "answer": "a"}]),
        ("bom.csv", b"\xef\xbb\xbfquestion,answer\nq,a\n", [{"question": "q", "answer": "a"}]),
        ("padded.csv", b"question, answer\nq,a\n", [{"question": "q", "answer": "a"}]),
        (
            "reordered.jsonl",
            b'{"question": "q1", "answer": "a1"}\n{"answer": "a2", "question": "q2"}\n',
            [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}],
        ),
    ],
)
def test_validated_files_are_read_the_same_by_opencompass(tmp_path, name, raw, rows):
    """Files the validator accepts but OpenCompass' parse_example_dataset (custom.py:486,490: encoding='utf-8',
    raw csv header) would misread: the config points OpenCompass at a clean canonical copy instead."""
    from mmengine.config import Config
    from opencompass.datasets.custom import CustomDataset, make_custom_dataset_config

    path = tmp_path / name
    path.write_bytes(raw)
    spec = parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "d", "path": str(path)}]})
    built = build_config(spec, tmp_path / "job")  # validation passed
    (planned,) = built.datasets
    assert planned.sha256 == hashlib.sha256(raw).hexdigest()  # provenance is the user's file
    (dataset,) = Config.fromfile(str(built.path), format_python_code=False).datasets
    assert dataset["path"] == str((tmp_path / "job" / "data" / "d.jsonl").resolve()) != str(path)
    copy = Path(dataset["path"]).read_bytes()
    assert not copy.startswith(b"\xef\xbb\xbf") and b"\r" not in copy
    assert sorted(_opencompass_first_row(dataset["path"])) == ["answer", "question"]

    expanded = make_custom_dataset_config(dict(dataset))  # exactly what OpenCompass' run does with it
    assert expanded["abbr"] == "d" and expanded["path"] == dataset["path"]
    assert expanded["reader_cfg"]["input_columns"] == ["question"]
    assert expanded["reader_cfg"]["output_column"] == "answer"
    loaded = CustomDataset.load(path=dataset["path"])
    assert loaded.column_names == ["question", "answer"]
    assert loaded.to_list() == rows


def _builtin_abbrs(name: str) -> set[str]:
    """`abbr=` constants of a built-in config and of the sibling configs it imports (read as source)."""
    file = resolve_builtin(name).file
    files, abbrs = [file], set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            files.append(file.parent / f"{node.module}.py")
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "abbr" and isinstance(node.value, ast.Constant):
                abbrs.add(node.value.value)
    return abbrs


def test_custom_abbr_never_collides_with_a_builtin_abbr(tmp_path):
    # Both would otherwise write predictions|results/<model>/gsm8k.json.
    builtin_abbrs = _builtin_abbrs("gsm8k_gen")
    assert builtin_abbrs == {"gsm8k"}
    assert set(resolve_builtin("gsm8k_gen").abbrs) == builtin_abbrs
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}, {"kind": "custom", "name": "gsm8k", "path": str(path)}],
        }
    )
    built = build_config(spec, tmp_path / "job")
    custom = [d.abbr for d in built.datasets if d.abbr]
    assert custom and not set(custom) & builtin_abbrs
    assert [d.builtin.name if d.builtin else d.spec.name for d in built.datasets] == ["gsm8k_gen", "gsm8k"]
    (copy,) = assignments(built.text)["gen_datasets"][1:]
    assert copy["abbr"] == custom[0] and copy["path"].endswith(f"/job/data/{custom[0]}.jsonl")


def test_custom_abbr_avoids_builtin_abbrs_listed_after_it(tmp_path):
    path = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [{"kind": "custom", "name": "gsm8k", "path": str(path)}, {"kind": "builtin", "config": "gsm8k_gen"}],
        }
    )
    planned = plan_datasets(spec)
    assert [d.builtin.name if d.builtin else d.spec.name for d in planned] == ["gsm8k", "gsm8k_gen"]  # spec order
    assert planned[0].abbr != "gsm8k"


def test_spec_error_removes_the_canonical_copies(tmp_path):
    good = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [
                {"kind": "custom", "name": "good", "path": str(good)},
                {"kind": "custom", "name": "bad", "path": str(tmp_path / "missing.jsonl")},
            ],
        }
    )
    with pytest.raises(SpecError):
        build_config(spec, tmp_path / "job")
    assert not (tmp_path / "job" / "data").exists()
    assert not (tmp_path / "job" / "config.py").exists()
    # without a canonical folder, planning only validates and evaluates the user's own file
    (planned,) = plan_datasets(parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "g", "path": str(good)}]}))
    assert planned.evaluated_path == good and planned.data_type == "qa"


def test_problems_are_listed_in_dataset_order(tmp_path):
    qa = data_file(tmp_path, "qa", QA)
    spec = parse_spec(
        {
            "models": [hf()],
            "datasets": [
                {"kind": "custom", "name": "qa-ppl", "path": str(qa), "infer_method": "ppl"},
                {"kind": "builtin", "config": "no_such_dataset_gen"},
            ],
        }
    )
    with pytest.raises(SpecError) as info:
        plan_datasets(spec)
    assert [p.split(" ", 1)[0] for p in info.value.problems] == ["datasets[0]", "datasets[1]"]


@pytest.mark.parametrize(
    "injected",
    [
        "x = __import__('os').system('id')",
        "import os",
        "models = [dict(type=eval('1'))]",
        "datasets = [open('/etc/passwd').read()]",
        "models = [os.environ]",
        "models = [lambda: 1]",
        "models = [f'{1}']",
    ],
)
def test_the_inertness_check_itself_catches_code(injected):
    # Guards the guard: if assert_inert accepted these, the hostile-name tests above would prove nothing.
    with pytest.raises(AssertionError):
        assert_inert("from mmengine.config import read_base\n" + injected + "\n")


def test_the_inertness_check_catches_user_text_outside_strings():
    text = "models = [{'abbr': 'x'}]  # __import__ in a comment is fine\ndatasets = [dict(a=1)]\n"
    assert_inert(text)
    with pytest.raises(AssertionError):
        assert_inert(text, contains=["__import__('os')"])  # not a constant


# ---- one part of a job fanned out over workers: some datasets, or one shard of one -------------------------
def test_a_part_keeps_every_datasets_abbr_and_index_of_the_whole_job(tmp_path):
    # "gsm8k" beside the built-in gsm8k config is abbreviated "gsm8k-2" in the whole job: so in a part without it
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    spec = parse_spec({"models": [hf()], "datasets": [
        {"kind": "builtin", "config": "gsm8k_gen"}, {"kind": "custom", "name": "gsm8k", "path": str(data_file(tmp_path, "a", rows))},
        {"kind": "custom", "name": "other", "path": str(tmp_path / "absent.jsonl")}]})  # not this part's: not read
    whole_abbr = [d.abbr for d in plan_datasets(spec.model_copy(update={"datasets": spec.datasets[:2]}))][1]
    built = build_config(spec, tmp_path / "part", datasets=[1])
    assert [(d.index, d.abbr) for d in built.datasets] == [(1, whole_abbr)] and whole_abbr == "gsm8k-2"
    assert "builtin_" not in built.text
    built = build_config(spec, tmp_path / "part0", datasets=[0])
    assert [d.index for d in built.datasets] == [0] and "as builtin_0_gsm8k_datasets" in built.text


def test_a_shard_is_cut_as_opencompass_size_partitioner_cuts_a_dataset(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    path = data_file(tmp_path, "qa", rows)
    spec = parse_spec({"models": [hf()], "datasets": [{"kind": "custom", "name": "qa", "path": str(path)}],
                       "params": {"limit": 9}})
    assert shard_ranges(9, 2, batch_size=4) == [(0, 8), (8, 9)]
    assert shard_ranges(10, 3) == [(0, 4), (4, 8), (8, 10)]
    shard = DatasetShard(dataset=0, index=1, start=8, stop=9)
    built = build_config(spec, tmp_path / "job", shard=shard)
    assert_inert(built.text)
    (config,) = assignments(built.text)["gen_datasets"]
    # SizePartitioner.split_dataset: abbr + f'_{part}', test_range = f'{test_range}[{i}: {i + step}]'
    assert (config["abbr"], config["test_range"]) == ("qa_1", "[0:9][8: 9]")
    assert built.datasets[0].rows == 1
    with pytest.raises(SpecError, match="only an uploaded dataset"):
        build_config(parse_spec({"models": [hf()], "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}]}),
                     tmp_path / "b", shard=DatasetShard(dataset=0, index=0, start=0, stop=4))
