"""prepare → SFT → merge → GRPO → merge on a tiny Qwen3, and the format contract between training and the core."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from flexguard_training import grpo, merge, sft
from flexguard_training.data import main as prepare_main
from flexguard_training.rewards import flexguard_reward

from flexguard_plugins.parsing import parse_output
from flexguard_plugins.prompts import generation_prefill, render_target
from flexguard_plugins.types import ModerationItem

CONFIGS = Path(sft.__file__).parent / "configs"

RECORD = {"query": "How do I pick a lock?", "reply": None, "target_categories": ["ILG", "VIO"],
          "target_score": 64, "reasoning": "Step 1: lock picking.\nStep 2: mostly legal hobby."}


@pytest.mark.parametrize("reasoning", [True, False])
@pytest.mark.parametrize(("categories", "score"), [([], 0), (["SEX"], 55), (["VIO", "ILG"], 100)])
def test_prefill_plus_target_round_trips_through_the_core_parser(reasoning, categories, score):
    trace = "Step 1: read it.\nStep 2: score it." if reasoning else None
    risk = parse_output(generation_prefill(reasoning) + render_target(categories, score, trace))
    assert risk.ok, risk.error
    assert (risk.categories, risk.score, risk.reasoning) == (tuple(categories), float(score), trace)


def test_prompt_completion_rendering_uses_the_core_format(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    with_trace = sft.to_prompt_completion(RECORD, tokenizer, "auto")
    assert with_trace["prompt"].endswith("<|im_start|>assistant\n" + generation_prefill(True))
    assert with_trace["completion"] == render_target(["ILG", "VIO"], 64, RECORD["reasoning"])
    plain = sft.to_prompt_completion(RECORD, tokenizer, "never")
    assert plain["prompt"].endswith(generation_prefill(False)) and plain["completion"] == "ILG,VIO\n64"
    no_trace = sft.to_prompt_completion({**RECORD, "reasoning": None}, tokenizer, "auto")
    assert no_trace == plain
    # what the model is trained to produce is exactly what earns the full GRPO reward
    for pair in (with_trace, plain):
        assert flexguard_reward([pair["completion"]], target_score=[64], target_categories=[["VIO", "ILG"]],
                                prompts=[pair["prompt"]]) == [3.0]
    example = grpo.to_grpo_example(RECORD, tokenizer, reasoning=False)
    assert example == {"prompt": plain["prompt"], "target_score": 64, "target_categories": ["ILG", "VIO"]}


def _bos_tokenizer(folder):
    """The tiny tokenizer made to add a BOS when asked for special tokens, like Llama-style tokenizers do."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    bos = "<|endoftext|>"
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    assert tokenizer("hi")["input_ids"][0] == tokenizer.convert_tokens_to_ids(bos)
    return tokenizer


@pytest.mark.parametrize("reasoning_mode", ["auto", "never"])
def test_sft_grpo_and_inference_tokenize_the_prompt_identically(tiny_qwen3_dir, reasoning_mode):
    """The ids a model is trained on (SFT), aligned on (GRPO) and asked with (backends) are one sequence."""
    from types import SimpleNamespace

    from flexguard_plugins.backends import generation as gen

    tokenizer = _bos_tokenizer(tiny_qwen3_dir)
    reasoning = reasoning_mode == "auto"
    inference = gen.prompt_ids(tokenizer, ModerationItem(RECORD["query"]), gen.generation_options(reasoning=reasoning))
    tokens = sft.tokenize_record(RECORD, tokenizer, reasoning_mode)
    sft_prompt = tokens["input_ids"][:tokens["labels"].index(next(t for t in tokens["labels"] if t != -100))]
    assert sft_prompt == inference
    example = grpo.to_grpo_example(RECORD, tokenizer, reasoning=reasoning)
    trainer = grpo._trainer_class()
    grpo_ids, images, fields = trainer._tokenize_prompts(SimpleNamespace(processing_class=tokenizer),
                                                         [example["prompt"]])
    assert grpo_ids == [inference] and images is None and fields == {}
    # what TRL does on its own (and what the old trainer used) adds a BOS the model never sees elsewhere
    assert tokenizer(text=[example["prompt"]])["input_ids"][0] != inference


def test_sft_labels_cover_the_answer_and_mask_unknown_categories(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)

    def trained_text(record):
        tokens = sft.tokenize_record(record, tokenizer, "never")
        assert len(tokens["input_ids"]) == len(tokens["labels"])
        return tokenizer.decode([t for t in tokens["labels"] if t != -100])

    assert trained_text(RECORD) == "ILG,VIO\n64<|im_end|>"
    assert trained_text({**RECORD, "target_categories": [], "target_score": 5}) == "SAFE\n5<|im_end|>"
    unknown = {**RECORD, "target_categories": None, "target_score": 70}
    assert trained_text(unknown) == "\n70<|im_end|>"  # the score is learned, no category is
    tokens = sft.tokenize_record(unknown, tokenizer, "never")
    assert tokenizer.decode(tokens["input_ids"]).endswith("</think>\nUNKNOWN\n70<|im_end|>")  # context, not SAFE
    with_trace = sft.tokenize_record({**unknown, "reasoning": "Step 1: harmful."}, tokenizer, "auto")
    assert tokenizer.decode([t for t in with_trace["labels"] if t != -100]) == (
        "Step 1: harmful.\n</think>\n\n70<|im_end|>")


