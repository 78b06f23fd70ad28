"""Strictness → thresholds → `Decision`; policy files; the failure policy and shadow mode.

`strictness` has one meaning everywhere (core, wrappers, CLI):
  "strict" | "moderate" | "loose"        rubric thresholds 21 / 41 / 61 (flag when score ≥ threshold)
  a number 0-100, or its string form     a custom threshold
  {"default": "loose", "SEX": 25}        per-category thresholds; a flagged category uses its own
  "policy.json" or "policy.json#strict"  a calibrated policy file written by `flexguard calibrate`
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from .errors import UndecidedError
from .types import CATEGORIES, Decision, RiskScore, is_number

REGIMES: Mapping[str, float] = {"strict": 21.0, "moderate": 41.0, "loose": 61.0}
"""Rubric thresholds: strict flags ≥ LOW, moderate ≥ MODERATE, loose ≥ HIGH."""

OnError = Literal["block", "allow", "raise"]
ON_ERROR_CHOICES: tuple[str, ...] = ("block", "allow", "raise")
POLICY_VERSION = 1


@dataclass(frozen=True)
class Thresholds:
    """A resolved strictness: one default threshold and optional per-category overrides."""

    default: float
    per_category: Mapping[str, float] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        """Built directly or resolved, a NaN or out-of-range threshold must never reach `decide`
        (every comparison with NaN is False: nothing would ever be flagged)."""
        _check_threshold(self.default, "Thresholds.default")
        for code, value in self.per_category.items():
            _check_threshold(value, f"Thresholds.per_category[{code!r}]")

    def for_categories(self, categories: Sequence[str]) -> float:
        """The threshold that applies to a verdict naming `categories` (the most sensitive one)."""
        if not categories:
            return self.default
        return min(self.per_category.get(c, self.default) for c in categories)

    def flagging_peak(self, peaks: Sequence[tuple[str, float]]) -> tuple[str, float, float] | None:
        """(category, score, threshold) of the first per-category peak (`RiskScore.peaks`) that reaches its
        category's threshold; None when none does."""
        for code, score in peaks:
            threshold = self.per_category.get(code, self.default)
            if score >= threshold:
                return code, score, threshold
        return None


Strictness = str | int | float | Mapping[str, Any] | os.PathLike | Thresholds


def _check_threshold(value: float, what: str) -> float:
    if not is_number(value) or math.isnan(value):
        raise ValueError(f"{what}: expected a number 0-100, got {value!r}")
    if not 0 <= value <= 100:
        raise ValueError(f"{what}: threshold {value:g} is out of range 0-100")
    return float(value)


