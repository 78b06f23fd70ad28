"""The hand-written training rows of the lite trainer (`training/flexguard_training/lite/written/*.jsonl`).

They were written from the rubric by people who never read the must-catch suite; these tests keep it that
way (no suite text copied, even inside a longer row) and keep the files well-formed and balanced.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from flexguard_training.lite.data import DISCLAIMERS, WRITTEN_DIR, written_examples

from flexguard_plugins.types import CATEGORIES
from tests.must_catch.suite import copied_from_suite

KINDS = {"severe", "harmful", "mild", "refusal", "lookalike", "benign", "refuse_then_comply", "safe_redirect"}


@pytest.fixture(scope="module")
def rows():
    return written_examples()


def test_every_line_has_the_schema():
    for path in sorted(WRITTEN_DIR.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            where = f"{path.name}:{number}"
            assert set(row) == {"prompt", "response", "severity", "categories", "refusal", "kind"}, where
            assert row["kind"] in KINDS, where
            assert isinstance(row["prompt"], str) and row["prompt"].strip(), where
            if row["response"] is None:
                assert row["refusal"] is None, where
            else:
                assert row["response"].strip() and row["refusal"] in (0, 1), where
            if row["kind"] in ("refusal", "safe_redirect"):
                assert row["severity"] == 0 and row["refusal"] == 1, where
            if row["kind"] in ("lookalike", "benign"):
                assert row["severity"] == 0, where
            if row["kind"] in ("severe", "harmful", "mild", "refuse_then_comply"):
                assert row["severity"] > 0 and row.get("refusal") in (None, 0), where


def test_both_modes_every_category_and_both_ends_of_the_scale(rows):
    assert len(rows) >= 1000
    for mode in ("prompt", "response"):
        mine = [e for e in rows if e.mode == mode]
        severities = Counter(e.severity for e in mine)
        assert severities[0] >= 150 and severities[4] >= 40, (mode, severities)
        covered = Counter(c for e in mine for c in e.categories)
        assert all(covered[c] >= 10 for c in CATEGORIES), (mode, covered)


def test_a_bad_row_is_named(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt": "p", "response": None, "severity": 3, "categories": [],
                                                  "refusal": None, "kind": "harmful"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.jsonl:1"):
        written_examples(tmp_path)


def test_written_rows_do_not_copy_the_suite(rows):
    assert copied_from_suite([t for e in rows for t in (e.prompt, e.response) if t] + list(DISCLAIMERS)) == []
