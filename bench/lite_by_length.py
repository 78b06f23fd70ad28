"""False flags and misses of the embedded scorer by reply length, on held-out real replies.

    python bench/lite_by_length.py [--per-source 700] [--model DIR] [--read-whole 448] [--off compliance,...]

Reads BeaverTails 30k test and GPTFuzz evaluate (both held out of lite training) from ../shared/data,
shuffles each with seed 0 and prints a Markdown table: per length bucket, the share of harmless replies
flagged (helpful answers and refusals apart: a reply that opens like one by the lite trainer's
`REFUSAL_START`) and of harmful replies let through at strict / moderate / loose; undecided rows are counted
apart and left out of the rates.
`--model` scores with another lite model folder (what `flexguard train lite --out` writes), `--read-whole N`
reads text of up to N word pieces whole (no sentence windows; for a model trained on that length) and
`--off` switches reading rules off (`ReadingPolicy` switches), to compare candidates on the same rows.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from dataclasses import replace

from flexguard_training.lite.data import REFUSAL_START
from flexguard_training.sources import load_source

from flexguard_plugins import FlexGuard
from flexguard_plugins.lite import LiteBackend
from flexguard_plugins.lite.readings import DEFAULT_POLICY
from flexguard_plugins.policy import REGIMES

SOURCES = ("beavertails", "gptfuzz_evaluate")
BUCKETS = ((0, 250), (250, 500), (500, 1000), (1000, 2000), (2000, None))


def bucket(length: int) -> str:
    for low, high in BUCKETS:
        if high is None or length < high:
            return f"{low}-{high or ''}"
    raise AssertionError("unreachable")


def kind_of(record) -> str:  # noqa: ANN001
    if record.unsafe:
        return "harmful (misses)"
    refusing = REFUSAL_START.match(record.response.strip())  # the sources do not label refusals
    return "refusal (false flags)" if refusing else "helpful (false flags)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=700)
    parser.add_argument("--model", default=None, help="a lite model folder (default: the shipped one)")
    parser.add_argument("--read-whole", type=int, default=None, help="word pieces read whole, without windows")
    parser.add_argument("--off", default="", help="comma-separated reading rules to switch off")
    args = parser.parse_args()
    rng = random.Random(0)
    rows = []
    for name in SOURCES:
        records = [r for r in load_source(name) if r.response]
        rng.shuffle(records)
        rows += records[: args.per_source]
    policy = replace(DEFAULT_POLICY, **{rule: False for rule in args.off.split(",") if rule})
    if args.read_whole:
        policy = replace(policy, single_pass_tokens=args.read_whole)
    backend = LiteBackend(args.model, policy=policy)
    if args.read_whole:
        backend.max_content_tokens = args.read_whole  # the facade's units: each is read whole
    start = time.perf_counter()
    with FlexGuard(backend) as guard:
        risks = guard.score_batch([{"prompt": r.prompt, "response": r.response} for r in rows])
    print(f"{len(rows)} replies scored in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record, risk in zip(rows, risks, strict=True):
        kind = kind_of(record)
        for cell in (counts[(bucket(len(record.response)), kind)], counts[("all", kind)]):
            cell["n"] += 1
            if not risk.ok:
                cell["undecided"] += 1
                continue
            for regime, line in REGIMES.items():
                cell[regime] += (risk.score < line) if record.unsafe else (risk.score >= line)
    print("| reply chars | kind | n | strict | moderate | loose | undecided |")
    print("|---|---|---|---|---|---|---|")
    for name in [f"{low}-{high or ''}" for low, high in BUCKETS] + ["all"]:
        for kind in ("helpful (false flags)", "refusal (false flags)", "harmful (misses)"):
            cell = counts[(name, kind)]
            if cell["n"]:
                judged = max(1, cell["n"] - cell["undecided"])
                rates = " | ".join(f"{100 * cell[r] / judged:.0f} %" for r in REGIMES)
                print(f"| {name} | {kind} | {cell['n']} | {rates} | {cell['undecided']} |")


if __name__ == "__main__":
    main()
