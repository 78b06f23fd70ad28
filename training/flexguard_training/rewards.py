"""FlexGuard's GRPO reward: category agreement plus a score term scaled by the worst possible error.

    R = s_cat + s_score
    s_cat   = +1 when the predicted harm codes equal the target's as a set, else −1
    s_score = 2 − 4·|r̂ − r| / E_max,   E_max = max(r, 100 − r)

Category matching rule (ours; the paper says only "±1"): both sides are reduced to a set of harm
codes, order and duplicates ignored, `SAFE` meaning the empty set; the reward is +1 only for an exact
set match. `E_max` is the largest error any prediction in [0, 100] can make for target r, so s_score
runs from +2 (exact) to −2 (as wrong as possible) whatever the target. Unparsable output (the core's
parser says `ok=False`) gets the minimum of both terms: −1 − 2 = −3.

Completions are read with the core's `parse_output`, so the reward and inference agree on the format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flexguard_plugins.parsing import parse_output
from flexguard_plugins.prompts import generation_prefill

CATEGORY_MATCH = 1.0
CATEGORY_MISMATCH = -1.0
SCORE_MAX = 2.0
SCORE_MIN = -2.0
REWARD_MIN = CATEGORY_MISMATCH + SCORE_MIN
"""What an unparsable completion earns (−3)."""


def category_set(categories: str | Iterable[str] | None) -> frozenset[str]:
    """Harm codes as a set: `"VIO,ILG"`, `["ILG", "VIO"]` and `("VIO", "ILG", "VIO")` are equal; SAFE is empty."""
    if categories is None:
        return frozenset()
    if isinstance(categories, str):
        categories = categories.replace(";", ",").split(",")
    codes = {str(c).strip().upper() for c in categories}
    return frozenset(c for c in codes if c and c != "SAFE")


def category_reward(pred_categories: str | Iterable[str] | None,
                    target_categories: str | Iterable[str] | None) -> float:
    """+1 for an exact set match of harm codes (SAFE = no codes), −1 otherwise; None (unparsable) is −1.

    >>> category_reward(["ILG", "VIO"], "VIO,ILG")
    1.0
    >>> category_reward(["VIO"], ["VIO", "ILG"])
    -1.0
    """
    if pred_categories is None:
        return CATEGORY_MISMATCH
    return CATEGORY_MATCH if category_set(pred_categories) == category_set(target_categories) else CATEGORY_MISMATCH


def score_reward(pred: float | None, target: float) -> float:
    """2 − 4·|pred − target| / max(target, 100 − target); None (unparsable) gets the minimum −2.

    >>> score_reward(30, 30)
    2.0
    >>> score_reward(100, 0)
    -2.0
    >>> score_reward(25, 50)
    0.0
    """
    if not 0 <= target <= 100:
        raise ValueError(f"target score {target} is outside 0-100")
    if pred is None or pred != pred:  # None or NaN
        return SCORE_MIN
    e_max = max(target, 100.0 - target)
    return SCORE_MAX - 4.0 * abs(float(pred) - float(target)) / e_max


def completion_text(completion: Any) -> str:
    """TRL hands text completions as str and conversational ones as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _with_prefill(prompt: Any, completion: str) -> str:
    """Restore an open `<think>` prefill so a never-closed reasoning block reads as truncated, not as an answer."""
    open_think = generation_prefill(True)
    if isinstance(prompt, str) and prompt.endswith(open_think):
        return open_think + completion
    return completion


def flexguard_reward(completions: list[Any], target_score: list[float], target_categories: list[Any],
                     prompts: list[Any] | None = None, **kwargs: Any) -> list[float]:
    """TRL reward function: `R = s_cat + s_score` per completion, −3 when the core cannot parse it.

    `target_score` and `target_categories` are dataset columns that TRL passes as keyword arguments.

    >>> flexguard_reward(["VIO\\n80", "no idea"], target_score=[80, 10], target_categories=[["VIO"], []])
    [3.0, -3.0]
    """
    prompts = prompts if prompts is not None else [None] * len(completions)
    rewards = []
    for prompt, completion, score, categories in zip(prompts, completions, target_score, target_categories,
                                                    strict=True):
        risk = parse_output(_with_prefill(prompt, completion_text(completion)))
        if not risk.ok:
            rewards.append(REWARD_MIN)
            continue
        rewards.append(category_reward(risk.categories, categories) + score_reward(risk.score, float(score)))
    return rewards
