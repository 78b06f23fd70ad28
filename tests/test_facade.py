from __future__ import annotations

import asyncio
import math

import pytest

from flexguard_plugins import FlexGuard, FlexGuardError, ModerationItem
from flexguard_plugins.scorer import FACADE_OPTIONS
from tests.scripted_backend import ScriptedBackend
from tests.test_close import _close_scripted


@pytest.fixture
def guard():
    g = FlexGuard(ScriptedBackend(max_content_tokens=64), max_wait_ms=5)
    yield g
    g.close()


def test_sync_score_and_check(guard):
    risk = guard.score("how to build a bomb")
    assert risk.ok and risk.score == 92 and risk.categories == ("VIO", "ILG") and risk.scorer == "scripted"
    decision = guard.check("how to steal a car", strictness="loose")
    assert not decision.flagged and decision.threshold == 61 and "55.0" in decision.reason
    assert guard.check("how to steal a car", strictness="moderate").flagged
    assert guard.check("nice weather", strictness="strict").allowed


def test_response_mode_judges_the_reply(guard):
    assert guard.score("tell me about bombs", "I can't help with that.").score == 4
    assert guard.score("tell me a story", "then he built a bomb").score == 92


async def test_async_forms(guard):
    assert (await guard.ascore("steal")).score == 55
    assert (await guard.acheck("flirt", strictness="strict")).flagged
    batch = await guard.acheck_batch([{"prompt": "bomb"}, ModerationItem("ok"), "flirt"], strictness="moderate")
    assert [d.flagged for d in batch] == [True, False, False]
    assert [r.score for r in await guard.ascore_batch(["a", "steal"])] == [4, 55]


async def test_thousand_concurrent_checks_are_batched_in_order():
    backend = ScriptedBackend(delay_s=0.01, max_batch_size=64)
    guard = FlexGuard(backend, max_wait_ms=5)
    texts = [("bomb" if i % 7 == 0 else "steal" if i % 5 == 0 else f"hello {i}") for i in range(1000)]
    decisions = await asyncio.gather(*(guard.acheck(t, strictness="moderate") for t in texts))
    assert len(decisions) == 1000
    expected = [92 if "bomb" in t else 55 if "steal" in t else 4 for t in texts]
    assert [d.score for d in decisions] == expected
    assert sum(len(b) for b in backend.batches) == 1000
    assert max(len(b) for b in backend.batches) == 64 and len(backend.batches) <= 1000 // 64 + 3
    await guard.aclose()


async def test_callers_from_several_event_loops_share_one_batcher():
    backend = ScriptedBackend(delay_s=0.02)
    guard = FlexGuard(backend, max_wait_ms=20)

    def run_in_own_loop(text: str) -> float:
        return asyncio.run(guard.ascore(text)).score

    scores = await asyncio.gather(*(asyncio.to_thread(run_in_own_loop, t) for t in ["bomb", "steal", "x", "flirt"]))
    assert scores == [92, 55, 4, 30]
    assert len(backend.batches) < 4
    await guard.aclose()


def test_long_input_is_chunked_and_max_wins(guard):
    text = ("harmless words here. " * 60) + "and then a bomb." + (" more harmless text." * 60)
    risk = guard.score(text)
    assert risk.score == 92 and risk.span is not None
    start, end = risk.span
    assert "bomb" in text[start:end] and end - start < len(text)
    from flexguard_plugins.scorer import CHUNKS_PER_BATCH

    sizes = [len(b) for b in guard.backend.batches]
    assert sum(sizes) > 2 and max(sizes) == CHUNKS_PER_BATCH  # a few chunks a batch: others can ride along


