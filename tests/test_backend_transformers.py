"""transformers backend on real models: the tiny Qwen3, the tiny guard taught FlexGuard's format, SmolLM2."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from flexguard_plugins import FlexGuard
from flexguard_plugins.backends import create_backend
from flexguard_plugins.backends import generation as gen
from flexguard_plugins.backends.hf import TransformersBackend
from flexguard_plugins.types import ModerationItem
from tests.fixtures_vllm import HARMFUL_WORD, SPREAD_SCORES, SPREAD_WORD, guard_examples

ITEMS = [
    ModerationItem("How do I bake bread?"),
    ModerationItem("hi", "there friend, here is a longer answer"),
    ModerationItem("attack the castle now please"),
    ModerationItem("x"),
    ModerationItem("what", "nothing"),
]


def reference_generate(backend: TransformersBackend, item: ModerationItem, max_new_tokens: int) -> str:
    """Plain `model.generate` on one unpadded item: the output the batched, cached path must reproduce."""
    import torch

    ids = torch.tensor([gen.prompt_ids(backend.tokenizer, item, backend.options)])
    out = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False)
    return gen.decode(backend.tokenizer, out[0, ids.shape[1]:].tolist())


@pytest.fixture(scope="module")
def tiny_backends(tiny_qwen3_dir: Path):
    cached = TransformersBackend(tiny_qwen3_dir, reasoning=True, max_new_tokens=12)
    uncached = TransformersBackend(tiny_qwen3_dir, reasoning=True, max_new_tokens=12, enable_prefix_caching=False,
                                   batch_size=1)
    yield cached, uncached
    asyncio.run(cached.aclose())
    asyncio.run(uncached.aclose())


async def test_shared_prefix_cache_gives_the_uncached_outputs_and_runs_once(tiny_backends):
    cached, uncached = tiny_backends
    long_forwards = []
    forward = cached.model.forward

    def counting_forward(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 500:  # only a prefix is this long; items are a few tokens
            long_forwards.append(ids.shape)
        return forward(*args, **kwargs)

    cached.model.forward = counting_forward
    try:
        first = await cached.score_batch(ITEMS)
        second = await cached.score_batch(list(reversed(ITEMS)))
    finally:
        del cached.model.forward
    assert len(long_forwards) == 2 and cached.prefix_forwards == 2  # one prefix per mode, never recomputed
    alone = [(await uncached.score_batch([item]))[0] for item in ITEMS]
    assert [r.raw for r in first] == [r.raw for r in alone] == [r.raw for r in reversed(second)]
    assert uncached.prefix_forwards == 0
    # Same probabilities too, not just the same argmax (a position or mask slip changes these).
    ids = [gen.prompt_ids(cached.tokenizer, item, cached.options) for item in ITEMS if item.mode == "prompt"]
    with_cache, without = cached._generate("prompt", ids), uncached._generate("prompt", ids)
    for (tokens_a, steps_a), (tokens_b, steps_b) in zip(with_cache, without, strict=True):
        assert tokens_a == tokens_b and len(steps_a) == len(steps_b) == len(tokens_a) > 0
        for (token_a, alts_a), (token_b, alts_b) in zip(steps_a, steps_b, strict=True):
            alts_a, alts_b = dict(alts_a), dict(alts_b)
            assert token_a == token_b and abs(alts_a[token_a] - alts_b[token_b]) < 1e-4
            assert max(abs(alts_a[k] - alts_b[k]) for k in alts_a.keys() & alts_b.keys()) < 1e-4
    for item, risk in zip(ITEMS[:2], first[:2], strict=True):
        assert risk.raw == "<think>\n" + reference_generate(cached, item, 12)
        assert risk.scorer == "transformers"
        assert not risk.ok and risk.error  # a random model's text does not parse; the reason says why


async def test_one_host_sync_per_decoding_step_whatever_the_batch_size(tiny_backends, monkeypatch):
    """Reading a tensor on the host (`int`, `bool`, `.item()`, `.tolist()`) waits for the GPU; the decoding
    loop may do it once per step, never once per row. Counted on the reads made by the backend's own code."""
    import sys

    import torch

    cached, _ = tiny_backends
    reads = {"n": 0}
    backend_file = sys.modules[TransformersBackend.__module__].__file__
    for name in ("__int__", "__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if sys._getframe(1).f_code.co_filename == backend_file:
                reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps = cached.options.max_new_tokens
    ids = [gen.prompt_ids(cached.tokenizer, item, cached.options) for item in ITEMS if item.mode == "prompt"]
    for batch in (ids[:1], ids * 4):
        reads["n"] = 0
        syncs = cached.syncs
        cached._generate("prompt", batch)
        assert reads["n"] <= steps + 3  # one per step, plus one copy of tokens and alternatives at the end
        assert cached.syncs - syncs <= steps


async def test_batches_are_bounded_by_tokens_as_well_as_by_count(tiny_qwen3_dir: Path, tiny_backends):
    cached, _ = tiny_backends
    longest = max(len(gen.prompt_ids(cached.tokenizer, item, cached.options)) for item in ITEMS)
    budget = 2 * (longest + cached.options.max_new_tokens)  # two rows of the longest item fit, not three
    budgeted = TransformersBackend(tiny_qwen3_dir, reasoning=True, max_new_tokens=12, max_batch_tokens=budget)
    sizes = []
    generate = budgeted._generate

    def recording(mode, prompts):
        sizes.append(len(prompts))
        assert len(prompts) * (max(map(len, prompts)) + 12) <= budget or len(prompts) == 1
        return generate(mode, prompts)

    budgeted._generate = recording
    items = ITEMS * 3
    ours, reference = await budgeted.score_batch(items), await cached.score_batch(items)
    assert max(sizes) <= 2 < len(items) and sum(sizes) == len(items)
    assert [r.raw for r in ours] == [r.raw for r in reference]  # splitting changes no output
    await budgeted.aclose()
    with pytest.raises(ValueError, match="max_batch_tokens"):
        TransformersBackend(tiny_qwen3_dir, max_batch_tokens=-1)


async def test_without_reasoning_the_empty_think_block_is_prefilled(tiny_qwen3_dir: Path):
    backend = TransformersBackend(tiny_qwen3_dir, reasoning=False)
    assert backend.options.max_new_tokens == gen.ANSWER_MAX_NEW_TOKENS
    results = await backend.score_batch(ITEMS[:2])
    assert len(results) == 2
    for item, risk in zip(ITEMS[:2], results, strict=True):
        assert risk.raw == "<think>\n\n</think>\n" + reference_generate(backend, item, gen.ANSWER_MAX_NEW_TOKENS)
    await backend.aclose()


@pytest.fixture(scope="module")
def guard_backends(tiny_guard_dir: Path, guard_rubric: Path):
    backends = {reasoning: TransformersBackend(tiny_guard_dir, reasoning=reasoning, max_new_tokens=24,
                                               system_prompt_path=guard_rubric) for reasoning in (False, True)}
    yield backends
    for backend in backends.values():
        asyncio.run(backend.aclose())


@pytest.mark.parametrize("reasoning", [False, True])
async def test_guard_scores_categories_and_expected_score(guard_backends, reasoning: bool):
    backend = guard_backends[reasoning]
    examples = guard_examples()
    results = await backend.score_batch([item for item, _, _ in examples])
    assert len(results) == len(examples)
    for (item, category, _), risk in zip(examples, results, strict=True):
        assert risk.ok, (item, risk)
        assert risk.raw.startswith(backend.options.prefill)
        assert risk.reasoning == ("Checked." if reasoning else None)
        if category == "SAFE":
            assert risk.categories == () and abs(risk.score - 3) < 1
        elif HARMFUL_WORD in item.judged_text:
            assert risk.categories == ("VIO",) and abs(risk.score - 85) < 1  # peaked: ≈ the integer
        else:
            assert SPREAD_WORD in item.judged_text
            integer = int(risk.raw.split()[-1])
            assert integer in SPREAD_SCORES and 41.5 < risk.score < 46.5  # spread: the expectation, not the integer


async def test_expected_score_off_reads_the_integer(tiny_guard_dir: Path, guard_rubric: Path):
    backend = TransformersBackend(tiny_guard_dir, reasoning=False, expected_score=False,
                                  system_prompt_path=guard_rubric)
    risk = (await backend.score_batch([ModerationItem(f"how to {SPREAD_WORD} someone")]))[0]
    assert risk.ok and risk.score in SPREAD_SCORES
    await backend.aclose()


def test_flexguard_check_decisions(tiny_guard_dir: Path, guard_rubric: Path):
    backend = create_backend("transformers", str(tiny_guard_dir), reasoning=False, system_prompt_path=guard_rubric)
    with FlexGuard(backend) as guard:
        attack = guard.check(f"how to {HARMFUL_WORD} someone")
        safe = guard.check("how to paint someone")
        spread = [guard.check(f"how to {SPREAD_WORD} someone", strictness=s) for s in ("moderate", "loose")]
        response = guard.check("hello", f"I want to {HARMFUL_WORD} now", strictness="loose")
    assert attack.flagged and attack.categories == ("VIO",) and not attack.failed
    assert not safe.flagged and safe.score < 21
    assert [d.flagged for d in spread] == [True, False]  # ≈44: over 41, under 61
    assert response.flagged and response.score > 80


def test_a_languages_option_leaves_other_languages_undecided_each_alone(tiny_guard_dir: Path, guard_rubric: Path):
    """An LLM accepted for English only (`languages=["en"]`, as flexguard-smollm2's card sets): text in another
    language is undecided and blocked by default, never sent to the model, and the items beside it keep the
    verdicts they get alone; without the option every language is scored (FlexGuard-Qwen3-8B is multilingual)."""
    german = f"Wie kann ich jemanden mit einer Waffe {HARMFUL_WORD}? Erkläre es mir bitte Schritt für Schritt."
    russian_reply = {"prompt": "hello", "response": "Конечно, вот подробная инструкция, как это сделать шаг за шагом."}
    english = [f"how to {HARMFUL_WORD} someone", "how to paint someone"]
    options = {"reasoning": False, "system_prompt_path": guard_rubric}
    with FlexGuard(create_backend("transformers", str(tiny_guard_dir), languages=["en"], **options)) as guard:
        alone = guard.score_batch(english)
        mixed = guard.score_batch([german, english[0], russian_reply, english[1]])
        decisions = guard.check_batch([german, russian_reply])
    assert [mixed[0].error, mixed[2].error] == ["unsupported language: de", "unsupported language: ru"]
    assert [r.score for r in (mixed[1], mixed[3])] == pytest.approx([r.score for r in alone], abs=0.5)
    assert all(d.failed and d.flagged for d in decisions)
    with FlexGuard(create_backend("transformers", str(tiny_guard_dir), **options)) as guard:
        assert guard.score(german).ok
    with pytest.raises(ValueError, match="klingon"):
        create_backend("transformers", str(tiny_guard_dir), languages=["klingon"], **options)


def test_content_budget_and_bad_options(tiny_qwen3_dir: Path):
    backend = TransformersBackend(tiny_qwen3_dir, reasoning=False, max_model_len=2048)
    overhead = len(gen.prompt_ids(backend.tokenizer, ModerationItem("x", "x"), backend.options))
    assert 0 < backend.max_content_tokens <= 2048 - overhead - backend.options.max_new_tokens
    with pytest.raises(ValueError, match="no room"):
        TransformersBackend(tiny_qwen3_dir, max_model_len=1024)
    with pytest.raises(ValueError, match="dtype"):
        TransformersBackend(tiny_qwen3_dir, dtype="float13")
    with pytest.raises(ValueError, match="max_new_tokens"):
        TransformersBackend(tiny_qwen3_dir, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_judged_chars"):
        TransformersBackend(tiny_qwen3_dir, max_judged_chars=0)


async def test_the_event_loop_stays_free_while_generating(tiny_qwen3_dir: Path):
    backend = TransformersBackend(tiny_qwen3_dir, reasoning=True, max_new_tokens=24)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await backend.score_batch(ITEMS)
    task.cancel()
    assert ticks > 3
    await backend.aclose()


@pytest.mark.slow
async def test_smollm2_real_weights(smollm2_dir: Path):
    backend = TransformersBackend(smollm2_dir, reasoning=False, max_new_tokens=8)
    items = [ModerationItem("How do I pick a lock?"), ModerationItem("Hi", "Hello! How can I help you today?")]
    results = await backend.score_batch(items)
    assert len(results) == 2
    for item, risk in zip(items, results, strict=True):
        assert risk.raw == "<think>\n\n</think>\n" + reference_generate(backend, item, 8)
        assert risk.ok or risk.error
        assert risk.ok or math.isnan(risk.score)
    await backend.aclose()
