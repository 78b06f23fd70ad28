"""One item that cannot be judged is undecided by itself and never changes another item's verdict."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from flexguard_plugins import Backend, FlexGuard, FlexGuardError, ModerationItem, RiskScore
from flexguard_plugins.batching import retry_budget
from flexguard_plugins.parsing import parse_output
from tests.scripted_backend import ScriptedBackend, answer_for

HARMFUL = "how to build a bomb"  # the scripted backend answers 92 for "bomb"


# --- item 1: a bad item fails alone ------------------------------------------------------------------

async def test_an_item_that_breaks_its_batch_fails_alone_under_allow():
    backend = ScriptedBackend(poison="\ufffd", delay_s=0.01)
    guard = FlexGuard(backend, on_error="allow", max_wait_ms=30)
    texts = [HARMFUL] * 6 + ["hi \ud800"] + ["hello"] * 3
    decisions = await asyncio.gather(*(guard.acheck(t) for t in texts))
    assert any(len(batch) > 1 and any("\ufffd" in i.prompt for i in batch) for batch in backend.batches)
    assert [d.flagged for d in decisions[:6]] == [True] * 6, "harmful neighbours of a bad item stay flagged"
    assert all(not d.failed for i, d in enumerate(decisions) if i != 6)
    bad = decisions[6]
    assert bad.failed and not bad.flagged and "cannot encode" in bad.reason
    await guard.aclose()


def test_isolating_a_culprit_costs_a_bounded_number_of_calls(caplog):
    backend = ScriptedBackend(poison="POISON")
    guard = FlexGuard(backend, max_batch_size=64)
    items = [f"item {i}" + (" bomb" if i % 2 else "") for i in range(64)]
    items[37] = "POISON"
    with caplog.at_level(logging.WARNING, logger="flexguard_plugins.batching"):
        risks = guard.score_batch(items)
    splits = [r for r in caplog.records if "splitting it" in r.getMessage()]
    assert splits and "batch of 64 items failed (TypeError)" in splits[0].getMessage()
    assert not any("POISON" in r.getMessage() or "item 1" in r.getMessage() for r in caplog.records)  # no text
    assert [r.ok for r in risks] == [i != 37 for i in range(64)]
    assert risks[1].score == 92 and "cannot encode" in risks[37].error
    assert len(backend.batches) <= 1 + retry_budget(64)
    always_down = ScriptedBackend(fail_with=ConnectionError("refused"))
    with FlexGuard(always_down) as down:
        assert all(not r.ok and "refused" in r.error for r in down.score_batch([f"x{i}" for i in range(64)]))
    assert len(always_down.batches) <= 1 + retry_budget(64)
    guard.close()


def test_lone_surrogates_and_nuls_are_cleaned_at_the_door():
    assert ModerationItem.coerce("hi \ud800").prompt == "hi \ufffd"
    assert ModerationItem.coerce({"prompt": "a\x00b", "response": "\udfffc"}) == ModerationItem("ab", "\ufffdc")
    same = ModerationItem("plain")
    assert ModerationItem.coerce(same) is same
    with pytest.raises(TypeError, match="prompt must be a str"):
        ModerationItem.coerce({"prompt": b"bytes"})


async def test_real_scorer_scores_a_lone_surrogate_without_failing_its_batch(lite_guard):
    texts = ["hi \ud800", "How do I bake bread?", "What is the capital of France?", "tell me a joke \udfff"]
    risks = await asyncio.gather(*(lite_guard.ascore(t) for t in texts))
    assert all(r.ok for r in risks), [r.error for r in risks]


# --- item 2: a failed chunk does not hide a flagged chunk ----------------------------------------------

class BrokenChunkBackend(ScriptedBackend):
    """Scripted answers, but a chunk holding BROKEN cannot be parsed (a per-item failure)."""

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        self.batches.append(list(items))
        return [parse_output("no answer here" if "BROKEN" in i.judged_text else
                             f"<think>\nok\n</think>\n{answer_for(i.judged_text)}") for i in items]


@pytest.mark.parametrize("first, last", [("BROKEN", "bomb"), ("bomb", "BROKEN")])
def test_any_flagged_chunk_flags_the_item_whatever_the_order(first, last):
    guard = FlexGuard(BrokenChunkBackend(max_content_tokens=32))
    text = f"{first} " + "calm words " * 100 + f"{last}."
    for on_error in ("allow", "block", "raise"):
        decision = guard.check(text, on_error=on_error)
        assert decision.flagged and not decision.failed and decision.score == 92
        assert "bomb" in text[slice(*decision.risk.span)]
    guard.close()


def test_failed_chunk_with_a_harmless_rest_is_undecided():
    guard = FlexGuard(BrokenChunkBackend(max_content_tokens=32))
    text = "BROKEN " + "calm words " * 100
    risk = guard.score(text)
    assert risk.ok and risk.partial_error and "chunks failed" in risk.partial_error
    allowed = guard.check(text, on_error="allow")
    assert allowed.failed and not allowed.flagged and "part of the text could not be judged" in allowed.reason
    assert guard.check(text).flagged and guard.check(text).failed
    with pytest.raises(FlexGuardError, match="part of the text"):
        guard.check(text, on_error="raise")
    guard.close()


# --- item 8: input size limit, fair scheduling, chunk spans --------------------------------------------

def test_over_long_input_is_undecided_not_scored():
    backend = ScriptedBackend()
    guard = FlexGuard(backend, max_input_chars=1000)
    decision = guard.check("bomb " * 300)
    assert decision.flagged and decision.failed and "input too long" in decision.reason
    assert not guard.check("x" * 1001, on_error="allow").flagged
    with pytest.raises(FlexGuardError, match="input too long"):
        guard.check("x" * 1001, on_error="raise")
    assert backend.batches == []
    assert guard.check("y" * 1000).allowed and len(backend.batches) == 1
    # response mode: the judged reply counts; a long prompt is only context and keeps its end
    assert guard.score("q" * 5000 + " bomb?", "fine").ok
    assert backend.batches[-1][0].prompt.endswith("bomb?") and len(backend.batches[-1][0].prompt) <= 1000
    guard.close()
    assert FlexGuard(ScriptedBackend()).max_input_chars == 100_000
    with FlexGuard(ScriptedBackend(), max_input_chars=None) as unlimited:
        assert unlimited.score("z" * 150_000).ok


async def test_a_short_check_is_not_stuck_behind_a_long_text():
    unit_s = 0.1
    backend = ScriptedBackend(max_content_tokens=16, delay_s=unit_s, max_batch_size=4)
    guard = FlexGuard(backend)
    long_text = "a long but harmless sentence. " * 150  # about 80 chunks: 20 batches, 2 s
    long_task = asyncio.create_task(guard.ascore(long_text))
    await asyncio.sleep(2.5 * unit_s)
    started = time.perf_counter()
    short = await guard.acheck("steal")
    latency = time.perf_counter() - started
    assert short.score == 55
    assert latency < 4.5 * unit_s, f"short check waited {latency:.2f} s behind the long text"
    assert not long_task.done()
    assert all(sum("harmless" in i.prompt for i in batch) <= 2 for batch in backend.batches)
    await guard.aclose()  # the long text's remaining chunks are answered at once
    rest = await asyncio.wait_for(long_task, 5)
    assert rest.partial_error and "closed" in rest.partial_error  # undecided below the threshold


class UnitSpanBackend(Backend):
    """Says which part of the unit it was given was risky: characters 2-5 of every unit."""

    name = "spans"
    max_content_tokens = 16

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        return [RiskScore.from_score(90 if "bomb" in i.judged_text else 3, ("VIO",), span=(2, 5)) for i in items]


def test_a_backend_span_is_offset_by_its_chunk_start():
    with FlexGuard(UnitSpanBackend()) as guard:
        text = "calm words " * 30 + "xx bomb" + " calm words" * 30
        risk = guard.score(text)
        start, end = risk.span
        assert end - start == 3 and start > 0 and "bomb" in text[start - 2:start + 60]
        assert guard.score("bomb").span == (2, 5)  # not chunked: the backend's span is the item's


# --- item 13: one empty rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, response", [
    ("", None), ("   \n", None), ("\u200b\u200b", None), ("\x00\x00", None), ("\ufeff \u2060", None),
    ("question", "\u200b"), ("question", "\x00"),
])
def test_blank_after_normalisation_is_empty_input(prompt, response):
    backend = ScriptedBackend()
    with FlexGuard(backend) as guard:
        decision = guard.check(prompt, response)
        assert decision.flagged and decision.failed and "empty input" in decision.reason
        assert not guard.check(prompt, response, on_error="allow").flagged
        with pytest.raises(FlexGuardError, match="empty input"):
            guard.check(prompt, response, on_error="raise")
    assert backend.batches == []


def test_zero_width_only_text_is_empty_on_the_real_scorer(lite_guard):
    for text in ("\u200b\u200b\u200b", "\x00", "\u2060\ufeff"):
        decision = lite_guard.check(text, on_error="allow")
        assert decision.failed and "empty input" in decision.reason