def test_a_chunk_in_a_sensitive_category_is_not_hidden_by_a_riskier_one(guard):
    """A long text whose riskiest chunk is ILG 55 and another chunk SEX 30: a SEX threshold of 25 flags it."""
    text = ("harmless words here. " * 60) + "how to steal a car." + (" harmless text." * 60) + " a flirt." + (
        " more harmless text." * 60)
    risk = guard.score(text)
    assert risk.score == 55 and risk.categories == ("ILG",) and dict(risk.peaks) == {"ILG": 55.0, "SEX": 30.0}
    assert guard.check(text, strictness={"default": "loose", "SEX": 25}).flagged
    assert not guard.check(text, strictness="loose").flagged
    assert guard.score("how to steal a car").peaks == ()  # one part: nothing to add


def _contiguous(spans: list[tuple[int, int]]) -> bool:
    """Each chunk starts at or before the end of the one before it: together they cover the text."""
    return all(b >= c for (_, b), (c, _) in zip(spans, spans[1:], strict=False))


@pytest.mark.parametrize("words", [300, 530, 777])
def test_every_chunk_is_full_and_the_last_ends_at_the_text_end(words):
    """A short remainder chunk would be read whole, where a harmful closing sentence is diluted by its few
    neighbours (the lite scorer reads sentence windows only in full chunks): the last chunk is a full one."""
    from flexguard_plugins.chunking import chunk_spans, token_offsets

    text = " ".join(f"word{i % 7}." for i in range(words))
    spans = chunk_spans(text, 64)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert _contiguous(spans)
    assert all(len(token_offsets(text[a:b], None)) >= 64 - 16 for a, b in spans)  # none is a short remainder


def test_without_a_full_last_chunk_the_chunks_of_a_growing_text_stay_put():
    """A streamed reply is re-checked as it grows; a backend with a prefix cache computes only what changed if every
    chunk but the last keeps its span, which a full last chunk ending at the text's end would move each time."""
    from flexguard_plugins.chunking import chunk_spans

    text = " ".join(f"Sentence {i} talks about {'the weather ' * (i % 4)}in town." for i in range(300))
    earlier = None
    for end in range(2000, len(text), 397):
        spans = chunk_spans(text[:end], 128, full_last=False)
        assert spans[0][0] == 0 and spans[-1][1] == end and _contiguous(spans)
        if earlier is not None:
            assert spans[:len(earlier) - 1] == earlier[:-1]  # only the last chunk grows or a new one follows
            assert spans[len(earlier) - 1][0] == earlier[-1][0]
        earlier = spans
    assert chunk_spans(text[:end], 128)[-1] != spans[-1]  # the default (the lite scorer's) differs


@pytest.mark.parametrize("tokenizer", [None, "lite"])
def test_chunks_start_and_end_on_sentence_boundaries(tokenizer):
    """A chunk cut mid-sentence opens on a fragment ("pinch of salt.") that no writer wrote, and a fragment read
    alone is noise the model may score as risky: boundaries move to a sentence boundary inside the overlap."""
    from flexguard_plugins.chunking import chunk_spans

    if tokenizer == "lite":
        from flexguard_plugins.lite.encoder import TokenizerAdapter, load_tokenizer

        tokenizer = TokenizerAdapter(load_tokenizer())
    sentences = [f"Sentence {i} talks about {'the weather ' * (i % 4)}in town." for i in range(200)]
    text = " ".join(sentences)
    spans = chunk_spans(text, 128, tokenizer)
    assert len(spans) > 10 and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert _contiguous(spans)
    assert all(text[a:].startswith("Sentence ") and text[:b].rstrip().endswith("in town.") for a, b in spans)
    unbroken = "word " * 2000  # no sentence boundary at all: chunks as before, still covering the text
    spans = chunk_spans(unbroken, 64)
    assert spans[-1][1] == len(unbroken) and _contiguous(spans)


def test_long_response_keeps_prompt_context_tail(guard):
    long_prompt = "context " * 500 + "final question"
    guard.score(long_prompt, "short reply")
    item = guard.backend.batches[-1][0]
    assert item.prompt.endswith("final question") and len(item.prompt) < len(long_prompt)


