"""`flexguard train reproduce`: every step on the tiny Qwen3 and small real sources, then a rerun that runs nothing."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
from flexguard_training import reproduce as R
from flexguard_training.sources import DATA_ROOT

from flexguard_plugins.smollm2 import SmallModelIntegrityError, check_sources

TINY = ["--lora_target_modules", "all-linear", "--bf16", "false"]
ONE_STEP_AN_EPOCH = ["--per_device_train_batch_size", "16"]


def test_grpo_curve_reads_rewards_and_zero_variance_share(tmp_path):
    log = tmp_path / "log_history.json"
    log.write_text(json.dumps([{"loss": 0.1, "step": 1},
                               {"reward": 1.5, "rewards/category_reward_func/mean": 0.5,
                                "rewards/score_reward_func/mean": 1.0, "frac_reward_zero_std": 0.25, "step": 1},
                               {"reward": 2.0, "rewards/category_reward_func/mean": 1.0,
                                "rewards/score_reward_func/mean": 1.0, "frac_reward_zero_std": 0.0, "step": 2}]))
    assert R.grpo_curve(log) == {"reward": [1.5, 2.0], "category": [0.5, 1.0], "score": [1.0, 1.0],
                                 "zero_std": [0.25, 0.0]}


def test_resume_flag_only_when_a_checkpoint_exists(tmp_path):
    assert R.resume_flag(tmp_path) == []
    (tmp_path / "checkpoint-5").mkdir()
    assert R.resume_flag(tmp_path) == ["--resume_from_checkpoint", "last"]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "ethos").is_dir(), reason="the public data sets are not here")
def test_reproduce_runs_every_step_then_a_rerun_runs_none(tiny_qwen3_dir, tmp_path, monkeypatch):
    args = R.ReproduceArguments(
        run_dir=str(tmp_path / "run"), base_model=str(tiny_qwen3_dir), sources=["advbench", "oktest", "jbb_responses"],
        holdout_sources=["ethos", "pyrit_harm"], seeds=[7], max_per_tier_mode=4, holdout_per_tier=1,
        sft_epochs=2, sft_save_steps=1, grpo_steps=1, sft_args=[*TINY, *ONE_STEP_AN_EPOCH, "--max_length", "2048"],
        grpo_args=[*TINY, "--num_generations", "4", "--per_device_train_batch_size", "8"])
    results_md = R.reproduce(args)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == ["flag everything", "embedded scorer (lite)", "base (prompted)", "SFT step 1", "SFT",
                          "SFT+GRPO seed 7"]
    for name, result in rows.items():
        for mode in R.MODES:
            assert set(result[mode]["false_negative_rate"]) == {"strict", "moderate", "loose"}, name
    assert rows["flag everything"]["prompt"]["false_positive_rate"]["moderate"] == 1.0
    curve = results["grpo"]["7"]
    assert len(curve["reward"]) == 1 and 0.0 <= curve["zero_std"][0] <= 1.0
    text = results_md.read_text()
    assert text.count("| prompt (") == len(rows) and text.count("| response (") == len(rows)

    shipped = R.ship(tmp_path / "run", args, tmp_path / "ship")
    card = check_sources(shipped)  # the hashes it records are those of the files it wrote
    assert card["adapters"] == ["sft", "grpo"] and card["seed"] == 7
    options = card["backend_options"]
    heldout = tmp_path / "run" / "data" / "heldout"
    longest = max(len(row[mode]) for mode in ("prompt", "response")
                  for row in csv.DictReader(open(heldout / f"Guard_{mode}_test.csv", encoding="utf-8")))
    assert options["languages"] == ["en"] and options["max_judged_chars"] == longest  # what it was measured on
    assert card["heldout_metrics"]["response"]["n"] == rows["SFT+GRPO seed 7"]["response"]["n"]
    assert all(entry["license"] for entry in card["train_sources"].values())
    adapter = shipped / "grpo" / "adapter_model.safetensors"
    data = adapter.read_bytes()
    adapter.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SmallModelIntegrityError, match="grpo"):
        check_sources(shipped)

    def no_step(*_args, **_kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(subprocess, "run", no_step)
    assert R.reproduce(args).read_text() == text
