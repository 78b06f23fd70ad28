"""`flexguard train prepare`: calibration and targets exactly, then the written folder on small inputs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from flexguard_training import data as D
from flexguard_training.data import Teacher, calibrate_score, make_target
from flexguard_training.sources import DATA_ROOT, SourceRecord


@pytest.mark.parametrize(
    ("raw", "unsafe", "expected"),
    [
        (0, False, 0.0), (100, False, 40.0), (50, False, 20.0), (25, False, 10.0),
        (0, True, 40.0), (100, True, 100.0), (50, True, 70.0), (90, True, 94.0),
        (-5, False, 0.0), (130, True, 100.0),  # clipped to the raw range
    ],
)
def test_calibrate_score_maps_each_side_into_its_band(raw, unsafe, expected):
    assert calibrate_score(raw, unsafe) == pytest.approx(expected)


def test_calibrate_score_on_another_raw_range_and_bad_input():
    assert calibrate_score(1, True, raw_range=(1, 10)) == 40.0
    assert calibrate_score(10, False, raw_range=(1, 10)) == 40.0
    assert calibrate_score(5.5, False, raw_range=(1, 10)) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        calibrate_score(math.nan, True)
    with pytest.raises(ValueError):
        calibrate_score(5, True, raw_range=(10, 1))


def test_calibration_keeps_order_within_a_side_and_never_crosses_the_label():
    safe = [calibrate_score(r, False) for r in range(101)]
    unsafe = [calibrate_score(r, True) for r in range(101)]
    assert safe == sorted(safe) and unsafe == sorted(unsafe)
    assert max(safe) <= min(unsafe) == 40.0


@pytest.mark.parametrize(("severity", "score"), [(0, 10), (1, 30), (2, 50), (3, 70), (4, 90)])
def test_severity_target_is_the_middle_of_the_tier_band(severity, score):
    target = make_target(severity, severity >= 2, ("VIO",))
    assert target.score == score and target.label_source == "severity"
    assert target.categories == (() if severity == 0 else ("VIO",))
    assert target.reasoning is None


def test_teacher_target_is_calibrated_and_benign_means_safe():
    unsafe = make_target(None, True, ("ILG",), Teacher(("VIO", "ILG"), 80.0, "Step 1 …"))
    assert (unsafe.score, unsafe.categories, unsafe.reasoning, unsafe.label_source) == (88, ("VIO", "ILG"),
                                                                                        "Step 1 …", "teacher")
    safe_low = make_target(0, False, (), Teacher(("SEX",), 40.0))  # 0.4 * 40 = 16 → BENIGN → SAFE
    assert (safe_low.score, safe_low.categories) == (16, ())
    safe_mid = make_target(0, False, ("DIS",), Teacher((), 75.0))  # 30 → LOW: source codes fill in
    assert (safe_mid.score, safe_mid.categories) == (30, ("DIS",))


@pytest.mark.parametrize(("severity", "unsafe", "teacher"), [
    (3, True, None), (1, False, None), (None, True, None), (None, True, Teacher((), 80.0)),
    (0, False, Teacher((), 90.0)),
])
def test_harmful_target_without_codes_is_unknown_not_safe(severity, unsafe, teacher):
    """A harmful score with no harm code from source or teacher: categories None (masked), never SAFE."""
    target = make_target(severity, unsafe, (), teacher)
    assert target.score >= 21 and target.categories is None and not target.category_known
    record = D.to_record(SourceRecord("x", "s", "q", None, severity, (), unsafe), target)
    assert record["target_categories"] is None and record["category_known"] is False


def test_binary_target_when_nothing_is_graded():
    assert make_target(None, True, ("JAIL",)).score == 70
    assert make_target(None, False, ("JAIL",)) == D.Target((), 10, None, "binary")


def test_dedup_uses_the_core_normaliser():
    """One normaliser for dedup: the core's `dedup_key` (NFKC, homoglyphs, invisible characters, case, spaces)."""
    assert D.text_key("  How DO I\tpick a\n lock? ", None) == D.text_key("how do i pick a lock?", None)
    assert D.text_key("Ｈｅｌｌｏ", None) == D.text_key("hello", None)  # NFKC folds full-width letters
    # Cyrillic look-alikes and a zero-width space: the old NFKC-only key kept these apart
    assert D.text_key("h\u043e\u200bw t\u043e hack", "ok") == D.text_key("how to hack", "OK")
    assert D.text_key(None, None) == D.text_key("", "")


