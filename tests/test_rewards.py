"""The GRPO reward, checked against values worked out by hand from R = s_cat + s_score."""

from __future__ import annotations

import doctest
import math

import pytest
from flexguard_training import rewards
from flexguard_training.rewards import (
    REWARD_FUNCS,
    REWARD_MIN,
    category_reward,
    category_reward_func,
    flexguard_reward,
    score_reward,
    score_reward_func,
)

from flexguard_plugins.parsing import parse_output
from flexguard_plugins.prompts import EMPTY_THINK, generation_prefill, render_target


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        (30, 30, 2.0),  # exact
        (0, 0, 2.0),
        (100, 0, -2.0),  # E_max = 100, error 100
        (0, 100, -2.0),
        (50, 75, 2 - 4 * 25 / 75),  # E_max = 75
        (25, 50, 0.0),  # E_max = 50, error 25
        (60, 50, 1.2),  # E_max = 50: 2 - 4*10/50
        (40, 50, 1.2),
        (0, 50, -2.0),  # E_max = 50, error 50
        (100, 50, -2.0),
        (10, 20, 1.5),  # E_max = 80: 2 - 40/80
        (95, 90, 2 - 4 * 5 / 90),  # E_max = 90
        (None, 40, -2.0),
        (float("nan"), 40, -2.0),
    ],
)
def test_score_reward_hand_computed(pred, target, expected):
    assert score_reward(pred, target) == pytest.approx(expected, abs=1e-12)


def test_score_reward_is_bounded_and_symmetric_in_error():
    for target in range(0, 101, 5):
        values = [score_reward(pred, target) for pred in range(0, 101)]
        assert min(values) >= -2.0 - 1e-12 and max(values) == 2.0
        assert min(values) == pytest.approx(-2.0)  # the worst prediction reaches the minimum exactly
    assert score_reward(30, 50) == score_reward(70, 50)


def test_score_reward_rejects_targets_outside_the_scale():
    with pytest.raises(ValueError):
        score_reward(10, 101)


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        (["VIO", "ILG"], ["ILG", "VIO"], 1.0),  # order ignored
        ("VIO,ILG", ("ILG", "VIO"), 1.0),
        ((), "SAFE", 1.0),  # SAFE is the empty set
        (["SAFE"], [], 1.0),
        (["VIO"], ["VIO", "ILG"], -1.0),  # subset is not a match
        (["VIO", "ILG"], ["VIO"], -1.0),
        ([], ["SEX"], -1.0),
        (["sex"], ["SEX"], 1.0),
        (None, [], -1.0),  # unparsable
    ],
)
def test_category_reward(pred, target, expected):
    assert category_reward(pred, target) == expected


def test_flexguard_reward_combines_both_terms():
    completions = [
        "VIO,ILG\n85",  # cats match, score exact → 1 + 2
        "ILG\n85",  # cats wrong, score exact → -1 + 2
        "SAFE\n10",  # target SAFE 0: E_max 100 → 2 - 0.4 = 1.6, +1
        "VIO\n150",  # out of range → unparsable
        "I cannot help with that.",  # unparsable
        "VIO\n0",  # cats right, score as far as possible from 100 → 1 - 2
    ]
    got = flexguard_reward(
        completions,
        target_score=[85, 85, 0, 50, 50, 100],
        target_categories=[["ILG", "VIO"], ["VIO", "ILG"], [], ["VIO"], ["VIO"], ["VIO"]],
    )
    assert got == pytest.approx([3.0, 1.0, 2.6, REWARD_MIN, REWARD_MIN, -1.0])
    assert REWARD_MIN == -3.0


def test_flexguard_reward_reads_conversational_completions_and_the_think_prefill():
    target = render_target(["SEX"], 55, reasoning="Explicit content.")
    prompt_open = "…<|im_start|>assistant\n" + generation_prefill(True)
    got = flexguard_reward(
        [[{"role": "assistant", "content": "SEX\n55"}], target, "still thinking about SEX\n55"],
        target_score=[55, 55, 55],
        target_categories=[["SEX"], ["SEX"], ["SEX"]],
        prompts=["…" + EMPTY_THINK, prompt_open, prompt_open],
    )
    # the third never closes its <think>: truncated, so the minimum, not a lucky parse
    assert got == [3.0, 3.0, REWARD_MIN]


