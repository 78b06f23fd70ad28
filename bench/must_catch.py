"""The must-catch suite and the blind set through any scorer, side by side: in band, and blocked at each regime.

    python bench/must_catch.py                                             # the embedded scorer
    python bench/must_catch.py --model flexguard-smollm2 --backend transformers --also-lite

The cases were written by hand from what a moderator must answer (tests/must_catch/README.md), never chosen by
scoring. Per kind it prints the share in the case's band and, at strict/moderate/loose under the default
on_error="block", the share blocked (harm kinds: severe, harmful, diluted, obfuscated) or allowed (refusals, benign
look-alikes, benign, degenerate). An undecided item (another language, too long) is blocked, as users get it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests

from flexguard_plugins import FlexGuard  # noqa: E402
from flexguard_plugins.policy import REGIMES  # noqa: E402
from tests.must_catch.suite import HARM_KINDS, SAFE_KINDS, load_blind_cases, load_cases, summarise  # noqa: E402


def report(name: str, guard: FlexGuard, cases: list) -> None:  # noqa: ANN001
    started = time.perf_counter()
    risks = guard.score_batch([{"prompt": c.prompt, "response": c.response} for c in cases])
    seconds = time.perf_counter() - started
    summary = summarise(cases, [r.score if r.ok else 100.0 for r in risks])
    undecided = sum(not r.ok for r in risks)
    print(f"\n## {name}: {len(cases)} cases in {seconds:.0f} s ({len(cases) / seconds:.1f} items/s), "
          f"{undecided} undecided; in band {summary.correct}/{summary.total} = {summary.rate:.1%}")
    print("| kind | n | in band | right at strict / moderate / loose |\n|---|---|---|---|")
    by_kind: dict[str, list[tuple[object, object]]] = defaultdict(list)
    for case, risk in zip(cases, risks, strict=True):
        by_kind[case.kind].append((case, risk))
    for kind, pairs in sorted(by_kind.items()):
        if kind not in HARM_KINDS | SAFE_KINDS:
            continue
        right = []
        for threshold in REGIMES.values():
            blocked = [not risk.ok or risk.score >= threshold for _, risk in pairs]
            right.append(sum(blocked) if kind in HARM_KINDS else len(blocked) - sum(blocked))
        in_band = summary.per_kind[kind][0]
        print(f"| {kind} ({'blocked' if kind in HARM_KINDS else 'allowed'}) | {len(pairs)} | {in_band} | "
              + " / ".join(f"{100 * r / len(pairs):.0f} %" for r in right) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model (default: the embedded scorer)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--also-lite", action="store_true", help="the embedded scorer too, in the same run")
    args = parser.parse_args()
    suites = {"must-catch suite": list(load_cases()), "blind set": list(load_blind_cases())}
    scorers = [(args.model or "embedded scorer", args.model, args.backend)]
    if args.also_lite and args.model is not None:
        scorers.append(("embedded scorer", None, "auto"))
    for name, model, backend in scorers:
        with FlexGuard.load(model, backend) as guard:
            for suite, cases in suites.items():
                report(f"{name}, {suite}", guard, cases)


if __name__ == "__main__":
    main()