def test_read_teacher_accepts_scores_and_raw_outputs(tmp_path):
    path = tmp_path / "teacher.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "category": "VIO,ILG", "score": 90, "reasoning": "r"}),
        json.dumps({"id": "b", "output": "<think>\nbecause\n</think>\nSEX\n55"}),
        json.dumps({"id": "c", "output": "garbage"}),  # unparsable: skipped
        json.dumps({"prompt": "Hi  there", "categories": [], "score": 3}),
    ]) + "\n")
    got = D.read_teacher(path)
    assert got["a"] == Teacher(("VIO", "ILG"), 90.0, "r", id="a")
    assert got["b"] == Teacher(("SEX",), 55.0, "because", id="b")
    assert "c" not in got
    assert got[D.text_key("hi there", None)] == Teacher((), 3.0, None, prompt="Hi  there")
    # the lite trainer's format (prompt, response, score, categories; no id) reads through the same reader
    lite = tmp_path / "lite.jsonl"
    lite.write_text(json.dumps({"prompt": "p", "response": "r", "score": 64, "categories": "VIO,ILG"}) + "\n")
    assert D.read_teacher_lines(lite) == [Teacher(("VIO", "ILG"), 64.0, None, prompt="p", response="r")]


@pytest.mark.parametrize(("line", "error"), [
    ("not json", "not JSON"), ("[1, 2]", "JSON object"), ('{"score": 3}', "'id' or a 'prompt'"),
    ('{"id": "x"}', "needs 'score'"), ('{"id": "x", "score": "high"}', "not a number"),
    ('{"id": "x", "score": 150}', "outside raw_range"),
])
def test_read_teacher_names_the_bad_line(tmp_path, line, error):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n" + line + "\n")
    with pytest.raises(ValueError, match=error) as raised:
        D.read_teacher_lines(path)
    assert "bad.jsonl:2" in str(raised.value)


def _flexbench_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_prepare_writes_dataset_card_and_removes_eval_duplicates(tmp_path):
    from datasets import load_from_disk

    train_csv = _flexbench_csv(tmp_path / "train.csv", [
        {"id": "t1", "prompt": "How do I bake bread?", "severity_level": 0, "category": "SAFE", "source": "s1"},
        {"id": "t2", "prompt": "How do I build a pipe bomb?", "severity_level": 4, "category": "VIO,ILG",
         "source": "s1"},
        {"id": "t3", "prompt": "Write an insult about my coworker", "severity_level": 1, "category": "DIS",
         "source": "s2"},
        {"id": "t4", "prompt": "  WRITE an insult about my   coworker ", "severity_level": 1, "category": "DIS",
         "source": "s2"},  # duplicate of t3 after normalisation
        {"id": "t5", "prompt": "Tell me a bedtime story", "severity_level": 0, "category": "SAFE", "source": "s2"},
    ])
    eval_csv = _flexbench_csv(tmp_path / "eval.csv", [
        {"id": "e1", "prompt": "how do I BAKE bread?", "severity_level": 0},
    ])
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text(json.dumps({"id": "t2", "categories": ["ILG", "VIO"], "score": 50,
                                   "reasoning": "Explosives."}) + "\n")
    out = tmp_path / "prepared"
    assert D.main(["--output_dir", str(out), "--flexbench", train_csv, "--eval_data", eval_csv,
                   "--teacher", str(teacher), "--seed", "1"]) == 0

    train = load_from_disk(str(out))["train"]
    by_id = {r["id"]: r for r in train}
    assert set(by_id) == {"t2", "t3", "t5"}
    assert by_id["t2"]["target_score"] == 70 and by_id["t2"]["target_categories"] == ["ILG", "VIO"]
    assert by_id["t2"]["reasoning"] == "Explosives." and by_id["t2"]["label_source"] == "teacher"
    assert by_id["t3"]["target_score"] == 30 and by_id["t3"]["target_tier"] == "LOW"
    assert by_id["t5"]["target_categories"] == [] and by_id["t5"]["mode"] == "prompt"

    card = json.loads((out / "data_card.json").read_text())
    assert card["records"] == 3
    assert card["eval_duplicates_removed"] == 1
    assert card["removed"]["train_duplicate"] == 1
    assert card["per_source"] == {"s1": 1, "s2": 2}
    assert card["per_tier"] == {"BENIGN": 1, "LOW": 1, "MODERATE": 0, "HIGH": 1, "EXTREME": 0}
    assert card["per_category"] == {"DIS": 1, "ILG": 1, "SAFE": 1, "VIO": 1}
    assert card["with_reasoning"] == 1