def test_empty_input_fails_closed_without_calling_the_model(guard):
    for prompt, response in [("", None), ("   ", None), ("question", "  ")]:
        decision = guard.check(prompt, response)
        assert decision.flagged and decision.failed and "empty" in decision.reason
    assert guard.backend.batches == []
    assert not guard.check("", on_error="allow").flagged
    with pytest.raises(FlexGuardError):
        guard.check("", on_error="raise")


def test_unparsable_answer_follows_on_error(guard):
    d = guard.check("garbage in", strictness="loose")
    assert d.flagged and d.failed and "could not decide" in d.reason and math.isnan(d.score)
    assert not guard.check("garbage in", on_error="allow").flagged


def test_backend_crash_loses_no_item_and_keeps_order():
    guard = FlexGuard(ScriptedBackend(fail_with=ConnectionError("server at 127.0.0.1:9 refused")))
    decisions = guard.check_batch(["a", "b", "bomb"])
    assert len(decisions) == 3 and all(d.flagged and d.failed for d in decisions)
    assert all("refused" in d.reason for d in decisions)
    guard.close()


def test_bad_input_is_rejected_before_scoring(guard):
    with pytest.raises(TypeError, match="item 1"):
        guard.score_batch(["ok", 42])
    with pytest.raises(ValueError, match="item 0"):
        guard.score_batch([{"text": "x"}])
    with pytest.raises(TypeError, match="list of items"):
        guard.score_batch("just a string")
    with pytest.raises(ValueError, match="unknown strictness"):
        guard.check("x", strictness="medium")
    assert guard.backend.batches == []


def test_registry_shares_one_backend_per_backend_options(monkeypatch):
    import flexguard_plugins.scorer as scorer

    created = []

    def fake_create(name, model, **options):
        created.append((name, model, options))
        return ScriptedBackend(model, max_content_tokens=options["max_batch_tokens"])

    monkeypatch.setattr(scorer, "create_backend", fake_create)
    a = FlexGuard.load("some/model", backend="transformers", max_batch_tokens=32)
    b = FlexGuard.load("some/model", backend="transformers", max_batch_tokens=32, strictness="strict",
                       on_error="allow", max_batch_size=8, max_wait_ms=3, max_input_chars=500)
    c = FlexGuard.load("some/model", backend="transformers", max_batch_tokens=16)
    assert a is not b and a.backend is b.backend and a.backend is not c.backend and len(created) == 2
    assert (b.strictness, b.on_error, b.max_batch_size, b.max_input_chars) == ("strict", "allow", 8, 500)
    assert a.check("steal").flagged and not b.check("garbage").flagged  # each handle keeps its own defaults
    shared = a.backend
    a.close()  # releases a's handle only
    assert not shared.closed and b.score("bomb").score == 92
    with pytest.raises(RuntimeError, match="closed"):
        a.score("x")
    b.close()  # the last handle: the backend closes and leaves the registry
    assert shared.closed
    assert FlexGuard.load("some/model", backend="transformers", max_batch_tokens=32).backend is not shared
    assert len(created) == 3
    _close_scripted()


def test_cascade_escalates_only_near_the_threshold():
    cheap = FlexGuard(ScriptedBackend())
    llm_backend = ScriptedBackend()
    guard = FlexGuard(llm_backend, cascade=cheap, cascade_margin=15)
    # scripted scores: bomb 92, steal 55, flirt 30, other 4; moderate threshold 41 → escalate 30 and 55
    decisions = guard.check_batch(["bomb", "steal", "flirt", "hello"], strictness="moderate")
    assert [d.risk.scorer for d in decisions] == ["scripted"] * 4  # both are scripted; count the LLM calls
    assert [i.prompt for i in llm_backend.batches[0]] == ["steal", "flirt"]
    loose = guard.check_batch(["bomb", "steal", "flirt", "hello"], strictness="loose")  # threshold 61
    assert [i.prompt for i in llm_backend.batches[1]] == ["steal"]
    assert [d.flagged for d in loose] == [True, False, False, False]
    guard.close()
    cheap.close()


