from __future__ import annotations

import json

import numpy as np
import pytest

from flexguard_plugins.errors import FlexGuardError
from flexguard_plugins.evaluation.thresholds import calibrate_threshold, f1_at, f1_curve
from flexguard_plugins.policy import decide, make_policy, resolve_strictness, save_policy
from flexguard_plugins.types import RiskScore


def risk(score: float, *cats: str) -> RiskScore:
    return RiskScore.from_score(score, cats)


@pytest.mark.parametrize("name, threshold", [("strict", 21), ("moderate", 41), ("loose", 61), (" Loose ", 61)])
def test_named_regimes(name, threshold):
    assert resolve_strictness(name).default == threshold


def test_rubric_boundaries():
    assert decide(risk(21, "VIO"), "strict").flagged and not decide(risk(20.9, "VIO"), "strict").flagged
    assert decide(risk(41, "VIO"), "moderate").flagged and not decide(risk(40, "VIO"), "moderate").flagged
    assert decide(risk(61, "VIO"), "loose").flagged and not decide(risk(60.5, "VIO"), "loose").flagged


def test_numbers_and_numeric_strings():
    assert resolve_strictness(35).default == 35
    assert resolve_strictness("72.5").default == 72.5
    with pytest.raises(ValueError, match="out of range 0-100"):
        resolve_strictness(140)
    with pytest.raises(ValueError, match="unknown strictness"):
        resolve_strictness("lenient")
    with pytest.raises(ValueError):
        resolve_strictness(True)


def test_per_category_mapping():
    policy = {"default": "loose", "SEX": 25, "mis": "strict"}
    assert decide(risk(30, "SEX"), policy).flagged
    assert decide(risk(30, "SEX"), policy).threshold == 25
    assert not decide(risk(30, "VIO"), policy).flagged
    assert decide(risk(22, "MIS"), policy).flagged
    assert not decide(risk(10), policy).flagged  # SAFE uses the default
    with pytest.raises(ValueError, match="unknown category"):
        resolve_strictness({"default": "loose", "GUNS": 10})


def test_a_part_in_a_sensitive_category_reaches_its_own_line():
    """Text read in parts: the riskiest part (VIO 50) must not hide a SEX part at 40 from a SEX threshold of 25."""
    text = risk(50, "VIO").with_(peaks=(("SEX", 40.0), ("VIO", 50.0)))
    policy = {"default": "loose", "SEX": 25}
    decision = decide(text, policy)
    assert decision.flagged and decision.threshold == 25 and "SEX" in decision.categories
    assert "SEX part" in decision.reason and "40.0" in decision.reason
    assert not decide(text, "loose").flagged  # no per-category line: 50 < 61 as before
    assert not decide(text, {"default": "loose", "SEX": 45}).flagged
    partial = text.with_(partial_error="1 of 3 chunks failed: timeout")
    flagged = decide(partial, policy, on_error="allow")
    assert flagged.flagged and not flagged.failed  # flagged by what was read: not undecided
    assert decide(partial, "loose", on_error="allow").failed


@pytest.mark.parametrize("peaks", [(("SEX", float("nan")),), (("sex", 40.0),), None, {"SEX": 40.0}, (("SEX", "40"),),
                                   (("SEX", 40.0, 1),), (("SEX", -5.0),), (("SEX", 150.0),)])
def test_malformed_peaks_are_undecided_never_a_pass(peaks):
    """A backend's peaks that `decide` cannot use (NaN never reaches a line) fail closed, alone."""
    odd = risk(30, "VIO").with_(peaks=peaks)
    decision = decide(odd, {"default": "loose", "SEX": 25})
    assert decision.flagged and decision.failed and "peaks" in decision.reason
    assert not decide(odd, "loose", on_error="allow").flagged


def test_policy_file(tmp_path):
    path = save_policy(make_policy({"strict": 18.5, "moderate": 44, "loose": 70},
                                   categories={"strict": {"SEX": 10}}, default_regime="moderate"), tmp_path / "p.json")
    assert resolve_strictness(str(path)).default == 44
    strict = resolve_strictness(f"{path}#strict")
    assert strict.default == 18.5 and strict.per_category == {"SEX": 10}
    assert decide(risk(12, "SEX"), f"{path}#strict").flagged
    with pytest.raises(ValueError, match="no regime"):
        resolve_strictness(f"{path}#medium")
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a FlexGuard policy"):
        resolve_strictness(str(tmp_path / "bad.json"))


