"""`flexguard train merge`: fold a LoRA adapter into its base model and save a folder the core loads.

    flexguard train merge --adapter runs/sft --output_dir runs/sft-merged
    python -c "from flexguard_plugins import FlexGuard; FlexGuard.load('runs/sft-merged', backend='transformers')"

The tokenizer (with its chat template) is copied from the adapter folder, or from the base model when
the adapter folder has none, so the merged folder renders exactly the prompts training saw.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import arguments

RUN_INFO = ("flexguard_training.json", "log_history.json")


@dataclass
class MergeArguments:
    """Arguments of `flexguard train merge`."""

    adapter: str = field(default="", metadata={"help": "Folder with the LoRA adapter (an SFT or GRPO output_dir)."})
    output_dir: str = field(default="", metadata={"help": "Where to write the merged model and tokenizer."})
    base_model: str | None = field(default=None, metadata={
        "help": "Base model; default: base_model_name_or_path from the adapter's adapter_config.json."})
    dtype: str = field(default="bfloat16", metadata={
        "help": "Dtype of the saved weights (bfloat16, float16 or float32).",
        "choices": ["bfloat16", "float16", "float32"]})


def make_parser(prog: str | None = None) -> Any:
    return arguments.make_parser((MergeArguments,), prog)


def base_model_of(adapter: str | Path) -> str:
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: --adapter must be a folder saved by a LoRA run")
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config} names no base model; pass --base_model")
    return str(base)


def merge(args: MergeArguments) -> Path:
    """Load base + adapter, `merge_and_unload`, save weights, generation config and tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not args.adapter or not args.output_dir:
        raise ValueError("--adapter and --output_dir are required")
    base = args.base_model or base_model_of(args.adapter)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer_source = args.adapter if (Path(args.adapter) / "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(output)
    for name in RUN_INFO:  # keep the training record with the weights
        if (Path(args.adapter) / name).is_file():
            shutil.copy(Path(args.adapter) / name, output / name)
    return output


def main(argv: list[str] | None = None) -> int:
    (args,) = arguments.parse_arguments(make_parser(prog="flexguard train merge"), argv)
    output = merge(args)
    print(f"merged {args.adapter} into {args.base_model or base_model_of(args.adapter)} → {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