def _scalar(value: Any, what: str) -> float:
    """A regime name, a number, or a numeric string, as one threshold."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in REGIMES:
            return REGIMES[key]
        try:
            number = float(key)
        except ValueError:
            raise ValueError(
                f"{what}: unknown strictness {value!r}; use strict, moderate, loose, a number 0-100, "
                "a per-category mapping or a policy file"
            ) from None
        return _check_threshold(number, what)
    return _check_threshold(value, what)


def _mapping(spec: Mapping[str, Any], label: str) -> Thresholds:
    default = _scalar(spec.get("default", "moderate"), "strictness['default']")
    per_category = {}
    for key, value in spec.items():
        if key == "default":
            continue
        code = key.strip().upper() if isinstance(key, str) else None
        if code not in CATEGORIES:
            raise ValueError(f"strictness: unknown category {key!r}; known: {', '.join(CATEGORIES)}")
        per_category[code] = _scalar(value, f"strictness[{key!r}]")
    return Thresholds(default, per_category, label)


@lru_cache(maxsize=32)
def _load_policy_file(path: str, mtime: float) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("regimes"), dict):
        raise ValueError(f"{path}: not a FlexGuard policy file (no 'regimes' object)")
    if data.get("version") != POLICY_VERSION:
        raise ValueError(f"{path}: policy file version {data.get('version')!r}; this FlexGuard reads "
                         f"version {POLICY_VERSION} (write it again with `flexguard calibrate`)")
    for regime, entry in data["regimes"].items():
        if not isinstance(entry, dict) or "threshold" not in entry:
            raise ValueError(f"{path}: regime {regime!r} has no 'threshold'")
        if not isinstance(entry.get("categories", {}), dict):
            raise ValueError(f"{path}: regime {regime!r}: 'categories' must be an object")
    return data


def load_policy(path: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(path)
    return _load_policy_file(path, os.path.getmtime(path))


def _from_policy_file(spec: str) -> Thresholds:
    path, _, regime = spec.partition("#")
    if not os.path.isfile(path):
        raise ValueError(f"strictness: policy file {path!r} not found")
    try:
        policy = load_policy(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"strictness: cannot read policy file {path!r}: {error}") from None
    regime = regime or policy.get("default_regime", "moderate")
    regimes = policy["regimes"]
    if regime not in regimes:
        raise ValueError(f"{path}: no regime {regime!r}; it has {sorted(regimes)}")
    entry = regimes[regime]
    return _mapping({"default": entry["threshold"], **entry.get("categories", {})}, f"{Path(path).name}#{regime}")


def _looks_like_file(spec: str) -> bool:
    path = spec.partition("#")[0]
    return path.endswith(".json") or os.path.sep in path or os.path.isfile(path)


def resolve_strictness(strictness: Strictness) -> Thresholds:
    """Any accepted strictness form → `Thresholds`; a clear ValueError for anything else."""
    if isinstance(strictness, Thresholds):
        return strictness
    if isinstance(strictness, os.PathLike):
        return _from_policy_file(os.fspath(strictness))
    if isinstance(strictness, Mapping):
        thresholds = _mapping(strictness, "")  # validated first: the label needs sortable str keys
        return replace(thresholds, label=json.dumps(dict(strictness), sort_keys=True, default=str))
    if isinstance(strictness, str):
        text = strictness.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"strictness: not a valid JSON mapping ({error})") from None
            if not isinstance(spec, dict):
                raise ValueError("strictness: a JSON strictness must be an object")
            return _mapping(spec, text)
        if text.lower() not in REGIMES and _looks_like_file(text):
            return _from_policy_file(text)
        return Thresholds(_scalar(text, "strictness"), {}, text.lower())
    return Thresholds(_scalar(strictness, "strictness"), {}, str(strictness))


def check_on_error(on_error: str) -> OnError:
    """The failure policy, case and surrounding white space ignored (" Block" is "block"); else ValueError."""
    value = on_error.strip().lower() if isinstance(on_error, str) else on_error
    if value not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return value  # type: ignore[return-value]


def shown_relation(score: float, threshold: float) -> tuple[str, str, str]:
    """(score, relation, threshold) as text whose relation holds: the score gets the fewest decimals, at least
    one, that keep it on its side of the threshold (20.97 against 21 is "20.97", not "21.0").

    >>> shown_relation(20.97, 21), shown_relation(40.999, 41), shown_relation(92.0, 41)
    (('20.97', '<', '21'), ('40.999', '<', '41'), ('92.0', '≥', '41'))
    """
    flagged = score >= threshold
    limit = f"{threshold:g}" if float(f"{threshold:g}") == threshold else repr(threshold)
    for digits in range(1, 7):
        text = f"{score:.{digits}f}"
        if (float(text) >= threshold) == flagged:
            return text, "≥" if flagged else "<", limit
    return repr(score), "≥" if flagged else "<", limit


def check_shadow(shadow: Any, on_error: str) -> bool:
    """Shadow mode as a bool; ValueError for anything but a bool, or beside `on_error="raise"` (which would block)."""
    if not isinstance(shadow, bool):
        raise ValueError(f"shadow must be true or false, got {shadow!r}")
    if shadow and check_on_error(on_error) == "raise":
        raise ValueError("shadow=True never blocks, but on_error='raise' would: choose block or allow")
    return shadow


def decide(risk: RiskScore, strictness: Strictness | Thresholds = "moderate", on_error: OnError = "block",
           *, shadow: bool = False) -> Decision:
    """Apply a strictness to a score. A score the guard could not produce follows `on_error`, and so does
    one that is not a usable score (`RiskScore.checked`: NaN, out of range, not a RiskScore).

    With `shadow=True` the verdict is recorded in `would_flag` and the reason, and `flagged` is False.

    Raises:
        UndecidedError: the guard could not decide and `on_error="raise"`.
        ValueError: a bad strictness, on_error or shadow.
    """
    if check_shadow(shadow, on_error):
        verdict = decide(risk, strictness, on_error)
        return replace(verdict, flagged=False, shadow=True, would_flag=verdict.flagged,
                       reason=f"shadow, not enforced: {verdict.reason}")
    risk = RiskScore.checked(risk)
    thresholds = strictness if isinstance(strictness, Thresholds) else resolve_strictness(strictness)
    on_error = check_on_error(on_error)
    by = f" by {risk.scorer}" if risk.scorer else ""
    threshold = thresholds.for_categories(risk.categories) if risk.ok else thresholds.default
    peak = thresholds.flagging_peak(risk.peaks) if risk.ok and risk.score < threshold else None
    partial = risk.ok and risk.partial_error is not None and risk.score < threshold and peak is None
    if not risk.ok or partial:
        # A partly scored text below the line is undecided: the part that failed may be the harmful one.
        error = f"part of the text could not be judged: {risk.partial_error}" if partial else risk.error
        by = f" ({risk.scorer})" if risk.scorer else ""
        if on_error == "raise":
            raise UndecidedError(f"guard could not decide: {error}", risk)
        flagged = on_error == "block"
        verdict = "blocked" if flagged else "allowed"
        return Decision(
            flagged=flagged, score=risk.score, threshold=threshold, strictness=thresholds.label,
            categories=risk.categories, risk=risk, failed=True,
            reason=f"guard could not decide{by}: {error}; {verdict} (on_error={on_error})",
        )
    what = ",".join(risk.categories) or "SAFE"
    if peak is not None:  # a part in a more sensitive category reaches its own line
        code, part_score, threshold = peak
        shown, _, limit = shown_relation(part_score, threshold)
        reason = (f"flagged{by}: a {code} part of the text scored {shown} ≥ the {code} threshold "
                  f"{limit} (riskiest part: {risk.score:.1f}, {risk.tier.value}, {what}) [{thresholds.label}]")
        categories = risk.categories if code in risk.categories else (*risk.categories, code)
        return Decision(flagged=True, score=risk.score, threshold=threshold, strictness=thresholds.label,
                        categories=categories, reason=reason, risk=risk)
    flagged = risk.score >= threshold
    shown, relation, limit = shown_relation(risk.score, threshold)
    reason = (
        f"{'flagged' if flagged else 'allowed'}{by}: risk {shown} ({risk.tier.value}, {what}) "
        f"{relation} threshold {limit} [{thresholds.label}]"
    )
    return Decision(
        flagged=flagged, score=risk.score, threshold=threshold, strictness=thresholds.label,
        categories=risk.categories, reason=reason, risk=risk,
    )


def near_a_line(risk: RiskScore, thresholds: Thresholds, margin: float) -> bool:
    """Whether a cheap score is too close to a line that may apply to call it (a cascade escalates it): its
    categories' threshold, each part's own category line (`RiskScore.peaks`; only a per-category one can matter,
    since no part outscores the whole) and, when it names no category, every per-category threshold. Without
    per-category lines this is the distance of the score to its threshold."""
    pairs = [(risk.score, thresholds.for_categories(risk.categories))]
    pairs += [(score, thresholds.per_category[code]) for code, score in risk.peaks if code in thresholds.per_category]
    if not risk.categories:
        pairs += [(risk.score, line) for line in thresholds.per_category.values()]
    return any(abs(score - line) < margin for score, line in pairs)


# --- policy files -----------------------------------------------------------------------------

def make_policy(regime_thresholds: Mapping[str, float], *,
                categories: Mapping[str, Mapping[str, float]] | None = None,
                default_regime: str = "moderate", meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document `flexguard calibrate` writes and `resolve_strictness` reads."""
    regimes = {}
    for regime, threshold in regime_thresholds.items():
        entry: dict[str, Any] = {"threshold": round(_check_threshold(float(threshold), regime), 4)}
        if categories and categories.get(regime):
            entry["categories"] = {c: round(float(t), 4) for c, t in categories[regime].items()}
        regimes[regime] = entry
    if default_regime not in regimes:
        raise ValueError(f"default_regime {default_regime!r} is not among {sorted(regimes)}")
    return {"version": POLICY_VERSION, "default_regime": default_regime, "regimes": regimes, "meta": dict(meta or {})}


def save_policy(policy: Mapping[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    return path
