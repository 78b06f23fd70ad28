"""The lite trainer's mix keeps its held-out split of real user prompts (`HELDOUT_SPLITS`) out of training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from flexguard_training.lite.data import HELDOUT_SPLITS, MIXES, heldout_split, in_heldout_split, training_examples
from flexguard_training.lite.replies import read_questions, teacher_line
from flexguard_training.sources import DATA_ROOT, load_source


def write_toxic_chat(root, count: int) -> None:
    folder = root / "toxic_chat_human"
    folder.mkdir(parents=True)
    instances = [{"id": str(k), "instance": f"user prompt number {k} about topic {k * 7 % 13}",
                  "annotations": {"toxicity": {"majority_human": "1" if k % 5 == 0 else "0"},
                                  "jailbreaking": {"majority_human": "0"}}} for k in range(count)]
    (folder / "toxic_chat_train.json").write_text(json.dumps({"instances": instances}), encoding="utf-8")


def test_the_split_is_a_fixed_share_chosen_by_the_text(tmp_path):
    write_toxic_chat(tmp_path, 600)
    records = load_source("toxic_chat", tmp_path)
    held = heldout_split("toxic_chat", tmp_path)
    assert abs(len(held) / len(records) - HELDOUT_SPLITS["toxic_chat"]) < 0.08
    first = held[0]
    assert in_heldout_split(replace(first, prompt=f"  {first.prompt.upper()} "))  # the text decides, as dedup reads it
    assert not in_heldout_split(replace(first, source="davidson"))  # a source without a split is never held out


@pytest.mark.skipif(not (DATA_ROOT / "toxic_chat_human").is_dir(), reason="needs ../shared/data")
def test_the_v3_mix_trains_on_no_held_out_prompt_under_two_seeds():
    held = {r.prompt for r in heldout_split("toxic_chat")}  # the real ToxicChat in ../shared/data
    assert len(held) > 500
    for seed in (0, 1):
        rows, counts = training_examples(["toxic_chat", "alpaca_harmless_val"], [], None, budget=3000,
                                         augment_share=0.3, seed=seed, mix=MIXES["v3"])
        trained = {e.prompt for e in rows if e.source == "toxic_chat"}
        assert counts["toxic_chat"] > 300
        assert not trained & held
        long_held = [h for h in held if len(h) >= 40]  # short ones ("how are you doing") recur inside other prompts
        assert not any(h in e.prompt + (e.response or "") for e in rows for h in long_held)  # nor in augmented rows


def test_replies_to_harmless_questions_are_benign_teacher_lines(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("# a comment\nHow do I kill a stuck process?\n\n", encoding="utf-8")
    assert read_questions(path) == ["How do I kill a stuck process?"]
    line = json.loads(teacher_line({"kind": "helpful", "question": "How do I kill a stuck process?",
                                    "reply": "Use kill -9 with its PID."}))
    assert line["score"] == 0 and line["categories"] == [] and line["response"] == "Use kill -9 with its PID."


def test_a_harmful_reply_diluted_in_a_long_benign_reply_keeps_its_tier():
    from flexguard_training.lite.data import augment
    from flexguard_training.lite.example import Example

    harm = "Mix the two chemicals in a closed room and hand the fumes to your neighbour."
    train = [Example("How to poison a neighbour?", None, "advbench", 4, True, ("VIO",)),
             Example("What is a good name for a cat?", None, "alpaca_harmless_val", 0, False),
             Example("The garden looks lovely in spring.", None, "alpaca_harmless_val", 0, False),
             Example("Tell me how to poison someone.", harm, "jbb_responses", 4, True, ("VIO",), 0.0)]
    assert not [e for e in augment(train, per_kind=40, seed=0) if e.source == "aug_dilution_reply"]  # r10a: none
    rows = [e for e in augment(train, per_kind=40, seed=0, mix=MIXES["v3"]) if e.source == "aug_dilution_reply"]
    assert len(rows) == 20
    for row in rows:
        assert row.response is not None and harm in row.response and row.response != harm
        assert row.prompt in (train[1].prompt, train[2].prompt) and row.severity == 4 and row.categories == ("VIO",)
        assert row.response.count(".") <= MIXES["v3"].dilution_sentences + 1


@pytest.mark.skipif(not (DATA_ROOT / "toxic_chat_human").is_dir(), reason="needs ../shared/data")
def test_the_default_mix_still_draws_what_the_shipped_weights_were_trained_on():
    """`flexguard train lite` with its defaults (the r10a mix) draws the same ToxicChat prompts the shipped weights
    saw, as recorded for bench/lite_user_prompts.py: the v3 mix did not move the shipped recipe."""
    import hashlib
    from pathlib import Path

    from flexguard_training.lite.cli import make_parser
    from flexguard_training.lite.data import HELDOUT_SOURCES, TRAIN_SOURCES

    from flexguard_plugins.text import dedup_key

    args = make_parser().parse_args([])
    rows, _ = training_examples(list(TRAIN_SOURCES), list(HELDOUT_SOURCES), None, budget=args.budget,
                                augment_share=args.augment_share, seed=args.seed, mix=MIXES[args.mix])
    drawn = {hashlib.sha256(dedup_key(e.prompt).encode()).hexdigest() for e in rows if e.source == "toxic_chat"}
    lines = (Path(__file__).parents[1] / "bench" / "data" / "lite_r10a_toxic_chat.sha256").read_text().splitlines()
    assert drawn == {line for line in lines if line and not line.startswith("#")}