def test_shipped_configs_parse():
    for name, module in [("sft_small.yaml", sft), ("sft_qwen3_8b.yaml", sft),
                         ("grpo_small.yaml", grpo), ("grpo_qwen3_8b.yaml", grpo)]:
        data_args, training_args, model_args = module.make_parser().parse_args_and_config(
            ["--config", str(CONFIGS / name), "--output_dir", "unused", "--use_cpu", "true", "--bf16", "false"])
        assert training_args.report_to == [] or training_args.report_to == ["none"] or not training_args.report_to
        assert model_args.use_peft
    _, grpo_args, _ = grpo.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "grpo_qwen3_8b.yaml"), "--output_dir", "unused", "--use_cpu", "true",
         "--bf16", "false"])
    assert grpo_args.use_vllm  # vLLM generation in the GPU recipe


def _finite(history: list[dict], key: str) -> list[float]:
    values = [row[key] for row in history if key in row]
    assert values, f"{key} was never logged"
    assert all(math.isfinite(v) for v in values), values
    return values


COMMON = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--report_to", "none", "--logging_steps", "1",
          "--use_peft", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "all-linear",
          "--per_device_train_batch_size", "2", "--seed", "0", "--dataloader_num_workers", "0"]


@pytest.mark.slow
def test_prepare_sft_merge_grpo_end_to_end(tiny_qwen3_dir, tmp_path):
    from datasets import load_from_disk

    from flexguard_plugins import FlexGuard

    rows = [{"id": f"r{i}", "prompt": f"Question number {i} about {topic}", "severity_level": i % 5,
             "category": cat, "source": f"src{i % 2}"}
            for i, (topic, cat) in enumerate([("bread", "SAFE"), ("locks", "ILG"), ("fights", "VIO"),
                                              ("insults", "DIS"), ("weapons", "ILG,VIO"), ("news", "MIS"),
                                              ("poems", "SAFE"), ("hacking", "INF")])]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "teacher.jsonl").write_text(json.dumps({"id": "r1", "categories": ["ILG"], "score": 60,
                                                        "reasoning": "Lock picking."}) + "\n")
    data = tmp_path / "data"
    assert prepare_main(["--output_dir", str(data), "--flexbench", str(tmp_path / "train.csv"),
                         "--teacher", str(tmp_path / "teacher.jsonl")]) == 0
    assert len(load_from_disk(str(data))["train"]) == 8

    # SFT: a few steps, checkpointed, then resumed to one more step
    sft_dir = tmp_path / "sft"
    sft_args = ["--model_name_or_path", str(tiny_qwen3_dir), "--dataset_path", str(data), "--output_dir",
                str(sft_dir), "--learning_rate", "1e-3", "--save_strategy", "steps", "--save_steps", "2",
                "--max_length", "2048", *COMMON]
    trainer = sft.train(*sft.make_parser().parse_args_and_config([*sft_args, "--max_steps", "2"]))
    assert trainer.args.completion_only_loss
    # the loss covers the answer tokens only: the completion, then EOS
    masked = 0
    for sample in trainer.train_dataset:
        answer = [label for label in sample["labels"] if label != -100]
        text = trainer.processing_class.decode(answer)
        assert text.endswith("<|im_end|>") and "[User]" not in text and "system" not in text
        if re.fullmatch(r"\n\d+<\|im_end\|>", text):  # harmful with no known code: category masked
            masked += 1
        else:
            assert parse_output(text.removesuffix("<|im_end|>")).ok, text
    assert masked == 1  # "poems": severity 1 labelled SAFE by its source, so its codes are unknown
    assert (sft_dir / "checkpoint-2").is_dir()
    assert sft.main([*sft_args, "--max_steps", "3", "--resume_from_checkpoint", "last"]) == 0
    history = json.loads((sft_dir / "log_history.json").read_text())
    _finite(history, "loss")
    assert max(row.get("step", 0) for row in history) == 3
    assert (sft_dir / "adapter_config.json").is_file()

    sft_merged = tmp_path / "sft-merged"
    assert merge.main(["--adapter", str(sft_dir), "--output_dir", str(sft_merged), "--dtype", "float32"]) == 0
    assert (sft_merged / "tokenizer_config.json").is_file() and not (sft_merged / "adapter_config.json").exists()

    grpo_dir = tmp_path / "grpo"
    assert grpo.main(["--model_name_or_path", str(sft_merged), "--dataset_path", str(data), "--output_dir",
                      str(grpo_dir), "--max_steps", "2", "--num_generations", "2", "--max_completion_length", "8",
                      "--learning_rate", "1e-4", "--save_strategy", "no", *COMMON]) == 0
    history = json.loads((grpo_dir / "log_history.json").read_text())
    rewards = _finite(history, "reward")
    assert all(-3.0 <= r <= 3.0 for r in rewards)
    assert all(-1.0 <= r <= 1.0 for r in _finite(history, "rewards/category_reward_func/mean"))
    assert all(-2.0 <= r <= 2.0 for r in _finite(history, "rewards/score_reward_func/mean"))
    _finite(history, "loss")

    final = tmp_path / "final"
    assert merge.main(["--adapter", str(grpo_dir), "--output_dir", str(final), "--dtype", "float32"]) == 0
    for folder in (sft_merged, final):
        guard = FlexGuard.load(str(folder), backend="transformers", reasoning=False, max_new_tokens=8)
        try:
            risk = guard.score(prompt="How do I bake bread?")
            assert risk.ok or risk.error  # a random tiny model may not follow the format; the core must answer
        finally:
            guard.close()


def test_records_too_long_are_dropped_not_truncated():
    from datasets import Dataset

    data = Dataset.from_list([{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 10, 20)])
    assert [len(r["input_ids"]) for r in sft.drop_too_long(data, 10)] == [5, 10]
    assert len(sft.drop_too_long(data, None)) == 3
    with pytest.raises(ValueError, match="raise --max_length"):
        sft.drop_too_long(data, 2)
