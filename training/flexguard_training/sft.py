"""`flexguard train sft`: the SFT warm-up. LoRA (PEFT) on any causal LM with TRL's `SFTTrainer`.

Each prepared record becomes a prompt-completion pair rendered by the core: the prompt is
`render_prompt(tokenizer, item, reasoning=...)` (chat template + think prefill) and the completion is
`render_target(categories, score, reasoning)` + EOS, so TRL's completion-only loss trains exactly the
answer tokens the core's parser reads at inference time.

    flexguard train sft --config sft_small.yaml --dataset_path runs/data --model_name_or_path MODEL
    accelerate launch -m flexguard_training.sft --config configs/sft_qwen3_8b.yaml   # multi-GPU

Checkpoints go to `output_dir/checkpoint-N`; `--resume_from_checkpoint last` continues the latest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexguard_plugins.prompts import render_prompt, render_target
from flexguard_plugins.types import ModerationItem

REASONING_MODES = ("auto", "never")


@dataclass
class FlexGuardDataArguments:
    """Which prepared data to train on and how to render it."""

    dataset_path: str = field(default="", metadata={"help": "Folder written by `flexguard train prepare`."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_eval_split: str | None = field(default=None, metadata={
        "help": "Split to evaluate on (e.g. 'validation'); needs eval_strategy other than 'no'."})
    reasoning_mode: str = field(default="auto", metadata={
        "help": "'auto': records with a teacher trace train the reasoning format, the rest the empty think "
                "block; 'never': always the empty think block (traces dropped).",
        "choices": list(REASONING_MODES)})
    system_prompt_path: str | None = field(default=None, metadata={
        "help": "A rubric file replacing the core's system prompt (use the same one at inference)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many records."})


def _uses_reasoning(record: dict[str, Any], reasoning_mode: str) -> bool:
    return reasoning_mode == "auto" and bool(record.get("reasoning"))


def to_prompt_completion(record: dict[str, Any], tokenizer: Any, reasoning_mode: str = "auto",
                         system_prompt_path: str | None = None) -> dict[str, str]:
    """One prepared record → TRL's prompt-completion format, rendered by the core (no EOS: TRL adds it)."""
    if reasoning_mode not in REASONING_MODES:
        raise ValueError(f"reasoning_mode must be one of {REASONING_MODES}, got {reasoning_mode!r}")
    reasoning = _uses_reasoning(record, reasoning_mode)
    item = ModerationItem(prompt=record["query"], response=record.get("reply"))
    return {
        "prompt": render_prompt(tokenizer, item, reasoning=reasoning, system_prompt_path=system_prompt_path),
        "completion": render_target(record["target_categories"], record["target_score"],
                                    record["reasoning"] if reasoning else None),
    }


def load_prepared(path: str, split: str, max_samples: int | None = None) -> Any:
    from datasets import load_from_disk

    if not path:
        raise ValueError("--dataset_path is required (a folder written by `flexguard train prepare`)")
    dataset = load_from_disk(path)[split]
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset


def resume_value(value: str | None) -> str | bool | None:
    """`last`/`true` → resume from the newest checkpoint in output_dir; a path → that checkpoint."""
    if value is None or str(value).lower() in ("", "none", "false", "no"):
        return None
    if str(value).lower() in ("last", "latest", "true", "yes"):
        return True
    return value


def write_run_info(output_dir: str, trainer: Any, **info: Any) -> None:
    """The log history (loss, rewards per step) and how the data was rendered, next to the weights."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n", encoding="utf-8")
    (out / "flexguard_training.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")


def make_parser(prog: str | None = None):
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((FlexGuardDataArguments, SFTConfig, ModelConfig), prog=prog)


def train(data_args: FlexGuardDataArguments, training_args: Any, model_args: Any) -> Any:
    """Render the data, run `SFTTrainer` with LoRA, save the adapter, tokenizer and log history."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer, get_peft_config

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def render(record: dict[str, Any]) -> dict[str, str]:
        return to_prompt_completion(record, tokenizer, data_args.reasoning_mode, data_args.system_prompt_path)

    def prepare(split: str, limit: int | None) -> Any:
        dataset = load_prepared(data_args.dataset_path, split, limit)
        return dataset.map(render, remove_columns=dataset.column_names)

    train_dataset = prepare(data_args.dataset_train_split, data_args.max_train_samples)
    eval_dataset = None
    if data_args.dataset_eval_split and training_args.eval_strategy != "no":
        eval_dataset = prepare(data_args.dataset_eval_split, None)

    set_model_init_kwargs(training_args, model_args)
    training_args.completion_only_loss = True  # the loss is on the answer tokens only
    trainer = SFTTrainer(
        model=model_args.model_name_or_path, args=training_args, train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, tokenizer, stage="sft", base_model=model_args.model_name_or_path,
                          data=asdict(data_args), train_records=len(train_dataset))


def set_model_init_kwargs(training_args: Any, model_args: Any) -> None:
    """Pass the model options (dtype, attention, revision) to the trainer, which loads the model by name."""
    model_init_kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation,
                         "revision": model_args.model_revision}
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}


def train_and_save(trainer: Any, training_args: Any, tokenizer: Any, **info: Any) -> Any:
    """Train (resuming when asked), then save the adapter, the tokenizer and the run's logs together."""
    trainer.train(resume_from_checkpoint=resume_value(training_args.resume_from_checkpoint))
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        write_run_info(training_args.output_dir, trainer, **info)
    return trainer


def run_cli(parser: Any, train_fn: Any, argv: list[str] | None) -> int:
    """`flexguard train sft|grpo`: parse (flags and `--config` YAML), train, release the trainer."""
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    trainer = train_fn(data_args, training_args, model_args)
    if hasattr(trainer, "end"):
        trainer.end()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(make_parser(prog="flexguard train sft"), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
