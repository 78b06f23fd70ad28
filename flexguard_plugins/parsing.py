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
        refined = expected_score(token_logprobs, score)
        if refined is not None:
            score = refined
    return RiskScore.from_score(score, categories, reasoning=reasoning, raw=text)


_SCORES = frozenset(str(n) for n in range(101))
_OPEN_PREFIXES = frozenset(s[:k] for s in _SCORES for k in range(1, len(s)))
"""Digit strings that more digits could still extend to a valid score ("1" → "15" or "100", "10" → "100")."""


def _last_number_run(token_logprobs: TokenLogprobs) -> tuple[int, int] | None:
    """[start, end) of the last run of digit-only tokens; whitespace before a digit starts a new number."""
    run: tuple[int, int] | None = None
    start: int | None = None
    for index, (token, _) in enumerate(token_logprobs):
        stripped = token.strip()
        if stripped.isdigit():
            if start is None or token != stripped:
                start = index
            run = (start, index + 1)
        else:
            start = None
    return run


def _leading_digits(text: str) -> str:
    end = 0
    while end < len(text) and text[end].isdigit():
        end += 1
    return text[:end]


def expected_score(token_logprobs: TokenLogprobs, integer: float | None = None) -> float | None:
    """E[score] over the scores whose whole spelling the alternatives tell, else None (use the integer).

    The score is the last run of digit tokens t_1..t_k. At position j the alternatives are conditioned
    on the generated prefix t_1..t_{j-1}, so a candidate is that prefix plus one alternative, with mass
    p(t_1)…p(t_{j-1})·p(a). It counts only when its full length is known: no digit could follow it within
    0-100 (`"4"+"7"` = 47 is complete, `"1"` might be 1, 15 or 100 and is not), or the alternative ends the
    number (a non-digit, or a digit followed by text), or the tokenizer spells whole numbers as one token
    (Llama 3: a one-token score whose alternatives include multi-digit tokens). The generated number is a
    candidate with its own mass; the token after it, when reported, splits that mass between ending there
    and growing longer. The expectation is renormalised over the complete candidates, so mass on numbers
    we cannot spell out neither drags the score down nor up (a "95" whose first token was half "1" of
    "100" reads 95, not 55). With `integer`, a run that spells another number returns None.
    """
    run = _last_number_run(token_logprobs)
    if run is None:
        return None
    first, last = run
    digits = [token_logprobs[i][0].strip() for i in range(first, last)]
    generated = "".join(digits)
    if generated not in _SCORES or (integer is not None and float(generated) != float(integer)):
        return None
    positions = [token_logprobs[i][1] for i in range(first, last)]
    grouped = len(digits) == 1 and any(len(a.strip()) > 1 and a.strip().isdigit() for a in positions[0])
    candidates: dict[str, float] = {}

    def add(number: str, mass: float) -> None:
        if number in _SCORES and mass > 0:
            candidates[number] = candidates.get(number, 0.0) + mass

    prefix_mass, prefix = 1.0, ""
    for j, alternatives in enumerate(positions):
        if digits[j] not in {a.strip() for a in alternatives}:
            return None  # the generated token is not among its own alternatives: nothing to condition on
        for alternative, logprob in alternatives.items():
            if alternative.strip() == digits[j]:
                continue
            mass = prefix_mass * math.exp(logprob)
            lead = _leading_digits(alternative)
            if not lead:
                if prefix:
                    add(prefix, mass)  # a non-digit here ends the number at the prefix
            elif lead != alternative or grouped or prefix + lead not in _OPEN_PREFIXES:
                add(prefix + lead, mass)
        prefix_mass *= math.exp(max(lp for a, lp in alternatives.items() if a.strip() == digits[j]))
        prefix += digits[j]
    after = token_logprobs[last][1] if last < len(token_logprobs) and not grouped else {}
    ends = {a: lp for a, lp in after.items() if not _leading_digits(a)}
    if not ends:  # the token after is not reported: all the prefix's mass goes to the generated number
        add(generated, prefix_mass)
    for alternative, logprob in (after.items() if ends else ()):
        lead, mass = _leading_digits(alternative), prefix_mass * math.exp(logprob)
        if not lead:
            add(generated, mass)
        elif lead != alternative or generated + lead not in _OPEN_PREFIXES:
            add(generated + lead, mass)
    total = sum(candidates.values())
    if not total > 0:
        return None
    value = sum(int(number) * mass for number, mass in candidates.items()) / total
    return max(0.0, min(100.0, value))
