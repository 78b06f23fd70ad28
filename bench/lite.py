"""Speed of the embedded lite scorer vs plain fp32 sentence-transformers, side by side in one run.

    python bench/lite.py [--items 256] [--single 100] [--tokens 120] [--rounds 3] [--threads N] [--spin]
                         [--baseline FILE]

The lite rows are measured interleaved in a few rounds (the same machine load for each; the best round's
throughput is reported), sentence-transformers after them in the same way. Items are ~120-word-piece
texts built from real public prompts (../shared/data, Alpaca pool) or, when that folder is missing,
from a fixed paragraph. Prints single-item latency p50/p99 and batched
items/s for: lite int8 in prompt mode and in response mode (the item as the reply to a short
question; full scoring path: language identification, normalise, tokenize, windows, int8 ONNX, read-out), the
same two with the language gate left out (its cost, side by side), lite on the fp32 ONNX, and
sentence-transformers fp32 encoding only (no head). The header names the CPU. Also prints the held-out F1 that the
card records for int8 vs fp32 (`flexguard train lite --compare-fp32`). `--baseline FILE` adds a prompt-mode
row for another int8 ONNX file of the same model (e.g. an older recipe's file from the cache), measured in
the same run, so a recipe change is compared side by side on the same machine load. On a machine where
another process holds a core, `--threads 1` gives every row the one free core (fair ratios; torch with two
threads on one free core spends most of its time spinning).
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
    from flexguard_plugins.lite.base import load_tokenizer

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


def cpu_name() -> str:
    """The CPU model, as `lscpu` names it ("Model name")."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def latency(fn: Callable[[Sequence[str]], object], items: Sequence[str]) -> tuple[list[float], float]:
    """Wall milliseconds of `fn([item])` for each item, one at a time, and CPU ms (all threads) per item.

    CPU time does not grow when other processes share the cores, so it shows the cost of a call even on a
    busy machine.
    """
    times = []
    cpu_started = time.process_time()
    for item in items:
        started = time.perf_counter()
        fn([item])
        times.append((time.perf_counter() - started) * 1000)
    return times, (time.process_time() - cpu_started) * 1000 / len(items)


