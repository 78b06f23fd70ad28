"""`flexguard calibrate`: fitted thresholds, a policy file the core accepts everywhere as strictness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexguard_plugins.evaluation import calibrate as C
from flexguard_plugins.evaluation import evaluate as E
from flexguard_plugins.evaluation import metrics as M
from flexguard_plugins.evaluation.baselines import FlexGuardScorer
from flexguard_plugins.evaluation.thresholds import calibrate_threshold
from flexguard_plugins.policy import REGIMES, resolve_strictness


def _table(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([r["score"] for r in records], dtype=float), np.array([r["severity"] for r in records])


def test_policy_from_data_is_used_by_the_core(flexbench_dir, tmp_path, tier_guard):
    out = tmp_path / "policy.json"
    saved = tmp_path / "valid_scores.jsonl"
    policy = C.calibrate(out, data=str(flexbench_dir), scorer=FlexGuardScorer(tier_guard), save_scores=saved)
    assert json.loads(out.read_text()) == policy
    scores, severity = _table(saved)
    for regime, minimum in (("strict", 1), ("moderate", 2), ("loose", 3)):
        expected, _ = calibrate_threshold(scores, severity >= minimum)
        assert policy["regimes"][regime]["threshold"] == pytest.approx(expected, abs=1e-4)
        assert resolve_strictness(f"{out}#{regime}").default == pytest.approx(expected, abs=1e-4)
    assert policy["meta"]["split"] == "valid" and policy["meta"]["n"] == 60
    # the facade accepts the file as strictness: its default regime (moderate) decides
    moderate = policy["regimes"]["moderate"]["threshold"]
    decision = tier_guard.check("tone-2 something", strictness=str(out))
    assert decision.threshold == pytest.approx(moderate)
    assert decision.flagged == (decision.score >= moderate)
    strict = tier_guard.check("tone-2 something", strictness=f"{out}#strict")
    assert strict.threshold == pytest.approx(policy["regimes"]["strict"]["threshold"])


def test_from_scores_matches_scoring_again(flexbench_dir, tmp_path, tier_guard):
    run = tmp_path / "eval"
    E.evaluate(str(flexbench_dir), run, split="valid", scorer=FlexGuardScorer(tier_guard), plots=False)
    from_scores = C.calibrate(tmp_path / "a.json", scores=run / "scores.jsonl")
    from_data = C.calibrate(tmp_path / "b.json", data=str(flexbench_dir), scorer=FlexGuardScorer(tier_guard))
    assert from_scores["regimes"] == from_data["regimes"]


def test_per_category_thresholds(flexbench_dir, tmp_path, tier_guard):
    out = tmp_path / "cat.json"
    policy = C.calibrate(out, data=str(flexbench_dir), scorer=FlexGuardScorer(tier_guard), per_category=True,
                         min_category_items=5)
    categories = policy["regimes"]["moderate"].get("categories", {})
    assert categories and set(categories) <= {"VIO", "ILG", "SEX"}
    resolved = resolve_strictness(f"{out}#moderate")
    assert dict(resolved.per_category) == pytest.approx(categories, abs=1e-4)
    none = C.calibrate(tmp_path / "none.json", data=str(flexbench_dir), scorer=FlexGuardScorer(tier_guard),
                       per_category=True, min_category_items=1000)
    assert all("categories" not in entry for entry in none["regimes"].values())


def test_false_positive_target_for_one_regime(flexbench_dir, tmp_path, tier_guard):
    saved = tmp_path / "s.jsonl"
    policy = C.calibrate(tmp_path / "fpr.json", data=str(flexbench_dir), scorer=FlexGuardScorer(tier_guard),
                         save_scores=saved, max_false_positive_rate=0.0, regimes=["moderate"])
    free = C.calibrate(tmp_path / "free.json", scores=saved)
    scores, severity = _table(saved)
    moderate = policy["regimes"]["moderate"]["threshold"]
    assert M.false_positive_rate(scores, severity, moderate, "moderate") == 0.0
    assert M.false_positive_rate(scores, severity, free["regimes"]["moderate"]["threshold"], "moderate") > 0.0
    assert policy["regimes"]["strict"] == free["regimes"]["strict"]
    assert policy["meta"]["fitted"]["moderate"]["method"] == "fpr"


def test_main_cli(flexbench_dir, tmp_path, capsys):
    out = tmp_path / "cli.json"
    code = C.main(["--data", str(flexbench_dir), "--subset", "response", "--scorer",
                   "tests.fixtures_eval:tier_probability", "--out", str(out), "--default-regime", "strict"])
    assert code == 0
    policy = json.loads(out.read_text())
    assert policy["default_regime"] == "strict" and set(policy["regimes"]) == set(REGIMES)
    assert resolve_strictness(str(out)).default == policy["regimes"]["strict"]["threshold"]
    assert C.main(["--data", str(flexbench_dir), "--out", str(out), "--regime", "strict"]) == 2
    assert "needs --max-false-positive-rate" in capsys.readouterr().err
    assert C.main(["--out", str(out)]) == 2
    assert "exactly one of --data" in capsys.readouterr().err
    code = C.main(["--data", str(flexbench_dir), "--scorer", "tests.fixtures_eval:tier_binary", "--out", str(out)])
    assert code == 2 and "no threshold to calibrate" in capsys.readouterr().err