def test_failure_policy():
    broken = RiskScore.failure("unparsable answer", scorer="x")
    blocked = decide(broken, "loose")
    assert blocked.flagged and blocked.failed and "unparsable answer" in blocked.reason and "blocked" in blocked.reason
    allowed = decide(broken, "loose", on_error="allow")
    assert not allowed.flagged and allowed.failed and "allowed" in allowed.reason
    with pytest.raises(FlexGuardError, match="unparsable"):
        decide(broken, "loose", on_error="raise")
    with pytest.raises(ValueError):
        decide(broken, "loose", on_error="ignore")  # type: ignore[arg-type]


def test_f1_and_curve_agree():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 30 + rng.normal(40, 15, 300), 0, 100)
    thresholds, f1 = f1_curve(scores, labels)
    for t, value in list(zip(thresholds, f1, strict=True))[::25]:
        assert value == pytest.approx(f1_at(scores, labels, t))


def test_f1_hand_computed():
    # flagged at 50: scores 60, 70 (tp=1, fp=1); positives 2 -> F1 = 2*1/(2+2) = 0.5
    assert f1_at([10, 60, 70, 30], [0, 1, 0, 1], 50) == pytest.approx(0.5)


def test_calibration_finds_separating_threshold():
    scores = [5, 10, 15, 30, 50, 55, 80, 90]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    threshold, f1 = calibrate_threshold(scores, labels)
    assert 30 < threshold <= 50 and f1 == pytest.approx(1.0)
    strict_fpr, _ = calibrate_threshold([10, 20, 30, 40, 45, 60], [0, 0, 0, 0, 1, 1], max_false_positive_rate=0.25)
    assert 30 < strict_fpr <= 45
    with pytest.raises(ValueError):
        calibrate_threshold([1, 2], [0, 0])


def test_shadow_mode_records_the_verdict_and_never_flags():
    flagged = decide(risk(70, "VIO"), "moderate", shadow=True)
    assert (flagged.flagged, flagged.would_flag, flagged.shadow) == (False, True, True)
    assert flagged.reason.startswith("shadow, not enforced: flagged")
    allowed = decide(risk(10), "moderate", shadow=True)
    assert (allowed.flagged, allowed.would_flag) == (False, False)
    undecided = decide(RiskScore.failure("boom"), "moderate", "block", shadow=True)
    assert (undecided.flagged, undecided.would_flag, undecided.failed) == (False, True, True)
    assert decide(risk(70, "VIO"), "moderate").would_flag is True


def test_shadow_mode_refuses_on_error_raise_and_non_bools():
    with pytest.raises(ValueError, match="on_error='raise'"):
        decide(risk(70, "VIO"), "moderate", "raise", shadow=True)
    with pytest.raises(ValueError, match="shadow must be true or false"):
        decide(risk(70, "VIO"), "moderate", shadow="yes")


def test_every_guard_failure_is_a_flexguard_error():
    from flexguard_plugins import BatchTimeoutError, GuardClosedError, PolicyViolation, UndecidedError

    for error in (UndecidedError, GuardClosedError, BatchTimeoutError, PolicyViolation):
        assert issubclass(error, FlexGuardError) and issubclass(error, RuntimeError)
    with pytest.raises(UndecidedError):
        decide(RiskScore.failure("boom"), "moderate", "raise")


@pytest.mark.parametrize("score, threshold", [(20.97, 21), (40.999, 41), (60.99999, 61), (41.0, 41), (40.96, 40.95)])
def test_the_reason_never_shows_a_score_on_the_wrong_side_of_the_line(score, threshold):
    decision = decide(risk(score, "VIO"), threshold)
    shown = float(decision.reason.split("risk ")[1].split(" ")[0])
    limit = float(decision.reason.split("threshold ")[1].split(" ")[0])
    assert (shown >= limit) == decision.flagged == (score >= threshold), decision.reason