def throughput(fn: Callable[[Sequence[str]], object], items: Sequence[str], batch: int) -> tuple[float, float]:
    """Items per second (wall) and CPU ms per item, in batches of `batch`."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        fn(items[start:start + batch])
    wall = time.perf_counter() - started
    return len(items) / wall, (time.process_time() - cpu_started) * 1000 / len(items)


def measure(fns: dict[str, Callable[[Sequence[str]], object]], items: Sequence[str], *, single: int, batch: int,
            rounds: int) -> list[tuple[str, float, float, float, float, float]]:
    """Every function, interleaved over `rounds` rounds so all see the same machine load: per round a batched
    pass over all items and a one-at-a-time pass over a share of the first `single` items.

    Returns (label, p50 ms, p99 ms, CPU ms single, items/s batched, CPU ms batched): latency percentiles over
    all single calls, the best round's throughput and the lowest CPU per item (the least disturbed round)."""
    singles: dict[str, list[float]] = {label: [] for label in fns}
    best: dict[str, list[float]] = {label: [0.0, float("inf"), float("inf")] for label in fns}
    share = max(1, single // rounds)
    for r in range(rounds):
        for label, fn in fns.items():
            rate, cpu_batched = throughput(fn, items, batch)
            times, cpu_single = latency(fn, items[r * share:(r + 1) * share] or items[:share])
            singles[label] += times
            old = best[label]
            best[label] = [max(old[0], rate), min(old[1], cpu_batched), min(old[2], cpu_single)]
    rows = []
    for label, times in singles.items():
        times.sort()
        p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        rate, cpu_batched, cpu_single = best[label]
        rows.append((label, statistics.median(times), p99, cpu_single, rate, cpu_batched))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=256, help="items for the batched run")
    parser.add_argument("--single", type=int, default=100, help="items for the one-at-a-time latency run")
    parser.add_argument("--tokens", type=int, default=120, help="word pieces per item")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best round reported)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime / torch threads (default: cores)")
    parser.add_argument("--spin", action="store_true", help="let onnxruntime threads spin (idle machines)")
    parser.add_argument("--baseline", type=str, default=None,
                        help="another int8 ONNX file of the same model, benchmarked in prompt mode in the same run")
    args = parser.parse_args()

    from flexguard_plugins.lite import DEFAULT_MODEL, LiteBackend
    from flexguard_plugins.lite.build import model_dir
    from flexguard_plugins.lite.encoder import Session
    from flexguard_plugins.types import ModerationItem

    items = make_items(max(args.items, args.single), args.tokens)
    threads = args.threads or os.cpu_count() or 1
    runs = [("lite int8 prompt mode (score)", "int8", False, None, True),
            ("lite int8 response mode (score)", "int8", True, None, True),
            ("lite fp32 ONNX prompt mode (score)", "fp32", False, None, True),
            ("  the same, no language gate", "int8", False, None, False),
            ("  response mode, no language gate", "int8", True, None, False)]
    if args.baseline:
        runs.append(("baseline int8 prompt mode (score)", "int8", False, args.baseline, True))
    fns: dict[str, Callable[[Sequence[str]], object]] = {}
    for label, precision, response, file, gate in runs:
        backend = LiteBackend(precision=precision, threads=threads, spin=args.spin)
        if file:  # the same scoring path over another file
            backend._session = Session(precision, threads=threads, spin=args.spin, file=file)
        backend.warmup()

        def fn(texts: Sequence[str], backend: LiteBackend = backend, response: bool = response, gate: bool = gate
               ) -> object:
            items = [ModerationItem("Can you summarise this for me?", t) if response else ModerationItem(t)
                     for t in texts]
            if gate:  # what the facade checks before it hands the items over; without it: what the gate costs
                [backend.unreadable(item) for item in items]
            return backend.score_sync(items)

        fns[label] = fn
    for fn in fns.values():
        fn(items[:args.batch])  # warm: first-call allocations and kernel selection
    rows = measure(fns, items[:args.items], single=args.single, batch=args.batch, rounds=args.rounds)

    # sentence-transformers after all lite runs, not interleaved: torch's OpenMP workers keep spinning after
    # a call and would slow whatever runs next
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir()), device="cpu")

    def st_encode(texts: Sequence[str]) -> object:
        return model.encode(list(texts), batch_size=args.batch, normalize_embeddings=True)

    st_encode(items[:args.batch])
    rows += measure({"sentence-transformers fp32 (encode)": st_encode}, items[:args.items], single=args.single,
                    batch=args.batch, rounds=args.rounds)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_name()}")
    print(f"{len(items)} items of {args.tokens} word pieces, batch {args.batch}, {threads} threads, {args.rounds} "
          f"interleaved rounds (items/s: best round; p50/p99: all single calls), "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end")
    print(f"{'':38s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu ms':>8s} {'items/s':>9s} {'cpu ms':>8s}")
    print(f"{'':38s} {'single':>8s} {'single':>8s} {'single':>8s} {'batched':>9s} {'batched':>8s}")
    for label, p50, p99, cpu1, rate, cpub in rows:
        print(f"{label:38s} {p50:8.1f} {p99:8.1f} {cpu1:8.1f} {rate:9.1f} {cpub:8.1f}")
    lite, reply, base = rows[0], rows[1], rows[-1]
    ungated, reply_ungated = rows[3], rows[4]
    print(f"language gate: prompt mode {lite[4]:.1f} items/s with it, {ungated[4]:.1f} without "
          f"({100 * (lite[5] / ungated[5] - 1):+.1f} % CPU per item batched); response mode {reply[4]:.1f} with, "
          f"{reply_ungated[4]:.1f} without ({100 * (reply[5] / reply_ungated[5] - 1):+.1f} %)")
    if args.baseline:
        old = rows[5]
        print(f"lite int8 vs baseline file: throughput x{lite[4] / old[4]:.2f}, p50 latency x{old[1] / lite[1]:.2f} "
              f"lower, CPU per item batched x{old[5] / lite[5]:.2f} lower ({args.baseline})")
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
