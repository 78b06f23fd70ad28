"""prepare → SFT → merge → GRPO → merge on a tiny Qwen3, and the format contract between training and the core."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from flexguard_training import grpo, merge, sft
from flexguard_training.data import main as prepare_main
from flexguard_training.rewards import flexguard_reward

from flexguard_plugins.parsing import parse_output
from flexguard_plugins.prompts import generation_prefill, render_target

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
                "--max_length", "1024", *COMMON]
    trainer = sft.train(*sft.make_parser().parse_args_and_config([*sft_args, "--max_steps", "2"]))
    assert trainer.args.completion_only_loss
    # the loss covers the answer tokens only: the completion, then EOS
    for sample in trainer.train_dataset.select(range(3)):
        answer = [label for label in sample["labels"] if label != -100]
        text = trainer.processing_class.decode(answer)
        assert text.endswith("<|im_end|>") and "[User]" not in text and "system" not in text
        assert parse_output(text.removesuffix("<|im_end|>")).ok, text
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
