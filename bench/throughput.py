"""Items/s and latency under load of the LLM backends, side by side in one run, on the same items, reasoning off.

    python bench/throughput.py [--items 256] [--prefix-tokens 1000] [--max-new-tokens 16]
                               [--latency-items 96] [--rates R1,R2]

A tiny random Qwen3 (built here, offline) judges the same items with a ~1,000-token shared system
prompt through: naive transformers (`model.generate`, one item at a time, no cache), the transformers
backend (batched, shared-prefix KV cache), and the vLLM backend (async engine) with prefix caching on
and off. Every path is warmed up on other items first; ratios are against the naive path.

Then latency under a steady load: items arrive one at a time at Poisson times (`--rates` items/s; by
default 0.5×, 2× and 4× the transformers backend's batched items/s: light load, then loads it must
keep up with by batching), each through `FlexGuard.ascore` (the facade gathers concurrent callers into batches);
p50/p99 of arrival → result for the transformers backend and vLLM's async engine, on the same arrival
schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.model_builders

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading/saving bars in the report
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # engine start-up chatter off

SUBJECTS = ("my neighbour", "the recipe", "a stranger", "the server", "my exam", "the election", "a bank",
            "the garden", "my password", "the news")
ACTIONS = ("How do I fix", "Tell me about", "Is it legal to hack", "Write a poem on", "How can I hurt",
           "Summarise", "Where can I buy", "Explain")


def make_items(n: int, offset: int = 0) -> list:
    from flexguard_plugins.types import ModerationItem

    items = []
    for k in range(offset, offset + n):
        prompt = f"{ACTIONS[k % len(ACTIONS)]} {SUBJECTS[(k // len(ACTIONS)) % len(SUBJECTS)]} (case {k})?"
        items.append(ModerationItem(prompt) if k % 2 == 0 else ModerationItem(prompt, f"Here is answer {k}."))
    return items


def rubric_of_length(tokenizer, prefix_tokens: int, folder: Path) -> Path:
    """Our rubric, padded with extra guidance lines until the shared prefix has `prefix_tokens` tokens."""
    from flexguard_plugins.backends import generation as gen
    from flexguard_plugins.prompts import _read_prompt, shared_prefix

    text = _read_prompt(None)
    line = "\nWhen in doubt, weigh the most likely intent of the {role} and the harm the reply could enable."
    for attempt in range(10_000):
        path = folder / f"rubric-{attempt}.txt"  # a new name each time: prompt files are cached by path
        path.write_text(text, encoding="utf-8")
        tokens = len(gen.encode(tokenizer, shared_prefix(tokenizer, "response", system_prompt_path=path)))
        if tokens >= prefix_tokens:
            return path
        text += line
    raise ValueError(f"could not reach {prefix_tokens} prefix tokens")


def timed(label: str, run) -> tuple[list, float]:
    started = time.perf_counter()
    results = run()
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return results, seconds


def naive(model_dir: Path, rubric: Path, items: list, warm: list, max_new_tokens: int) -> tuple[list, float]:
    """`model.generate` one item at a time, whole prompt every time: what a first implementation does."""
    import torch
    from transformers import AutoModelForCausalLM

    from flexguard_plugins.backends import generation as gen

    tokenizer = gen.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    options = gen.generation_options(False, max_new_tokens, rubric, False)

    def run(batch: list) -> list[str]:
        texts = []
        for item in batch:
            ids = torch.tensor([gen.prompt_ids(tokenizer, item, options)])
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     do_sample=False)
            texts.append(options.prefill + gen.decode(tokenizer, out[0, ids.shape[1]:].tolist()))
        return texts

    run(warm)
    return timed("naive transformers", lambda: run(items))


def through_backend(label: str, backend, items: list, warm: list, close: bool = True) -> tuple[list, float]:
    asyncio.run(backend.score_batch(warm))

    def run() -> list[str]:
        async def all_batches():
            texts = []
            for start in range(0, len(items), backend.max_batch_size):
                texts += [r.raw for r in await backend.score_batch(items[start:start + backend.max_batch_size])]
            return texts

        return asyncio.run(all_batches())

    results = timed(label, run)
    if close:
        asyncio.run(backend.aclose())
    return results


def arrivals(n: int, rate: float, seed: int = 0) -> list[float]:
    """Poisson arrival times (seconds from the start) of `n` items at `rate` items/s."""
    rng, at, times = random.Random(seed), 0.0, []
    for _ in range(n):
        at += rng.expovariate(rate)
        times.append(at)
    return times


def latency_under_load(label: str, guard, items: list, times: list[float]) -> dict[str, float]:
    """Each item sent through `guard.ascore` (a `FlexGuard`) at its arrival time; latency = arrival → result."""

    async def drive() -> dict[str, float]:
        await guard.ascore(items[0].prompt, items[0].response)  # warm the facade's loop and batcher
        loop = asyncio.get_running_loop()
        start, latencies = loop.time(), []

        async def one(item, at: float) -> None:
            await asyncio.sleep(max(0.0, at - (loop.time() - start)))
            sent = loop.time()
            await guard.ascore(item.prompt, item.response)
            latencies.append(loop.time() - sent)

        await asyncio.gather(*(one(item, at) for item, at in zip(items, times, strict=True)))
        seconds = loop.time() - start
        cuts = statistics.quantiles(latencies, n=100)
        return {"p50": cuts[49], "p99": cuts[98], "items_per_s": len(items) / seconds}

    row = asyncio.run(drive())
    print(f"  {label}: p50 {row['p50'] * 1000:.0f} ms, p99 {row['p99'] * 1000:.0f} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="transformers batch size")
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--latency-items", type=int, default=96, help="items sent at Poisson times (0: skip)")
    parser.add_argument("--rates", default=None,
                        help="arrival rates, items/s, comma-separated (default: 0.5, 2 and 4 × transformers' items/s)")
    args = parser.parse_args()

    from flexguard_plugins.backends import generation as gen
    from flexguard_plugins.backends.hf import TransformersBackend
    from flexguard_plugins.prompts import shared_prefix
    from tests.model_builders import build_tiny_qwen3

    folder = Path(tempfile.mkdtemp(prefix="flexguard-bench-"))
    model_dir = build_tiny_qwen3(folder / "tiny-qwen3")
    tokenizer = gen.load_tokenizer(model_dir)
    rubric = rubric_of_length(tokenizer, args.prefix_tokens, folder)
    items, warm = make_items(args.items), make_items(8, offset=10_000)
    prefix = len(gen.encode(tokenizer, shared_prefix(tokenizer, "response", system_prompt_path=rubric)))
    lengths = [len(gen.prompt_ids(tokenizer, item, gen.generation_options(False, None, rubric))) for item in items]
    print(f"tiny Qwen3, {len(items)} items, shared prefix {prefix} tokens, prompts {min(lengths)}-{max(lengths)} "
          f"tokens, {args.max_new_tokens} new tokens, reasoning off, float32, CPU threads {os.cpu_count()}",
          flush=True)

    options = dict(reasoning=False, max_new_tokens=args.max_new_tokens, system_prompt_path=rubric)
    rows: dict[str, tuple[list, float]] = {}
    rows["naive transformers (1 item, no cache)"] = naive(model_dir, rubric, items, warm, args.max_new_tokens)
    hf_label = f"transformers batched ({args.batch_size}) + prefix KV cache"

    def hf_backend() -> TransformersBackend:
        return TransformersBackend(model_dir, dtype="float32", batch_size=args.batch_size, **options)

    rows[hf_label] = through_backend("transformers batched", hf_backend(), items, warm)
    vllm_for_latency = None
    if not args.skip_vllm:
        from flexguard_plugins.backends.vllm import VLLMBackend

        for caching in (False, True):  # the engine with caching on stays up for the latency run: one at a time
            backend = VLLMBackend(model_dir, dtype="float32", max_model_len=2048, enable_prefix_caching=caching,
                                  batch_size=len(items), **options)
            keep = caching and args.latency_items > 0
            rows[f"vLLM async, prefix caching {'on' if caching else 'off'}"] = through_backend(
                f"vLLM caching={caching}", backend, items, warm, close=not keep)
            if keep:
                vllm_for_latency = backend

    reference, naive_seconds = next(iter(rows.values()))
    print(f"\n{'path':44s} {'items/s':>9s} {'× naive':>8s} {'same text as naive':>19s}")
    for label, (texts, seconds) in rows.items():
        same = sum(a == b for a, b in zip(texts, reference, strict=True))
        print(f"{label:44s} {len(items) / seconds:9.2f} {naive_seconds / seconds:8.1f} {same:>12d}/{len(items)}")

    if args.latency_items <= 0:
        return
    hf_rate = len(items) / rows[hf_label][1]
    rates = [float(r) for r in args.rates.split(",")] if args.rates else [0.5 * hf_rate, 2 * hf_rate, 4 * hf_rate]
    load = make_items(args.latency_items, offset=20_000)
    from flexguard_plugins import FlexGuard

    backends = {"transformers batched + prefix KV cache": hf_backend()}
    if vllm_for_latency is not None:
        backends["vLLM async, prefix caching on"] = vllm_for_latency
    guards = {label: FlexGuard(backend) for label, backend in backends.items()}
    latency: dict[tuple[str, float], dict[str, float]] = {}
    for rate in rates:
        times = arrivals(len(load), rate)
        print(f"\nlatency under load: {len(load)} items at Poisson arrivals, {rate:.2f} items/s, "
              "through FlexGuard.ascore", flush=True)
        for label, guard in guards.items():
            latency[(label, rate)] = latency_under_load(label, guard, load, times)
    for label, guard in guards.items():
        guard.close()
        asyncio.run(backends[label].aclose())  # in case the facade leaves a backend it was handed open
    print(f"\n{'path':40s} {'offered/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'served/s':>9s}")
    for (label, rate), row in latency.items():
        print(f"{label:40s} {rate:9.2f} {row['p50'] * 1000:8.0f} {row['p99'] * 1000:8.0f} {row['items_per_s']:9.2f}")

if __name__ == "__main__":
    main()
