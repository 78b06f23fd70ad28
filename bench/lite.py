"""Speed of the embedded lite scorer vs plain fp32 sentence-transformers, side by side in one run.

    python bench/lite.py [--items 256] [--single 100] [--tokens 120] [--threads N]

Items are ~120-word-piece texts built from real public prompts (../shared/data, Alpaca pool) or, when
that folder is missing, from a fixed paragraph. Prints single-item latency p50/p99 and batched
items/s for: lite int8 in prompt mode and in response mode (the item as the reply to a short
question; full scoring path: normalise, tokenize, windows, int8 ONNX, read-out), lite on the fp32
ONNX, and sentence-transformers fp32 encoding only (no head). Also prints the held-out F1 that the
card records for int8 vs fp32 (`flexguard train lite --compare-fp32`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_items(count: int, tokens: int) -> list[str]:
    """Texts of exactly `tokens` word pieces (encoder tokenizer), built from real prompts when available."""
    from flexguard_plugins.lite.encoder import load_tokenizer

    tokenizer = load_tokenizer()
    try:
        from flexguard_training.sources import load_source

        pool = [r.prompt for r in load_source("alpaca_harmless_test")]
    except (FileNotFoundError, ImportError):
        pool = ["The committee met on Tuesday to discuss the budget for next year, and after a long debate "
                "they agreed to fund the new library, repair two bridges and hire more teachers."] * 50
    rng = np.random.default_rng(0)
    items = []
    for _ in range(count):
        text = ""
        while len(tokenizer.encode(text, add_special_tokens=False).ids) < tokens:
            text += " " + pool[rng.integers(len(pool))]
        encoding = tokenizer.encode(text.strip(), add_special_tokens=False)
        items.append(text.strip()[:encoding.offsets[tokens - 1][1]])
    return items


def latency(fn: Callable[[Sequence[str]], object], items: Sequence[str]) -> tuple[float, float, float]:
    """p50 and p99 wall milliseconds of `fn([item])`, one item at a time, and CPU ms per item.

    CPU time (all threads of this process) does not grow when other processes share the cores, so
    it shows the cost of a call even on a busy machine.
    """
    times = []
    cpu_started = time.process_time()
    for item in items:
        started = time.perf_counter()
        fn([item])
        times.append((time.perf_counter() - started) * 1000)
    cpu = (time.process_time() - cpu_started) * 1000 / len(items)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))], cpu


def throughput(fn: Callable[[Sequence[str]], object], items: Sequence[str], batch: int) -> tuple[float, float]:
    """Items per second (wall) and CPU ms per item, in batches of `batch`."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        fn(items[start:start + batch])
    wall = time.perf_counter() - started
    return len(items) / wall, (time.process_time() - cpu_started) * 1000 / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=256, help="items for the batched run")
    parser.add_argument("--single", type=int, default=100, help="items for the one-at-a-time latency run")
    parser.add_argument("--tokens", type=int, default=120, help="word pieces per item")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime / torch threads (default: cores)")
    parser.add_argument("--spin", action="store_true", help="let onnxruntime threads spin (idle machines)")
    args = parser.parse_args()

    from flexguard_plugins.lite import DEFAULT_MODEL, LiteBackend
    from flexguard_plugins.lite.build import model_dir
    from flexguard_plugins.types import ModerationItem

    items = make_items(max(args.items, args.single), args.tokens)
    threads = args.threads or os.cpu_count() or 1
    rows = []
    for label, precision, response in (("lite int8 prompt mode (score)", "int8", False),
                                       ("lite int8 response mode (score)", "int8", True),
                                       ("lite fp32 ONNX prompt mode (score)", "fp32", False)):
        backend = LiteBackend(precision=precision, threads=threads, spin=args.spin)
        backend.warmup()

        def fn(texts: Sequence[str], backend: LiteBackend = backend, response: bool = response) -> object:
            return backend.score_sync([ModerationItem("Can you summarise this for me?", t) if response else
                                       ModerationItem(t) for t in texts])

        fn(items[:args.batch])
        rows.append((label, *latency(fn, items[:args.single]), *throughput(fn, items[:args.items], args.batch)))

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir()), device="cpu")

    def st_encode(texts: Sequence[str]) -> object:
        return model.encode(list(texts), batch_size=args.batch, normalize_embeddings=True)

    st_encode(items[:args.batch])
    rows.append(("sentence-transformers fp32 (encode)", *latency(st_encode, items[:args.single]),
                 *throughput(st_encode, items[:args.items], args.batch)))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(items)} items of {args.tokens} word pieces, batch {args.batch}, {threads} threads, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end")
    print(f"{'':38s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu ms':>8s} {'items/s':>9s} {'cpu ms':>8s}")
    print(f"{'':38s} {'single':>8s} {'single':>8s} {'single':>8s} {'batched':>9s} {'batched':>8s}")
    for label, p50, p99, cpu1, rate, cpub in rows:
        print(f"{label:38s} {p50:8.1f} {p99:8.1f} {cpu1:8.1f} {rate:9.1f} {cpub:8.1f}")
    lite, reply, base = rows[0], rows[1], rows[-1]
    print(f"response mode vs prompt mode: x{reply[5] / lite[5]:.2f} the CPU per item batched, "
          f"x{reply[1] / lite[1]:.2f} the p50 latency")
    print(f"lite int8 vs sentence-transformers fp32: p50 latency x{base[1] / lite[1]:.2f} lower, "
          f"throughput x{lite[4] / base[4]:.2f} higher; CPU per item x{base[3] / lite[3]:.2f} (single), "
          f"x{base[5] / lite[5]:.2f} (batched) lower")
    print(f"lite int8 on idle cores (CPU time / {threads} threads): ~{lite[3] / threads:.1f} ms a single item at "
          f"best, ~{1000 * threads / lite[5]:.0f} items/s batched at best")

    card_path = DEFAULT_MODEL / "card.json"
    if card_path.exists():
        metrics = json.loads(card_path.read_text()).get("metrics", {})
        if "fp32" in metrics:
            for mode in ("prompt", "response"):
                a, b = metrics["int8"].get(mode), metrics["fp32"].get(mode)
                if a and b:
                    print(f"held-out {mode} F1 avg int8 {a['f1_avg']:.2f} vs fp32 {b['f1_avg']:.2f} "
                          f"(worst {a['f1_worst']:.2f} vs {b['f1_worst']:.2f}) [from card.json]")


if __name__ == "__main__":
    main()