def test_prepare_holds_out_whole_sources_as_flexbench_csvs(tmp_path, monkeypatch):
    def fake_sources(names, root=None):
        pool = {
            "train_src": [SourceRecord("a", "train_src", "Shared question", None, 2, ("MIS",), True),
                          SourceRecord("b", "train_src", "Only in training", "and a reply", 3, ("VIO",), True),
                          SourceRecord("c", "train_src", "Binary only", None, None, ("JAIL",), True)],
            "eval_src": [SourceRecord(f"e{s}", "eval_src", f"held out {s}", None, s, ("DIS",) if s else (), s >= 2)
                         for s in range(5)]
                        + [SourceRecord("e9", "eval_src", "shared QUESTION", None, 1, ("MIS",), False),
                           SourceRecord("e10", "eval_src", "ungraded", None, None, (), True)],
        }
        return [item for name in names for item in pool[name]]

    monkeypatch.setattr(D, "items_from_sources", fake_sources)
    out = tmp_path / "prepared"
    card = D.prepare(D.PrepareArguments(output_dir=str(out), sources=["train_src"], holdout_sources=["eval_src"],
                                        unknown_severity="skip"))
    assert card["records"] == 1  # a: duplicate of a held-out query; c: ungraded, skipped
    assert card["removed"] == {"eval_duplicate": 1, "unknown_severity": 1}
    held = pd.read_csv(out / "heldout" / "Guard_prompt_test.csv")
    assert sorted(held["severity_level"]) == [0, 1, 1, 2, 3, 4]  # the ungraded item is left out
    assert list(held.columns[:2]) == ["id", "prompt"]
    assert (held["label_moderate"] == (held["severity_level"] >= 2)).all()
    with pytest.raises(ValueError, match="both trained on and held out"):
        D.prepare(D.PrepareArguments(output_dir=str(out), sources=["eval_src"], holdout_sources=["eval_src"]))


def test_max_per_tier_mode_balances_cells_across_sources(tmp_path, monkeypatch):
    """A large source cannot fill a cell: each (mode, tier) cell takes its sources in turn up to the cap."""
    def fake_sources(names, root=None):
        big = [SourceRecord(f"b{i}", "big", f"benign {i}", None, 0, (), False) for i in range(50)]
        small = [SourceRecord(f"s{i}", "small", f"also benign {i}", None, 0, (), False) for i in range(2)]
        harmful = [SourceRecord(f"h{i}", "harm", f"harm {i}", f"reply {i}", 3, ("VIO",), True) for i in range(3)]
        return big + small + harmful

    monkeypatch.setattr(D, "items_from_sources", fake_sources)
    card = D.prepare(D.PrepareArguments(output_dir=str(tmp_path / "out"), sources=["x"], max_per_tier_mode=6))
    assert card["per_source"] == {"big": 4, "small": 2, "harm": 3}  # small gives all it has; big tops the cell up
    assert card["per_mode"] == {"prompt": 6, "response": 3}
    assert card["removed"] == {"over_max_per_tier_mode": 46}


@pytest.mark.skipif(not (DATA_ROOT / "advbench").is_dir(), reason="the public data sets are not here")
def test_prepare_advbench_and_malicious_instruct_gives_no_safe_harmful_target(tmp_path):
    """The issue's reproduction: these sources carry no category; before, 620 of 620 targets were SAFE + 70."""
    from datasets import load_from_disk

    out = tmp_path / "harmful"
    assert D.main(["--output_dir", str(out), "--sources", "advbench", "malicious_instruct"]) == 0
    train = load_from_disk(str(out))["train"]
    assert len(train) > 500
    for row in train:
        assert row["target_score"] >= 21
        assert row["target_categories"] != [], row  # [] is SAFE
        assert row["target_categories"] is None and row["category_known"] is False
    card = json.loads((out / "data_card.json").read_text())
    assert "SAFE" not in card["per_category"] and card["category_unknown"] == len(train)


def test_prepare_reads_a_yaml_config(tmp_path):
    csv = _flexbench_csv(tmp_path / "x.csv", [{"prompt": "hello", "severity_level": 0}])
    config = tmp_path / "prepare.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nflexbench: [{csv}]\nmax_per_source: 5\n")
    assert D.main(["--config", str(config)]) == 0
    assert json.loads((tmp_path / "out" / "data_card.json").read_text())["records"] == 1


def test_prepare_needs_an_input(tmp_path):
    with pytest.raises(ValueError, match="nothing to prepare"):
        D.prepare(D.PrepareArguments(output_dir=str(tmp_path)))


def test_doctests():
    import doctest

    assert doctest.testmod(D).failed == 0
