"""Value types shared by every layer: what goes in, what the model says, what the policy decides."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from numbers import Integral, Real
from typing import Any

from .text import replace_surrogates, stream_safe

CATEGORIES: tuple[str, ...] = ("VIO", "ILG", "SEX", "INF", "DIS", "MIS", "JAIL")
"""FlexGuard's harm codes; a benign answer is the word SAFE with no codes."""

CATEGORY_NAMES: Mapping[str, str] = {
    "VIO": "Violence and physical harm (including self-harm)",
    "ILG": "Illegal activities, weapons, drugs, fraud",
    "SEX": "Sexual content",
    "INF": "Privacy violations, cyber attacks, dangerous information",
    "DIS": "Discrimination, hate, harassment",
    "MIS": "Misinformation and manipulation",
    "JAIL": "Jailbreak attempts and prompt injection",
}


class Tier(str, Enum):
    """Severity bands of the 0-100 risk score (upper bounds inclusive on the integer scale)."""

    BENIGN = "BENIGN"
    LOW = "LOW"
    MODERATE = "MODERATE"
    HIGH = "HIGH"
    EXTREME = "EXTREME"

    @property
    def band(self) -> tuple[int, int]:
        return TIER_BANDS[self]

    @property
    def severity(self) -> int:
        """0 (BENIGN) … 4 (EXTREME), FlexBench's `severity_level`."""
        return list(Tier).index(self)

    @classmethod
    def from_severity(cls, level: int) -> Tier:
        return list(Tier)[int(level)]


TIER_EDGES: tuple[int, int, int, int] = (21, 41, 61, 81)
"""Lower edges of LOW, MODERATE, HIGH and EXTREME: the one definition (rubric thresholds are the first three)."""

TIER_BANDS: Mapping[Tier, tuple[int, int]] = {
    Tier.BENIGN: (0, 20),
    Tier.LOW: (21, 40),
    Tier.MODERATE: (41, 60),
    Tier.HIGH: (61, 80),
    Tier.EXTREME: (81, 100),
}