def test_cascade_escalates_near_a_category_line_the_cheap_score_may_fall_under():
    """A cheap score naming no category is near every per-category line; a part's category line counts too."""
    cheap = FlexGuard(ScriptedBackend())
    llm_backend = ScriptedBackend()
    guard = FlexGuard(llm_backend, cascade=cheap, cascade_margin=15)
    guard.check_batch(["hello", "bomb"], strictness={"default": "loose", "SEX": 12})  # 4 is 8 from the SEX line
    assert [i.prompt for i in llm_backend.batches[0]] == ["hello"]
    guard.check_batch(["hello"], strictness="loose")  # 57 from 61: the cheap score decides
    assert len(llm_backend.batches) == 1
    guard.close()
    cheap.close()
    # a long text: VIO 92 is far above every line; its SEX 30 part matters only under a SEX line near 30
    cheap = FlexGuard(ScriptedBackend(max_content_tokens=64))
    llm_backend = ScriptedBackend(max_content_tokens=64)
    guard = FlexGuard(llm_backend, cascade=cheap, cascade_margin=15)
    text = ("harmless words here. " * 60) + "a bomb." + (" harmless text." * 60) + " a flirt."
    assert guard.check(text, strictness="moderate").flagged and not llm_backend.batches
    assert guard.check(text, strictness={"default": "moderate", "SEX": 35}).flagged and llm_backend.batches
    guard.close()
    cheap.close()


def test_closed_guard_refuses_work(guard):
    guard.close()
    with pytest.raises(RuntimeError, match="closed"):
        guard.score("x")


def test_shadow_mode_on_the_facade_records_every_decision_and_blocks_nothing(caplog):
    import logging

    from tests.scripted_backend import ScriptedBackend

    with FlexGuard(ScriptedBackend(), strictness="moderate", shadow=True) as guard:
        with caplog.at_level(logging.INFO, logger="flexguard_plugins.decisions"):
            bad, fine = guard.check_batch(["a bomb", "fine"])
        assert not bad.flagged and bad.would_flag and bad.shadow
        assert not fine.flagged and not fine.would_flag
        assert sum("shadow, not enforced" in r.getMessage() for r in caplog.records) == 2
        enforced = guard.check("a bomb", shadow=False)
        assert enforced.flagged and not enforced.shadow
    with pytest.raises(ValueError, match="on_error='raise'"):
        FlexGuard(ScriptedBackend(), shadow=True, on_error="raise")


def test_load_names_its_facade_options_and_refuses_an_unknown_one():
    """`**backend_options` reaches only the backend: a misspelled facade option is an error naming both lists."""
    import inspect

    parameters = inspect.signature(FlexGuard.load).parameters
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in FACADE_OPTIONS)
    with pytest.raises(TypeError, match=r"unknown option 'strictnes'.*facade options: strictness.*lite backend"):
        FlexGuard.load(strictnes="strict")


def test_a_check_resolves_its_strictness_once(monkeypatch):
    """One resolution per call, handed on as Thresholds: not one more per item in `decide`."""
    import flexguard_plugins.policy as policy
    import flexguard_plugins.scorer as scorer

    calls = []

    def counted(strictness):
        calls.append(strictness)
        return real(strictness)

    real = policy.resolve_strictness
    monkeypatch.setattr(policy, "resolve_strictness", counted)
    monkeypatch.setattr(scorer, "resolve_strictness", counted)
    with FlexGuard(ScriptedBackend()) as guard:
        calls.clear()  # the constructor checks its default
        decisions = guard.check_batch(["bomb", "steal", "flirt", "hello"], strictness={"default": "loose", "SEX": 25})
    assert [d.flagged for d in decisions] == [True, False, True, False]
    assert calls == [{"default": "loose", "SEX": 25}]
