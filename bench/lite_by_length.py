"""False flags and misses of the embedded scorer by reply length, on held-out real replies.

    python bench/lite_by_length.py [--per-source 700]

Reads BeaverTails 30k test and GPTFuzz evaluate (both held out of lite training) from ../shared/data,
shuffles each with seed 0 and prints a Markdown table: per length bucket, the share of harmless replies
flagged and of harmful replies let through at strict / moderate / loose; undecided rows are counted apart.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

from flexguard_training.sources import load_source

from flexguard_plugins import FlexGuard
from flexguard_plugins.policy import REGIMES

SOURCES = ("beavertails", "gptfuzz_evaluate")
BUCKETS = ((0, 250), (250, 500), (500, 1000), (1000, 2000), (2000, None))


def bucket(length: int) -> str:
    for low, high in BUCKETS:
        if high is None or length < high:
            return f"{low}-{high or ''}"
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=700)
    args = parser.parse_args()
    rng = random.Random(0)
    rows = []
    for name in SOURCES:
        records = [r for r in load_source(name) if r.response]
        rng.shuffle(records)
        rows += records[: args.per_source]
    start = time.perf_counter()
    with FlexGuard.load() as guard:
        risks = guard.score_batch([{"prompt": r.prompt, "response": r.response} for r in rows])
    print(f"{len(rows)} replies scored in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record, risk in zip(rows, risks, strict=True):
        kind = "harmful" if record.unsafe else "harmless"
        cell = counts[(bucket(len(record.response)), kind)]
        cell["n"] += 1
        if not risk.ok:
            cell["undecided"] += 1
            continue
        for regime, line in REGIMES.items():
            cell[regime] += (risk.score >= line) if kind == "harmless" else (risk.score < line)
    print("| reply chars | kind | n | strict | moderate | loose | undecided |")
    print("|---|---|---|---|---|---|---|")
    for low, high in BUCKETS:
        for kind, what in (("harmless", "false flags"), ("harmful", "misses")):
            cell = counts[(f"{low}-{high or ''}", kind)]
            if cell["n"]:
                rates = " | ".join(f"{100 * cell[r] / cell['n']:.0f} %" for r in REGIMES)
                print(f"| {low}-{high or ''} | {kind} ({what}) | {cell['n']} | {rates} | {cell['undecided']} |")


if __name__ == "__main__":
    main()