def is_number(value: Any) -> bool:
    """A real number, not a bool (`True` is an int, and a threshold or a score of True is a mistake)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def tier_for_score(score: float) -> Tier:
    """Band lower edges are the rubric thresholds (21/41/61/81), so a continuous 20.9 is still BENIGN."""
    tiers = list(Tier)
    for edge, tier in zip(reversed(TIER_EDGES), reversed(tiers[1:]), strict=True):
        if score >= edge:
            return tier
    return Tier.BENIGN


@dataclass(frozen=True, slots=True)
class ModerationItem:
    """One thing to judge: a user prompt (prompt mode) or a prompt and the reply to it (response mode)."""

    prompt: str
    response: str | None = None

    @property
    def mode(self) -> str:
        return "prompt" if self.response is None else "response"

    @property
    def judged_text(self) -> str:
        """The turn the verdict is about: the reply in response mode, the prompt otherwise."""
        return self.prompt if self.response is None else self.response

    @classmethod
    def coerce(cls, value: Any) -> ModerationItem:
        """Accept an item, a dict with prompt/response, or a bare prompt string; reject anything else.

        The text is cleaned for every tokenizer and normaliser (lone surrogates → U+FFFD, NULs dropped, very
        long runs of combining marks broken up; see `_clean`); spans reported later index the cleaned text.
        """
        if isinstance(value, ModerationItem):
            item = value
        elif isinstance(value, str):
            item = cls(prompt=value)
        elif isinstance(value, Mapping):
            unknown = set(value) - {"prompt", "response"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}; expected 'prompt' and optional 'response'")
            if "prompt" not in value:
                raise ValueError("a moderation item needs a 'prompt' key")
            item = cls(prompt=value["prompt"], response=value.get("response"))
        else:
            raise TypeError(f"expected a ModerationItem, dict or str, got {type(value).__name__}")
        if not isinstance(item.prompt, str):
            raise TypeError(f"prompt must be a str, got {type(item.prompt).__name__}")
        if item.response is not None and not isinstance(item.response, str):
            raise TypeError(f"response must be a str or None, got {type(item.response).__name__}")
        prompt, response = _clean(item.prompt), None if item.response is None else _clean(item.response)
        if prompt is item.prompt and response is item.response:
            return item
        return cls(prompt, response)

    @classmethod
    def coerce_all(cls, items: Iterable[Any]) -> list[ModerationItem]:
        """`coerce` for a batch: every item is validated before any is used, and the error names the bad one."""
        if isinstance(items, (str, bytes, Mapping, ModerationItem)):
            raise TypeError("batch calls take a list of items; use score()/check() for one item")
        coerced = []
        for index, value in enumerate(items):
            try:
                coerced.append(cls.coerce(value))
            except (TypeError, ValueError) as error:
                raise type(error)(f"item {index}: {error}") from None
        return coerced


def _clean(text: str) -> str:
    """Text every tokenizer accepts and every normaliser handles in linear time: lone surrogates become
    U+FFFD (same length), NULs are dropped, and runs of more than 30 combining marks are made stream-safe
    (NFKC reorders a mixed run of marks in quadratic time: 100k marks took 10 s, on the guard's loop).

    Done at the door so that one item no tokenizer can encode never fails the batch it rides in.
    Format characters stay (they belong to some scripts); the blank rule and the neutraliser see through them.
    """
    cleaned = stream_safe(replace_surrogates(text).replace("\x00", ""))
    return text if cleaned == text else cleaned


@dataclass(frozen=True, slots=True)
class RiskScore:
    """What the guard model said about one item. `ok=False` means it could not say, and `error` says why."""

    score: float
    tier: Tier
    categories: tuple[str, ...] = ()
    reasoning: str | None = None
    raw: str = ""
    ok: bool = True
    error: str | None = None
    span: tuple[int, int] | None = None
    """Character span of the judged text that produced this score, when the text was split into chunks."""
    scorer: str = ""
    """Which scorer produced it (backend name; 'lite' or the LLM in a cascade)."""
    refusal: float | None = None
    """Response mode: the probability that the reply refuses (the lite scorer); None from LLM backends."""
    partial_error: str | None = None
    """Why part of a chunked text could not be scored. The score covers the rest: it flags when it reaches
    the threshold; below it the item is undecided (`decide` follows on_error), since the missing part may be worse."""
    peaks: tuple[tuple[str, float], ...] = ()
    """Text read in parts (chunks, windows): per category, the highest score of a part naming it, when some part
    names a category the riskiest part does not. A per-category threshold applies to each (`decide`): a SEX part at
    40 under a SEX threshold of 25 is flagged although a VIO part at 50 outranks it."""

    @classmethod
    def failure(cls, error: str, raw: str = "", scorer: str = "") -> RiskScore:
        return cls(score=float("nan"), tier=Tier.EXTREME, raw=raw, ok=False, error=error, scorer=scorer)

    @classmethod
    def from_score(cls, score: float, categories: tuple[str, ...] = (), **kw: Any) -> RiskScore:
        return cls(score=float(score), tier=tier_for_score(score), categories=tuple(categories), **kw)

    def with_(self, **changes: Any) -> RiskScore:
        return replace(self, **changes)

    @classmethod
    def checked(cls, value: Any, scorer: str = "") -> RiskScore:
        """`value` if it is a usable result, else a failure saying why (fail closed): a backend that hands
        back None, or `ok=True` with a NaN, infinite or out-of-range score, must not pass as allowed."""
        if not isinstance(value, RiskScore):
            return cls.failure(f"backend returned {type(value).__name__}, not a RiskScore", scorer=scorer)
        score = value.score
        if value.ok and (not is_number(score) or not 0 <= score <= 100):
            return cls.failure(f"backend returned score {score!r} with ok=True (a score is 0-100)",
                               raw=value.raw, scorer=value.scorer or scorer)
        if value.ok and not _valid_peaks(value.peaks):
            return cls.failure(f"backend returned peaks {value.peaks!r} (pairs of a category code and a 0-100 score)",
                               raw=value.raw, scorer=value.scorer or scorer)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": None if not self.ok else self.score,
            "tier": self.tier.value if self.ok else None,
            "categories": list(self.categories),
            "reasoning": self.reasoning,
            "ok": self.ok,
            "error": self.error,
            "span": list(self.span) if self.span else None,
            "scorer": self.scorer,
            "refusal": self.refusal,
            "partial_error": self.partial_error,
            "peaks": dict(self.peaks),
        }


def _valid_peaks(peaks: Any) -> bool:
    """(code, score) pairs with known codes and 0-100 scores: anything else must not reach `decide`, where a NaN
    would never flag."""
    if not isinstance(peaks, tuple):
        return False
    for pair in peaks:
        if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in CATEGORIES):
            return False
        if not is_number(pair[1]) or not 0 <= pair[1] <= 100:
            return False
    return True


def merge_peaks(winner: RiskScore, parts: Iterable[tuple[float, Sequence[str]]]) -> tuple[tuple[str, float], ...]:
    """`RiskScore.peaks` for `winner` read from `parts` ((score, categories) of every part, the winner's too):
    empty when no part names a category the winner does not."""
    peaks: dict[str, float] = {}
    for score, categories in parts:
        for code in categories:
            peaks[code] = max(peaks.get(code, score), score)
    if not set(peaks) - set(winner.categories):
        return ()
    return tuple(sorted(peaks.items()))


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict. `failed=True` means the guard could not decide and `on_error` chose `flagged`.

    `flagged` is what to enforce. In shadow mode (`shadow=True`) it is always False and `would_flag` holds the
    verdict the policy reached, so traffic can be watched before enforcement is switched on; otherwise
    `would_flag` equals `flagged`.

    Example:
        >>> from flexguard_plugins import decide, RiskScore
        >>> d = decide(RiskScore.from_score(70.0, ("VIO",)), "moderate", shadow=True)
        >>> d.flagged, d.would_flag, d.shadow
        (False, True, True)
    """

    flagged: bool
    score: float
    threshold: float
    strictness: str
    categories: tuple[str, ...]
    reason: str
    risk: RiskScore = field(repr=False)
    failed: bool = False
    shadow: bool = False
    would_flag: bool | None = None

    def __post_init__(self) -> None:
        if self.shadow and self.flagged:
            raise ValueError("a shadow-mode Decision never flags: its verdict goes in would_flag")
        if self.would_flag is None or not self.shadow:
            object.__setattr__(self, "would_flag", bool(self.flagged if not self.shadow else self.would_flag))

    @property
    def allowed(self) -> bool:
        return not self.flagged

    def to_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "would_flag": self.would_flag,
            "shadow": self.shadow,
            "failed": self.failed,
            "score": None if self.failed else self.score,
            "threshold": self.threshold,
            "strictness": self.strictness,
            "categories": list(self.categories),
            "reason": self.reason,
            "tier": self.risk.tier.value if self.risk.ok else None,
            "scorer": self.risk.scorer,
        }