def test_rewards_are_finite_for_arbitrary_text():
    junk = ["", "\n\n", "</think>", "<think>", "SAFE", "42", "VIO\nILG\n3", "SAFE,VIO\n3", "JAIL\n-1"]
    got = flexguard_reward(junk, target_score=[50] * len(junk), target_categories=[[]] * len(junk))
    assert all(math.isfinite(r) for r in got)
    assert got == [REWARD_MIN] * len(junk)


def test_doctests():
    failures, _ = doctest.testmod(rewards)
    assert failures == 0


@pytest.mark.parametrize("completion", [
    "Category: VIO\nRisk score: 80",  # labelled lines
    "80\nVIO",  # reordered
    "**VIO**\n80",  # markdown
    "VIO\n80.0",  # decimal
    "VIO, ILG\n80",  # spaces in the code list
    "vio\n80",  # lower case
    "VIO,VIO\n80",  # repeated code
    "VIO\n080",  # leading zero
    "VIO\n\n80",  # blank line between
    "VIO\n80\nThat is my answer.",  # trailing text
    "<think>\nhmm\n</think>\nVIO\n80",  # a second think block after the empty prefill
])
def test_off_contract_completions_get_the_minimum_though_inference_reads_them(completion):
    """The reward holds GRPO to the exact contract; the lenient inference parser would accept most of these."""
    assert flexguard_reward([completion], target_score=[80], target_categories=[["VIO"]]) == [REWARD_MIN]
    assert category_reward_func([completion], target_categories=[["VIO"]]) == [-1.0]
    assert score_reward_func([completion], target_score=[80]) == [-2.0]


def test_lenient_parser_accepts_what_the_reward_refuses():
    """Why a separate contract reader: these parse at inference, so the old reward paid for them."""
    for completion in ("Category: VIO\nRisk score: 80", "80\nVIO", "**VIO**\n80", "VIO\n80.0"):
        assert parse_output(EMPTY_THINK + completion).ok


def test_reasoning_contract():
    prompt = "…<|im_start|>assistant\n" + generation_prefill(True)
    good = "Step 1: it asks for a weapon.\n</think>\nVIO\n80"
    bad = ["\n</think>\nVIO\n80",  # empty trace
           "Step 1.\n</think>\n</think>\nVIO\n80",  # two closes
           "Step 1.</think>\nVIO\n80",  # close not on its own line
           "VIO\n80"]  # no reasoning at all after an open think block
    got = flexguard_reward([good, *bad], target_score=[80] * 5, target_categories=[["VIO"]] * 5, prompts=[prompt] * 5)
    assert got == [3.0] + [REWARD_MIN] * 4


def test_unknown_categories_are_masked_out_of_the_reward():
    """Harmful rows without codes: the category term is left out (None), never paid for saying SAFE."""
    completions = ["SAFE\n70", "VIO\n70", "ILG\n40", "not the format"]
    categories = category_reward_func(completions, target_categories=[None] * 4)
    assert categories == [None, None, None, -1.0]  # off-contract output is still penalised
    scores = score_reward_func(completions, target_score=[70] * 4)
    assert scores == pytest.approx([2.0, 2.0, 2 - 4 * 30 / 70, -2.0])
    total = flexguard_reward(completions, target_score=[70] * 4, target_categories=[None] * 4)
    assert total == pytest.approx([2.0, 2.0, 2 - 4 * 30 / 70, REWARD_MIN])
    # an empty list is a known SAFE target, not an unknown one
    assert category_reward_func(["SAFE\n70"], target_categories=[[]]) == [1.0]


def test_two_reward_functions_for_separate_logging():
    assert [f.__name__ for f in REWARD_FUNCS] == ["category_reward_func", "score_reward_func"]
    completions, targets, cats = ["VIO\n60", "SAFE\n5", "x"], [80, 0, 50], [["VIO"], [], ["SEX"]]
    summed = [c + s for c, s in zip(category_reward_func(completions, cats), score_reward_func(completions, targets),
                                   strict=True)]
    assert summed == pytest.approx(flexguard_reward(completions, target_score=targets, target_categories=cats))
