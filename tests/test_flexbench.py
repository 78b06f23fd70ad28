"""Loading FlexBench-format data: hub id, folder, single files, column detection and its errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flexguard_plugins.evaluation import flexbench
from flexguard_plugins.evaluation.flexbench import HUB_ID, load_flexbench, to_items


def test_folder_prompt_and_response(flexbench_dir):
    prompt = load_flexbench(flexbench_dir, "prompt", "test")
    assert len(prompt) == 60
    assert prompt["response"].isna().all()
    assert {"id", "prompt", "severity_level", "label_strict", "label_moderate", "label_loose", "source",
            "category"} <= set(prompt.columns)
    assert prompt.attrs["columns"]["prompt"] == "prompt"
    response = load_flexbench(flexbench_dir, "response", "valid")
    items = to_items(response)
    assert all(item.mode == "response" for item in items)
    assert "tone-" in items[0].response and items[0].prompt.startswith("question")


def test_missing_file_names_what_the_folder_holds(tmp_path):
    (tmp_path / "Guard_prompt_test.csv").write_text("id,prompt,severity_level\n1,hi,0\n")
    with pytest.raises(FileNotFoundError, match="Guard_prompt_test.csv"):
        load_flexbench(tmp_path, "response", "test")


def test_synonyms_and_derived_labels(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"query": ["a", "b", "c", "d", "e"], "answer": ["r1", "r2", "r3", "r4", "r5"],
                  "severity": [0, 1, 2, 3, 4]}).to_csv(path, index=False)
    frame = load_flexbench(path)  # a single file with a response column → response mode
    assert frame.attrs["subset"] == "response"
    assert frame.attrs["columns"] == {"prompt": "query", "response": "answer", "severity": "severity", "id": None}
    assert frame["label_strict"].tolist() == [0, 1, 1, 1, 1]
    assert frame["label_moderate"].tolist() == [0, 0, 1, 1, 1]
    assert frame["label_loose"].tolist() == [0, 0, 0, 1, 1]
    assert frame["id"].tolist() == ["0", "1", "2", "3", "4"]
    prompt_only = load_flexbench(path, "prompt")
    assert prompt_only["response"].isna().all()


def test_overrides(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"body": ["a"], "reply_text": ["b"], "severity_level": [2]}).to_csv(path, index=False)
    frame = load_flexbench(path, "response", prompt_column="body", response_column="reply_text")
    assert (frame.loc[0, "prompt"], frame.loc[0, "response"]) == ("a", "b")
    with pytest.raises(ValueError, match="'nope' is not a column; found: body, reply_text, severity_level"):
        load_flexbench(path, "response", prompt_column="nope")


def test_unusable_columns_error_names_the_columns(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"foo": ["a"], "bar": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError) as error:
        load_flexbench(path, "prompt")
    message = str(error.value)
    assert "Columns found: foo, bar" in message and "prompt text column" in message and "severity_level" in message


def test_bad_severity_is_rejected(tmp_path):
    path = tmp_path / "sev.csv"
    pd.DataFrame({"prompt": ["a", "b"], "severity_level": [1, 9]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="row 1: severity must be an integer 0-4"):
        load_flexbench(path, "prompt")


def test_jsonl_tier_names_and_duplicate_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"id": 7, "instruction": "x", "severity_level": "HIGH"},
            {"id": 7, "instruction": "y", "severity_level": "benign"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = load_flexbench(path)
    assert frame["severity_level"].tolist() == [3, 0]
    assert frame["id"].tolist() == ["7", "7#1"]


def test_label_column_disagreeing_with_severity_is_overridden(tmp_path, caplog):
    path = tmp_path / "l.csv"
    pd.DataFrame({"prompt": ["a"], "severity_level": [2], "label_loose": [1]}).to_csv(path, index=False)
    frame = load_flexbench(path, "prompt")
    assert frame["label_loose"].tolist() == [0]
    assert "label_loose disagrees" in caplog.text


def test_hub_id_uses_load_dataset_with_the_card_files(flexbench_dir, tmp_path, monkeypatch):
    """Only the I/O seam is replaced: the call is recorded and served from the local folder."""
    import datasets

    real = datasets.load_dataset
    calls = []

    def fake(path, *args, data_files=None, split=None, **kwargs):
        calls.append((path, data_files, split))
        local = {k: str(flexbench_dir / v) for k, v in data_files.items()}
        return real("csv", data_files=local, split=split, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    frame = load_flexbench(HUB_ID, "response", "valid")
    assert calls == [(HUB_ID, {"valid": "Guard_response_valid.csv"}, "valid")]
    assert len(frame) == 60 and frame.attrs["subset"] == "response"
    assert flexbench.has_split(HUB_ID, "valid")


def test_nonexistent_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file, a folder, nor a hub id"):
        load_flexbench(str(tmp_path / "missing" / "deep" / "x.csv"))
    with pytest.raises(ValueError, match="subset must be one of"):
        load_flexbench(str(tmp_path), "both")


def test_an_unreachable_hub_id_is_one_line_naming_it():
    """Offline (the test run sets HF_DATASETS_OFFLINE), an uncached hub id ends in one line, not the datasets trace."""
    with pytest.raises(FileNotFoundError) as caught:
        load_flexbench("flexguard-tests/no-such-benchmark", "prompt", "test")
    message = str(caught.value)
    assert "'flexguard-tests/no-such-benchmark'" in message and "Guard_prompt_test.csv" in message, message
    assert "\n" not in message and caught.value.__cause__ is None
