"""FlexGuard's GRPO reward: category agreement plus a score term scaled by the worst possible error.

    R = s_cat + s_score
    s_cat   = +1 when the predicted harm codes equal the target's as a set, else −1
    s_score = 2 − 4·|r̂ − r| / E_max,   E_max = max(r, 100 − r)

Category matching rule (ours; the paper says only "±1"): both sides are reduced to a set of harm
codes, order and duplicates ignored, `SAFE` meaning the empty set; the reward is +1 only for an exact
set match. `E_max` is the largest error any prediction in [0, 100] can make for target r, so s_score
runs from +2 (exact) to −2 (as wrong as possible) whatever the target.

Completions are held to the exact output contract, not read leniently like inference does:
`<think>…</think>\\nCATEGORY\\nRISK_SCORE` after the prompt's prefill, CATEGORY being `SAFE` or known
codes joined by commas (no spaces, no repeats), RISK_SCORE an integer 0-100 without sign or leading
zero. Labelled lines (`Score: 40`), swapped lines, markdown, decimals or extra text break the contract
and earn the minimum of both terms, −1 − 2 = −3: the policy must not drift from what the core reads.

Rows whose harm codes are unknown (`target_categories` None, see `flexguard_training.data`) get no
category term (None, which TRL leaves out of the sum and of the logged mean) unless the completion
breaks the contract; their score term is scored as usual.

For TRL the two terms are two reward functions, `category_reward_func` and `score_reward_func`, so
the trainer logs `rewards/category_reward_func/mean` and `rewards/score_reward_func/mean` apart and
sums them into the reward (equal weights). `flexguard_reward` is that sum in one call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from flexguard_plugins.prompts import THINK_CLOSE, THINK_OPEN, generation_prefill
from flexguard_plugins.types import CATEGORIES

CATEGORY_MATCH = 1.0
CATEGORY_MISMATCH = -1.0
SCORE_MAX = 2.0
SCORE_MIN = -2.0
REWARD_MIN = CATEGORY_MISMATCH + SCORE_MIN
"""What a completion that breaks the output contract earns (−3)."""

_CODE = "(?:" + "|".join(CATEGORIES) + ")"
_ANSWER = re.compile(rf"(SAFE|{_CODE}(?:,{_CODE})*)\n(100|[1-9]?[0-9])")


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


def _reasoning_prompt(prompt: Any) -> bool:
    """Whether the prompt ends in the open `<think>` prefill (the completion must reason, then close it)."""
    return isinstance(prompt, str) and prompt.endswith(generation_prefill(True))


def parse_contract(completion: str, reasoning: bool = False) -> tuple[tuple[str, ...], int] | None:
    """(codes, score) when the completion is exactly the contract, else None.

    Without reasoning the completion (after the empty think block) is `CATEGORY\\nRISK_SCORE`; with it
    (after `<think>\\n`) a non-empty trace, `\\n</think>\\n`, then those two lines. Only trailing white
    space at the very end is allowed (what a tokenizer may leave before EOS).

    >>> parse_contract("VIO,ILG\\n85")
    (('VIO', 'ILG'), 85)
    >>> parse_contract("Score: 85\\nVIO") is None, parse_contract("VIO\\n85.5") is None
    (True, True)
    """
    text = completion.rstrip()
    if reasoning:
        trace, sep, text = text.partition(f"\n{THINK_CLOSE}\n")
        if not sep or not trace.strip() or THINK_CLOSE in trace or THINK_OPEN in trace:
            return None
    match = _ANSWER.fullmatch(text)
    if match is None:
        return None
    codes = tuple(c for c in match.group(1).split(",") if c != "SAFE")
    if len(set(codes)) != len(codes):
        return None
    return codes, int(match.group(2))


def _parsed(completions: list[Any], prompts: list[Any] | None) -> list[tuple[tuple[str, ...], int] | None]:
    prompts = prompts if prompts is not None else [None] * len(completions)
    return [parse_contract(completion_text(c), _reasoning_prompt(p)) for c, p in zip(completions, prompts, strict=True)]


def category_reward_func(completions: list[Any], target_categories: list[Any], prompts: list[Any] | None = None,
                         **kwargs: Any) -> list[float | None]:
    """TRL reward function, the category term: ±1, −1 off-contract, None when the target's codes are unknown.

    >>> category_reward_func(["VIO\\n80", "VIO\\n80", "80"], target_categories=[["VIO"], None, None])
    [1.0, None, -1.0]
    """
    out: list[float | None] = []
    for parsed, target in zip(_parsed(completions, prompts), target_categories, strict=True):
        if parsed is None:
            out.append(CATEGORY_MISMATCH)
        elif target is None:
            out.append(None)
        else:
            out.append(category_reward(parsed[0], target))
    return out


def score_reward_func(completions: list[Any], target_score: list[float], prompts: list[Any] | None = None,
                      **kwargs: Any) -> list[float]:
    """TRL reward function, the score term: 2 − 4·|r̂ − r| / E_max, −2 off-contract.

    >>> score_reward_func(["SAFE\\n10", "SAFE\\n10.0"], target_score=[10, 10])
    [2.0, -2.0]
    """
    return [score_reward(None if parsed is None else parsed[1], float(target))
            for parsed, target in zip(_parsed(completions, prompts), target_score, strict=True)]


def flexguard_reward(completions: list[Any], target_score: list[float], target_categories: list[Any],
                     prompts: list[Any] | None = None, **kwargs: Any) -> list[float]:
    """`R = s_cat + s_score` per completion (what TRL's sum of the two reward functions gives); −3 off-contract.

    >>> flexguard_reward(["VIO\\n80", "no idea", "VIO\\n80"], target_score=[80, 10, 80],
    ...                  target_categories=[["VIO"], [], None])
    [3.0, -3.0, 2.0]
    """
    categories = category_reward_func(completions, target_categories, prompts)
    scores = score_reward_func(completions, target_score, prompts)
    return [s + (0.0 if c is None else c) for c, s in zip(categories, scores, strict=True)]


REWARD_FUNCS = (category_reward_func, score_reward_func)
"""What `grpo` hands TRL: two functions, so each term is logged on its own."""
