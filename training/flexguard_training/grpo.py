"""`flexguard train grpo`: risk alignment with TRL's `GRPOTrainer` and the paper's reward.

Prompts are rendered by the core (`render_prompt`, ending in the think prefill); each sampled
completion is read by the core's parser and rewarded with `R = s_cat + s_score` against the record's
`target_categories` / `target_score` (see `flexguard_training.rewards`). Start from the merged SFT model.

    flexguard train grpo --config grpo_small.yaml --model_name_or_path runs/sft-merged --dataset_path runs/data
    accelerate launch -m flexguard_training.grpo --config configs/grpo_qwen3_8b.yaml   # GPUs, use_vllm: true

On CPU leave `use_vllm` off (plain `generate`); on GPU the configs turn on vLLM generation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flexguard_plugins.prompts import render_prompt
from flexguard_plugins.types import ModerationItem

from .rewards import flexguard_reward
from .sft import load_prepared, run_cli, set_model_init_kwargs, train_and_save

TARGET_COLUMNS = ("target_score", "target_categories")


@dataclass
class GRPODataArguments:
    """Which prepared data to align on and how to render the prompts."""

    dataset_path: str = field(default="", metadata={"help": "Folder written by `flexguard train prepare`."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    reasoning: bool = field(default=False, metadata={
        "help": "Open a <think> block for the policy to reason in (the paper's setting); "
                "false: the empty think block, the model answers directly."})
    system_prompt_path: str | None = field(default=None, metadata={
        "help": "A rubric file replacing the core's system prompt (use the same as in SFT and at inference)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many records."})


def to_grpo_example(record: dict[str, Any], tokenizer: Any, reasoning: bool = False,
                    system_prompt_path: str | None = None) -> dict[str, Any]:
    """One prepared record → a GRPO prompt plus the target columns the reward reads."""
    item = ModerationItem(prompt=record["query"], response=record.get("reply"))
    return {
        "prompt": render_prompt(tokenizer, item, reasoning=reasoning, system_prompt_path=system_prompt_path),
        "target_score": int(record["target_score"]),
        "target_categories": list(record["target_categories"]),
    }


def make_parser(prog: str | None = None):
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((GRPODataArguments, GRPOConfig, ModelConfig), prog=prog)


def train(data_args: GRPODataArguments, training_args: Any, model_args: Any) -> Any:
    """Render the prompts, run `GRPOTrainer` with `flexguard_reward`, save the model and log history."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer, get_peft_config

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (the merged SFT model)")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    dataset = load_prepared(data_args.dataset_path, data_args.dataset_train_split, data_args.max_train_samples)
    dataset = dataset.map(
        lambda record: to_grpo_example(record, tokenizer, data_args.reasoning, data_args.system_prompt_path),
        remove_columns=dataset.column_names,
    )

    set_model_init_kwargs(training_args, model_args)
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path, reward_funcs=[flexguard_reward], args=training_args,
        train_dataset=dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, tokenizer, stage="grpo", base_model=model_args.model_name_or_path,
                          data=asdict(data_args), train_records=len(dataset))


def main(argv: list[str] | None = None) -> int:
    return run_cli(make_parser(prog="flexguard train grpo"), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
