"""`flexguard train grpo`: risk alignment with TRL's `GRPOTrainer` and the paper's reward.

Prompts are rendered by the core (`render_prompt`, ending in the think prefill) and tokenized exactly
as SFT and the inference backends tokenize them (no special tokens added on top of the chat template:
`FlexGuardGRPOTrainer`). Each sampled completion is held to the exact output contract and rewarded
with `R = s_cat + s_score` against the record's `target_categories` / `target_score`, as two reward
functions so TRL logs the category and score terms apart (see `flexguard_training.rewards`).
Start from the merged SFT model.

    flexguard train grpo --config grpo_small.yaml --model_name_or_path runs/sft-merged --dataset_path runs/data
    accelerate launch -m flexguard_training.grpo --config configs/grpo_qwen3_8b.yaml   # GPUs, use_vllm: true

On CPU leave `use_vllm` off (plain `generate`); on GPU the configs turn on vLLM generation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flexguard_plugins.backends import generation as gen
from flexguard_plugins.prompts import render_prompt
from flexguard_plugins.types import ModerationItem

from . import arguments
from .rewards import REWARD_FUNCS
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
    """One prepared record → a GRPO prompt plus the target columns the reward reads (categories None: unknown)."""
    item = ModerationItem(prompt=record["query"], response=record.get("reply"))
    categories = record["target_categories"]
    return {
        "prompt": render_prompt(tokenizer, item, reasoning=reasoning, system_prompt_path=system_prompt_path),
        "target_score": int(record["target_score"]),
        "target_categories": None if categories is None else list(categories),
    }


def tokenize_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Rendered prompts → ids the way inference and SFT make them (the chat template holds every special token)."""
    return [gen.encode(tokenizer, prompt) for prompt in prompts]


def _trainer_class() -> type:
    from trl import GRPOTrainer

    class FlexGuardGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose text prompts are tokenized without added special tokens.

        TRL tokenizes text prompts with `processing_class(text=prompts)`, which adds the tokenizer's
        special tokens (a second BOS on Llama-style tokenizers): the policy would then be aligned on
        inputs it never sees in SFT or at inference.
        """

        def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
            if prompts and all(isinstance(p, str) for p in prompts):
                return tokenize_prompts(self.processing_class, prompts), None, {}
            return super()._tokenize_prompts(prompts)

    return FlexGuardGRPOTrainer


def make_parser(prog: str | None = None) -> Any:
    from trl import GRPOConfig, ModelConfig

    return arguments.make_parser((GRPODataArguments, GRPOConfig, ModelConfig), prog)


def train(data_args: GRPODataArguments, training_args: Any, model_args: Any) -> Any:
    """Render the prompts, run GRPO with the category and score rewards, save the model and log history."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import get_peft_config

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (the merged SFT model)")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    records = load_prepared(data_args.dataset_path, data_args.dataset_train_split, data_args.max_train_samples)
    # from_list sees every row at once, so a column of lists with unknown (None) entries gets one type
    dataset = Dataset.from_list([to_grpo_example(record, tokenizer, data_args.reasoning, data_args.system_prompt_path)
                                 for record in records])

    set_model_init_kwargs(training_args, model_args)
    trainer = _trainer_class()(
        model=model_args.model_name_or_path, reward_funcs=list(REWARD_FUNCS), args=training_args,
        train_dataset=dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, tokenizer, stage="grpo", base_model=model_args.model_name_or_path,
                          data=asdict(data_args), train_records=len(dataset))


def main(argv: list[str] | None = None) -> int:
    return run_cli(make_parser(prog="flexguard train grpo"), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
