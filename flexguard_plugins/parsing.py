"""Model text → `RiskScore`. Total: any string gives a result; what cannot be read is `ok=False`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from .prompts import THINK_CLOSE, THINK_OPEN
from .types import CATEGORIES, RiskScore

_KNOWN = frozenset(CATEGORIES) | {"SAFE"}
_LABEL = re.compile(r"^\s*(?:category|categories|risk[_ ]?score|score)\s*[:=]\s*", re.IGNORECASE)
_DECORATION = re.compile(r"[*_`#>\"']")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_CODES = re.compile(r"^[A-Za-z]+(?:\s*[,;/|]\s*[A-Za-z]+|\s+[A-Za-z]+)*$")

TokenLogprobs = Sequence[tuple[str, Mapping[str, float]]]
"""Per generated token: its text and the top alternatives {token text: logprob} at that position."""


def _clean(line: str) -> str:
    return _LABEL.sub("", _DECORATION.sub("", line)).strip().rstrip(".")


def split_reasoning(text: str) -> tuple[str | None, str, str | None]:
    """(reasoning, answer, error). The answer is what follows the last `</think>`."""
    close = text.rfind(THINK_CLOSE)
    if close == -1:
        if THINK_OPEN in text:
            return None, "", "truncated output: <think> was never closed"
        return None, text, None
    head, answer = text[:close], text[close + len(THINK_CLOSE):]
    open_at = head.find(THINK_OPEN)
    reasoning = head[open_at + len(THINK_OPEN):] if open_at != -1 else head
    return reasoning.strip() or None, answer, None


def parse_output(text: str, token_logprobs: TokenLogprobs | None = None) -> RiskScore:
    """Read `<think>…</think>\\nCATEGORY\\nRISK_SCORE` (also labelled or reordered answer lines).

    With `token_logprobs` the integer is refined to an expected score (see `expected_score`).
    """
    if not isinstance(text, str):
        return RiskScore.failure(f"model output is {type(text).__name__}, not text")
    reasoning, answer, error = split_reasoning(text)
    if error:
        return RiskScore.failure(error, raw=text)
    lines = [_clean(line) for line in answer.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return RiskScore.failure("no answer after the reasoning", raw=text)
    if len(lines) > 2:
        return RiskScore.failure(f"expected 2 answer lines (category, score), got {len(lines)}", raw=text)
    numbers = [line for line in lines if _NUMBER.match(line)]
    words = [line for line in lines if _CODES.match(line)]
    if len(numbers) != 1 or len(words) != 1:
        return RiskScore.failure("answer must be one category line and one integer score line", raw=text)
    score = float(numbers[0])
    if not 0 <= score <= 100:
        return RiskScore.failure(f"risk score {numbers[0]} is outside 0-100", raw=text)
    codes = [c.upper() for c in re.split(r"[\s,;/|]+", words[0]) if c]
    unknown = [c for c in codes if c not in _KNOWN]
    if unknown:
        return RiskScore.failure(f"unknown category code(s) {unknown}", raw=text)
    if "SAFE" in codes and len(codes) > 1:
        return RiskScore.failure("SAFE given together with violation codes", raw=text)
    categories = tuple(dict.fromkeys(c for c in codes if c != "SAFE"))
    if token_logprobs:
        refined = expected_score(token_logprobs)
        if refined is not None:
            score = refined
    return RiskScore.from_score(score, categories, reasoning=reasoning, raw=text)


def _digit_distribution(alternatives: Mapping[str, float]) -> dict[int, float]:
    probs: dict[int, float] = {}
    for token, logprob in alternatives.items():
        stripped = token.strip()
        if len(stripped) == 1 and stripped.isdigit():
            probs[int(stripped)] = probs.get(int(stripped), 0.0) + math.exp(logprob)
    return probs


def _number_distribution(alternatives: Mapping[str, float]) -> dict[int, float]:
    probs: dict[int, float] = {}
    for token, logprob in alternatives.items():
        stripped = token.strip()
        if stripped.isdigit() and int(stripped) <= 100:
            probs[int(stripped)] = probs.get(int(stripped), 0.0) + math.exp(logprob)
    return probs


def expected_score(token_logprobs: TokenLogprobs) -> float | None:
    """A continuous score from the probabilities of the score tokens.

    The score is the last run of digit tokens. Tokenizers that spell a whole number as one token
    (Llama 3) give E[n] over the numeric alternatives; tokenizers that spell one digit per token
    (Qwen) give Σ 10^k · E[digit_k], each digit's expectation taken at the generated length.
    Returns None when the tokens hold no score or the alternatives carry no digit mass.
    """
    run: list[tuple[str, Mapping[str, float]]] = []
    for token, alternatives in token_logprobs:
        stripped = token.strip()
        if stripped.isdigit():
            if run and token != stripped:  # whitespace before a digit starts a new number
                run = []
            run.append((stripped, alternatives))
        elif stripped:
            run = []
    if not run:
        return None
    if len(run) == 1 and len(run[0][0]) > 1:
        dist = _number_distribution(run[0][1])
        total = sum(dist.values())
        return None if total == 0 else min(100.0, sum(n * p for n, p in dist.items()) / total)
    if any(len(tok) != 1 for tok, _ in run):
        return None
    value = 0.0
    for position, (_, alternatives) in enumerate(run):
        dist = _digit_distribution(alternatives)
        total = sum(dist.values())
        if total == 0:
            return None
        value += 10 ** (len(run) - 1 - position) * sum(d * p for d, p in dist.items()) / total
    return max(0.0, min(100.0, value))
