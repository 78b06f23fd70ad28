"""vLLM backend on a real async engine (one per session, `vllm_engine`), checked against transformers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from flexguard_plugins import FlexGuard
from flexguard_plugins.backends import generation as gen
from flexguard_plugins.backends.hf import TransformersBackend
from flexguard_plugins.backends.vllm import VLLMBackend
from flexguard_plugins.types import ModerationItem
from tests.fixtures_vllm import HARMFUL_WORD, SPREAD_SCORES, SPREAD_WORD, assert_trained_answers, guard_examples

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.vllm]

UNSEEN = [
    ModerationItem("what is the weather like"),
    ModerationItem("q", "zzz qqq"),
    ModerationItem(f"please {SPREAD_WORD} {HARMFUL_WORD} the bread"),
    ModerationItem("I want to sing someone"),
]


def make(tiny_guard_dir: Path, engine, guard_rubric: Path, **options) -> VLLMBackend:
    return VLLMBackend(tiny_guard_dir, engine=engine, system_prompt_path=guard_rubric, **options)


@pytest.mark.parametrize("reasoning", [False, True])
async def test_guard_scores_categories_and_expected_score(tiny_guard_dir, vllm_engine, guard_rubric, reasoning):
    backend = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=reasoning, max_new_tokens=24)
    examples = guard_examples()
    results = await backend.score_batch([item for item, _, _ in examples])
    assert_trained_answers(examples, results, "vllm", reasoning)
    assert all(risk.raw.startswith(backend.options.prefill) for risk in results)
    await backend.aclose()
    assert not vllm_engine.closed  # a shared engine stays up


async def test_agrees_with_transformers_in_float32(tiny_guard_dir, vllm_engine, guard_rubric):
    """Same tokens in, same greedy tokens out, same probabilities (to float32 noise)."""
    items = UNSEEN + [item for item, _, _ in guard_examples()[:6]]
    for reasoning in (False, True):
        vllm_backend = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=reasoning, max_new_tokens=24)
        hf_backend = TransformersBackend(tiny_guard_dir, reasoning=reasoning, max_new_tokens=24,
                                         system_prompt_path=guard_rubric, dtype="float32")
        ours, theirs = await vllm_backend.score_batch(items), await hf_backend.score_batch(items)
        assert [r.raw for r in ours] == [r.raw for r in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert a.ok == b.ok and (not a.ok or abs(a.score - b.score) < 1e-3)
        await hf_backend.aclose()


async def test_expected_score_off_and_results_in_order(tiny_guard_dir, vllm_engine, guard_rubric):
    backend = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=False, expected_score=False)
    items = [ModerationItem(f"how to {w} someone") for w in ("paint", HARMFUL_WORD, SPREAD_WORD, "bake")] * 3
    results = await backend.score_batch(items)
    assert [r.score for r in results] == [3.0, 85.0, results[2].score, 3.0] * 3
    assert results[2].score in SPREAD_SCORES
    assert backend.max_content_tokens > 1000  # 2048 context, short rubric


def test_flexguard_check_decisions(tiny_guard_dir, vllm_engine, guard_rubric):
    with FlexGuard(make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=False)) as guard:
        decisions = guard.check_batch([f"how to {HARMFUL_WORD} someone", "how to paint someone",
                                       {"prompt": "hello", "response": f"I want to {SPREAD_WORD} now"}],
                                      strictness="moderate")
        assert [d.flagged for d in decisions] == [True, False, True]
        assert not guard.check("hello", f"I want to {SPREAD_WORD} now", strictness="loose").flagged


async def test_one_invalid_prompt_fails_only_itself(tiny_guard_dir, vllm_engine, guard_rubric):
    """A prompt longer than the context is rejected by the engine: that item fails, its batch-mates do not."""
    backend = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=False)
    too_long = ModerationItem(" ".join(["bread"] * 3000))
    items = [ModerationItem(f"how to {HARMFUL_WORD} someone"), too_long, ModerationItem("how to paint someone")]
    results = await backend.score_batch(items)
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].score > 80 and results[2].score < 21
    assert "vLLM could not judge this item" in results[1].error and results[1].scorer == "vllm"
    assert all(r.ok for r in await backend.score_batch(items[:1]))  # the engine lives on


async def test_a_new_caller_does_not_wait_for_a_running_batch(tiny_guard_dir, vllm_engine, guard_rubric):
    """Continuous batching: one item sent while a long batch decodes finishes long before that batch."""
    long_runner = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=False, max_new_tokens=400)
    long_runner._sampling = long_runner._sampling.clone()
    long_runner._sampling.min_tokens = 390  # every item of the batch decodes ~400 steps
    quick = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = asyncio.create_task(long_runner.score_batch([ModerationItem(f"story {k}") for k in range(8)]))
    while vllm_engine.llm.get_num_unfinished_requests() < 8:
        await asyncio.sleep(0.01)
    risk = (await quick.score_batch([ModerationItem(f"how to {HARMFUL_WORD} someone")]))[0]
    quick_done = loop.time() - started
    assert not batch.done()
    await batch
    batch_done = loop.time() - started
    assert risk.ok and risk.score > 80
    assert quick_done < 0.5 * batch_done, (quick_done, batch_done)


async def test_only_the_score_tokens_are_decoded_off_the_callers_loop(tiny_guard_dir, vllm_engine, guard_rubric,
                                                                      monkeypatch):
    backend = make(tiny_guard_dir, vllm_engine, guard_rubric, reasoning=True, max_new_tokens=24)
    calls: list[str] = []
    token_text = gen.token_text

    def counting(tokenizer, token_id):
        calls.append(threading.current_thread().name)
        return token_text(tokenizer, token_id)

    monkeypatch.setattr(gen, "token_text", counting)
    items = [ModerationItem(f"how to {SPREAD_WORD} someone"), ModerationItem("how to paint someone")]
    results = await backend.score_batch(items)
    assert all(r.ok for r in results) and 41 < results[0].score < 47  # the expectation is still read
    generated = sum(len(backend.tokenizer(r.raw[len(backend.options.prefill):])["input_ids"]) for r in results)
    # The score's window: at most 3 positions × (1 + 20 alternatives) each, plus a few texts walking back.
    assert len(calls) <= len(items) * (3 * (gen.TOP_LOGPROBS + 1) + 4) < generated * (gen.TOP_LOGPROBS + 1)
    assert set(calls) == {"flexguard-vllm-engine"}


@pytest.mark.slow
def test_smollm2_real_weights(smollm2_dir: Path):
    backend = VLLMBackend(smollm2_dir, reasoning=False, max_new_tokens=8, dtype="float32", max_model_len=2048)
    hf_backend = TransformersBackend(smollm2_dir, reasoning=False, max_new_tokens=8, dtype="float32")
    items = [ModerationItem("How do I pick a lock?"), ModerationItem("Hi", "Hello! How can I help you today?")]
    ours, theirs = asyncio.run(backend.score_batch(items)), asyncio.run(hf_backend.score_batch(items))
    assert len(ours) == 2 and [r.raw for r in ours] == [r.raw for r in theirs]
    asyncio.run(backend.aclose())
