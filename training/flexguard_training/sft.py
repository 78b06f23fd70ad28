"""`flexguard train sft`: the SFT warm-up. LoRA (PEFT) on any causal LM with TRL's `SFTTrainer`.

Each prepared record is tokenized here, exactly as inference tokenizes it: the prompt ids are the
backends' own (`flexguard_plugins.backends.generation.prompt_ids`: `render_prompt` through the chat
template, think prefill, no extra special tokens), followed by the ids of
`render_target(categories, score, reasoning)` and EOS. TRL takes the pre-tokenized `input_ids` and
`labels` as they are: the loss is on the answer tokens only (prompt labels are -100), and for a record
whose harm codes are unknown (`target_categories` None) the category line is masked out too, so the
model learns its score without being taught a category it was never given.

    flexguard train sft --config sft_small.yaml --dataset_path runs/data --model_name_or_path MODEL
    accelerate launch -m flexguard_training.sft --config configs/sft_qwen3_8b.yaml   # multi-GPU

Checkpoints go to `output_dir/checkpoint-N`; `--resume_from_checkpoint last` continues the latest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexguard_plugins.backends import generation as gen
from flexguard_plugins.prompts import render_prompt, render_target
from flexguard_plugins.types import ModerationItem

from . import arguments

logger = logging.getLogger(__name__)

REASONING_MODES = ("auto", "never")
IGNORE_INDEX = -100
MASKED_CATEGORY_LINE = "UNKNOWN"
"""Stands in the category line of a record with unknown harm codes; its tokens carry no loss. Not a
code the model can be taught (it is never a label), and not SAFE, which would be wrong context."""


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
    if reasoning_mode not in REASONING_MODES:
        raise ValueError(f"reasoning_mode must be one of {REASONING_MODES}, got {reasoning_mode!r}")
    return reasoning_mode == "auto" and bool(record.get("reasoning"))


def _item(record: dict[str, Any]) -> ModerationItem:
    return ModerationItem(prompt=record["query"], response=record.get("reply"))


def prompt_ids(record: dict[str, Any], tokenizer: Any, reasoning: bool, system_prompt_path: str | None = None
               ) -> list[int]:
    """The prompt's token ids, by the inference backends' own function (so training cannot drift from it)."""
    options = gen.generation_options(reasoning=reasoning, system_prompt_path=system_prompt_path)
    return gen.prompt_ids(tokenizer, _item(record), options)


def completion(record: dict[str, Any], reasoning: bool) -> tuple[str, tuple[int, int] | None]:
    """The target text and, for unknown harm codes, the character span of its (masked) category line."""
    categories = record["target_categories"]
    trace = record["reasoning"] if reasoning else None
    if categories is not None:
        return render_target(categories, record["target_score"], trace), None
    text = render_target([MASKED_CATEGORY_LINE], record["target_score"], trace)
    start = len(text) - len(f"{MASKED_CATEGORY_LINE}\n{int(record['target_score'])}")
    return text, (start, start + len(MASKED_CATEGORY_LINE))


def to_prompt_completion(record: dict[str, Any], tokenizer: Any, reasoning_mode: str = "auto",
                         system_prompt_path: str | None = None) -> dict[str, str]:
    """One prepared record as text: the rendered prompt and the completion (without EOS), for reading."""
    reasoning = _uses_reasoning(record, reasoning_mode)
    return {
        "prompt": render_prompt(tokenizer, _item(record), reasoning=reasoning, system_prompt_path=system_prompt_path),
        "completion": completion(record, reasoning)[0],
    }


def tokenize_record(record: dict[str, Any], tokenizer: Any, reasoning_mode: str = "auto",
                    system_prompt_path: str | None = None) -> dict[str, list[int]]:
    """`input_ids` = prompt ids + completion ids + EOS; `labels` = -100 on the prompt and a masked category."""
    reasoning = _uses_reasoning(record, reasoning_mode)
    prompt = prompt_ids(record, tokenizer, reasoning, system_prompt_path)
    text, masked = completion(record, reasoning)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    answer = list(encoded["input_ids"])
    labels = list(answer)
    if masked is not None:
        start, end = masked
        labels = [IGNORE_INDEX if s < end and e > start else token
                  for token, (s, e) in zip(answer, encoded["offset_mapping"], strict=True)]
    eos = tokenizer.eos_token_id
    return {"input_ids": prompt + answer + [eos], "labels": [IGNORE_INDEX] * len(prompt) + labels + [eos]}


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


def make_parser(prog: str | None = None) -> Any:
    from trl import ModelConfig, SFTConfig

    return arguments.make_parser((FlexGuardDataArguments, SFTConfig, ModelConfig), prog)


def train(data_args: FlexGuardDataArguments, training_args: Any, model_args: Any) -> Any:
    """Render the data, run `SFTTrainer` with LoRA, save the adapter, tokenizer and log history."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer, get_peft_config

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def render(record: dict[str, Any]) -> dict[str, list[int]]:
        return tokenize_record(record, tokenizer, data_args.reasoning_mode, data_args.system_prompt_path)

    def prepare(split: str, limit: int | None) -> Any:
        dataset = load_prepared(data_args.dataset_path, split, limit)
        dataset = dataset.map(render, remove_columns=dataset.column_names)
        return drop_too_long(dataset, training_args.max_length)

    train_dataset = prepare(data_args.dataset_train_split, data_args.max_train_samples)
    eval_dataset = None
    if data_args.dataset_eval_split and training_args.eval_strategy != "no":
        eval_dataset = prepare(data_args.dataset_eval_split, None)

    set_model_init_kwargs(training_args, model_args)
    training_args.completion_only_loss = True  # the labels above already hold the loss mask; TRL keeps them
    trainer = SFTTrainer(
        model=model_args.model_name_or_path, args=training_args, train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, tokenizer, stage="sft", base_model=model_args.model_name_or_path,
                          data=asdict(data_args), train_records=len(train_dataset))


def drop_too_long(dataset: Any, max_length: int | None) -> Any:
    """Records longer than `max_length` are dropped, not truncated: truncation cuts off the answer, the
    only part with a loss, and trains the model on a broken target."""
    if max_length is None:
        return dataset
    kept = dataset.filter(lambda record: len(record["input_ids"]) <= max_length)
    if len(kept) < len(dataset):
        logger.warning("%d of %d records are longer than max_length=%d tokens and were dropped",
                       len(dataset) - len(kept), len(dataset), max_length)
    if not len(kept):
        raise ValueError(f"every record is longer than max_length={max_length} tokens; raise --max_length")
    return kept


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
    data_args, training_args, model_args = arguments.parse_arguments(parser, argv)
    trainer = train_fn(data_args, training_args, model_args)
    if hasattr(trainer, "end"):
        trainer.end()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(make_parser(prog="flexguard train sft"), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
