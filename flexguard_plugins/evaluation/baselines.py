"""Scorers that `flexguard eval` can run: FlexGuard itself, or any baseline plugged in as a callable.

A scorer takes a list of `ModerationItem`s and returns one value per item. Its `kind` says how to
read the values:
  "score"        a 0-100 risk score (or a `RiskScore`), thresholded per regime like FlexGuard
  "probability"  a 0-1 probability of harm, read as score = 100·p
  "binary"       a yes/no moderator: one fixed decision scored against all three regimes (as in the
                 paper), so its three F1 values come from the same flags
None (or NaN) for an item means "could not score" and is counted fail-closed.
`--scorer module:callable` names either such a callable or a zero-argument factory returning one.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from flexguard_plugins.scorer import FlexGuard
from flexguard_plugins.types import ModerationItem, RiskScore

Kind = Literal["score", "probability", "binary"]
KINDS: tuple[str, ...] = ("score", "probability", "binary")
BINARY_THRESHOLD = 50.0
"""A binary moderator's yes is 100 and no is 0; any threshold between gives its one decision."""


@runtime_checkable
class Scorer(Protocol):
    """What eval needs: a name, a kind, and a batch call."""

    name: str
    kind: Kind

    def __call__(self, items: Sequence[ModerationItem]) -> Sequence[Any]: ...


class FlexGuardScorer:
    """FlexGuard through the core facade (`score_batch`), any backend."""

    kind: Kind = "score"

    def __init__(self, guard: FlexGuard, name: str | None = None) -> None:
        self.guard = guard
        self.name = name or guard.backend.name

    def __call__(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        return self.guard.score_batch(list(items))


class CallableScorer:
    """Wraps a plain function `items -> values` with a name and a kind."""

    def __init__(self, function: Callable[[Sequence[ModerationItem]], Sequence[Any]], kind: Kind,
                 name: str | None = None) -> None:
        check_kind(kind)
        self.function = function
        self.kind = kind
        self.name = name or getattr(function, "__name__", type(function).__name__)

    def __call__(self, items: Sequence[ModerationItem]) -> Sequence[Any]:
        return self.function(items)


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"scorer kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


def to_risk(value: Any, kind: Kind, scorer: str = "") -> RiskScore:
    """One scorer output as a `RiskScore` on the 0-100 scale; a clear error for values out of range."""
    if isinstance(value, RiskScore):
        return value if value.scorer or not scorer else value.with_(scorer=scorer)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return RiskScore.failure("scorer returned no value", scorer=scorer)
    if kind == "binary":
        if isinstance(value, str):
            text = value.strip().lower()
            if text not in ("safe", "unsafe", "yes", "no", "true", "false", "0", "1"):
                raise ValueError(f"binary scorer returned {value!r}; expected a bool, 0/1 or safe/unsafe")
            flagged = text in ("unsafe", "yes", "true", "1")
        elif isinstance(value, (bool, int, float)) and float(value) in (0.0, 1.0):
            flagged = bool(value)
        else:
            raise ValueError(f"binary scorer returned {value!r}; expected a bool, 0/1 or safe/unsafe")
        return RiskScore.from_score(100.0 if flagged else 0.0, scorer=scorer)
    number = float(value)
    if kind == "probability":
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"probability scorer returned {value!r}; expected 0-1")
        number *= 100.0
    elif not 0.0 <= number <= 100.0:
        raise ValueError(f"score scorer returned {value!r}; expected 0-100")
    return RiskScore.from_score(number, scorer=scorer)


def run_scorer(scorer: Scorer, items: Sequence[ModerationItem]) -> list[RiskScore]:
    """Call a scorer on a batch and check it answered once per item."""
    values = list(scorer(items))
    if len(values) != len(items):
        raise ValueError(f"scorer {scorer.name!r} returned {len(values)} values for {len(items)} items")
    return [to_risk(v, scorer.kind, scorer.name) for v in values]


def load_scorer(spec: str, kind: str | None = None) -> Scorer:
    """`module:attr` → a scorer. `attr` may be a scorer/callable or a zero-argument factory of one.

    The kind comes from `kind`, else the object's own `kind` attribute, else "probability".
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--scorer must look like 'package.module:callable', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, type) or getattr(target, "is_scorer_factory", False):
        target = target()
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    chosen = check_kind(kind or getattr(target, "kind", "probability"))
    return CallableScorer(target, chosen, name=getattr(target, "name", None) or attr)


# --- built-in baselines --------------------------------------------------------------------------

def keyword_baseline(items: Sequence[ModerationItem]) -> list[bool]:
    """A crude binary baseline: flags text that names an obviously harmful topic (a floor to beat)."""
    words = ("kill", "bomb", "weapon", "drug", "hack", "steal", "porn", "suicide", "hate", "explosive", "poison")
    return [any(w in item.judged_text.lower() for w in words) for item in items]


keyword_baseline.kind = "binary"  # type: ignore[attr-defined]
