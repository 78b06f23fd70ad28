"""Items/s and p50 latency of the transformers backend on a Qwen3-8B-shaped model, against DESIGN.md §5.

    python bench/gpu.py            # on a GPU: about 5-7 minutes on one H100/H200
    python bench/gpu.py --tiny     # the same code path on CPU in seconds (CI runs this)

The model has Qwen3-8B's shapes (hidden 4096, 36 layers, 32 heads, 8 KV heads, intermediate 12288, vocab
151,936) with random bf16 weights built from its config on the device: the cost per token is the real one,
the text is not. A random model never stops early, so every item generates exactly the budget: ~10 answer
tokens score-only, ~300 reasoning tokens (§5's call: a ~1,500-token cached system prompt, ~200 tokens of
content). The prompt is tokenized with the small test BPE tokenizer; its token counts are printed.
The transformers backend runs with the shared-prefix KV cache, one batch per call, batch sizes 1-128.
Ceilings (§5, one H100): ~200 items/s score-only, ~90 reasoning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: flexguard_plugins, tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading/saving bars in the report

QWEN3_8B = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=12288, vocab_size=151_936, head_dim=128, max_position_embeddings=40_960,
                tie_word_embeddings=False, rope_theta=1_000_000.0)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, head_dim=16, max_position_embeddings=8192, tie_word_embeddings=True)
CEILING = {"score-only": 200.0, "reasoning": 90.0}
"""DESIGN.md §5: items/s on one H100 with the system prompt cached."""
FILLER = ("The user describes their week, the weather, a recipe they tried and a question about the news. ",
          "They ask for advice on a letter to a neighbour about a shared fence and the noise at night. ")


def pad_text(tokenizer, text: str, tokens: int, pieces: tuple[str, ...]) -> str:
    """`text` followed by filler sentences until it has at least `tokens` tokens."""
    k = 0
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += pieces[k % len(pieces)]
        k += 1
    return text


def build_model(tokenizer, tiny: bool, device: str, dtype):
    """A random-weight Qwen3 with the 8B shapes (or the tiny ones), built directly on `device`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shapes = dict(TINY, vocab_size=len(tokenizer)) if tiny else dict(QWEN3_8B)
    config = Qwen3Config(**shapes, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def make_items(tokenizer, n: int, content_tokens: int, offset: int = 0) -> list:
    from flexguard_plugins.types import ModerationItem

    items = []
    for k in range(offset, offset + n):
        text = pad_text(tokenizer, f"Case {k}: how do I write to my neighbour? ", content_tokens, FILLER)
        items.append(ModerationItem(text) if k % 2 == 0 else ModerationItem(f"Question {k}?", text))
    return items


def run_mode(backend, items: list, batch_size: int, batches: int) -> dict:
    """Time `batches` calls of `batch_size` items each; each call's duration is its items' latency."""
    latencies, done = [], 0
    started = time.perf_counter()
    for b in range(batches):
        batch = items[b * batch_size:(b + 1) * batch_size]
        t0 = time.perf_counter()
        results = asyncio.run(backend.score_batch(batch))
        latencies += [time.perf_counter() - t0] * len(results)
        done += len(results)
    seconds = time.perf_counter() - started
    return {"items": done, "seconds": seconds, "items_per_s": done / seconds, "p50_s": statistics.median(latencies)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU, seconds (the CI code path)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 1,8,32,64,128; tiny 1,4)")
    parser.add_argument("--modes", default="score-only,reasoning")
    parser.add_argument("--prefix-tokens", type=int, default=None, help="system prompt tokens (default 1500)")
    parser.add_argument("--content-tokens", type=int, default=None, help="judged text tokens (default 200)")
    parser.add_argument("--answer-tokens", type=int, default=None, help="score-only new tokens (default 10)")
    parser.add_argument("--reasoning-tokens", type=int, default=None, help="reasoning new tokens (default 300)")
    parser.add_argument("--time-budget", type=float, default=420.0,
                        help="seconds; larger batch sizes are skipped once it is spent (default 420)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    import torch

    from flexguard_plugins.backends.hf import TransformersBackend
    from flexguard_plugins.prompts import shared_prefix
    from tests.model_builders import build_tokenizer

    tiny = args.tiny
    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for the CPU code path")
    dtype = torch.float32 if tiny else torch.bfloat16
    sizes = [int(b) for b in (args.batch_sizes or ("1,4" if tiny else "1,8,32,64,128")).split(",")]
    prefix_tokens = args.prefix_tokens or (120 if tiny else 1500)
    content_tokens = args.content_tokens or (16 if tiny else 200)
    new_tokens = {"score-only": args.answer_tokens or (4 if tiny else 10),
                  "reasoning": args.reasoning_tokens or (8 if tiny else 300)}
    modes = [m for m in args.modes.split(",") if m]

    folder = Path(tempfile.mkdtemp(prefix="flexguard-gpu-bench-"))
    tokenizer = build_tokenizer(folder / "tokenizer")
    import flexguard_plugins

    rubric, ours = folder / "rubric.txt", Path(flexguard_plugins.__file__).parent / "system_prompt.txt"
    base = "Judge the {role} turn." if tiny else ours.read_text(encoding="utf-8")
    rubric.write_text(pad_text(tokenizer, base, prefix_tokens,
                               ("\nWhen in doubt, weigh the most likely intent and the harm the reply could enable.",)),
                      encoding="utf-8")
    build_started = time.perf_counter()
    model = build_model(tokenizer, tiny, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    prefix = len(tokenizer(shared_prefix(tokenizer, "prompt", system_prompt_path=rubric),
                           add_special_tokens=False)["input_ids"])
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    size_text = f"{params / 1e9:.2f}B" if params > 1e8 else f"{params / 1e6:.2f}M"
    print(f"{'tiny' if tiny else 'Qwen3-8B-shaped'} random {str(dtype).replace('torch.', '')} model, "
          f"{size_text} parameters, built in {time.perf_counter() - build_started:.0f} s on {name}; "
          f"shared prefix {prefix} tokens, content ~{content_tokens} tokens", flush=True)

    rows: list[dict] = []
    bench_started = time.perf_counter()
    for mode in modes:
        reasoning = mode == "reasoning"
        backend = TransformersBackend(folder / "tokenizer", loaded_model=model, device=device, reasoning=reasoning,
                                      max_new_tokens=new_tokens[mode], system_prompt_path=rubric,
                                      batch_size=max(sizes), max_batch_tokens=10**9)
        asyncio.run(backend.score_batch(make_items(tokenizer, 2, content_tokens, offset=10_000)))  # prefix + warm-up
        for size in sizes:
            if rows and time.perf_counter() - bench_started > args.time_budget:
                print(f"  {mode} batch {size}: skipped (time budget of {args.time_budget:g} s spent)", flush=True)
                continue
            batches = 1 if reasoning and size >= 8 and not tiny else 2
            items = make_items(tokenizer, size * batches, content_tokens)
            row = {"mode": mode, "batch_size": size, "new_tokens": new_tokens[mode],
                   **run_mode(backend, items, size, batches)}
            row["fraction_of_ceiling"] = row["items_per_s"] / CEILING[mode]
            rows.append(row)
            print(f"  {mode:10s} batch {size:4d}: {row['items_per_s']:8.2f} items/s  p50 {row['p50_s']:7.3f} s  "
                  f"{100 * row['fraction_of_ceiling']:5.1f}% of the §5 ceiling ({CEILING[mode]:g}/s)", flush=True)
        asyncio.run(backend.aclose())
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
