"""A lite model and reading on every measure of issue 24 at once, both directions, all three regimes.

    python bench/lite_readings.py [--model DIR] [--units 256] [--single-pass 128] [--gate 0] [--alone 101]
                                  [--off compliance,...]

The items, all held out of lite training or written by hand, never chosen by scoring:
- ToxicChat's held-out split, less what the shipped weights saw (as `bench/lite_user_prompts.py`);
- SmolLM2's helpful replies and refusals to the 120 edgy questions (`bench/lite_edgy.py`'s cache; run it once first);
- 1,400 held-out BeaverTails and GPTFuzz replies (as `bench/lite_by_length.py`);
- the must-catch suite and the blind set (in band);
- dilution: the suite's harmful prompts scoring HIGH alone, buried in 1,000 and 4,000 characters of filler, and its
  harmful replies buried in 1,000 (as `tests/test_lite.py` buries them; the tests allow none under 61).
`--units` is the facade's unit of judged word pieces, `--single-pass` what is read whole before sentence windows,
`--gate`/`--alone` the `ReadingPolicy` window gate, `--off` rules switched off. About 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests/ (the suite, the filler), bench/

from flexguard_training.sources import load_source  # noqa: E402

from bench.lite_by_length import SOURCES, kind_of  # noqa: E402
from bench.lite_edgy import SETTINGS, load_or_generate  # noqa: E402
from bench.lite_user_prompts import held_out_prompts  # noqa: E402
from flexguard_plugins import FlexGuard, ModerationItem  # noqa: E402
from flexguard_plugins.lite import LiteBackend  # noqa: E402
from flexguard_plugins.lite.readings import DEFAULT_POLICY, SWITCHES  # noqa: E402
from flexguard_plugins.policy import REGIMES  # noqa: E402
from tests.must_catch.suite import load_blind_cases, load_cases, summarise  # noqa: E402
from tests.test_lite import _bury  # noqa: E402


def wrong(risks: list, harmful: bool) -> str:
    """'strict / moderate / loose %' of judged risks on the wrong side of each line (undecided left out)."""
    judged = [r for r in risks if r.ok]
    counts = [sum((r.score < line) if harmful else (r.score >= line) for r in judged) for line in REGIMES.values()]
    return " / ".join(f"{100 * c / max(1, len(judged)):.1f}" for c in counts) + f" (n {len(judged)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a lite model folder (default: the shipped one)")
    parser.add_argument("--units", type=int, default=None, help="word pieces per facade unit")
    parser.add_argument("--single-pass", type=int, default=None, help="word pieces read whole before windows")
    parser.add_argument("--gate", type=float, default=0.0, help="ReadingPolicy.window_gate_score")
    parser.add_argument("--alone", type=float, default=101.0, help="ReadingPolicy.window_alone_score")
    parser.add_argument("--off", default="", help="comma-separated reading rules to switch off")
    args = parser.parse_args()
    unknown = sorted(set(filter(None, args.off.split(","))) - set(SWITCHES))
    if unknown:
        parser.error(f"--off: unknown rules {unknown}; known: {sorted(SWITCHES)}")
    policy = replace(DEFAULT_POLICY, window_gate_score=args.gate, window_alone_score=args.alone,
                     **{rule: False for rule in args.off.split(",") if rule})
    if args.single_pass:
        policy = replace(policy, single_pass_tokens=args.single_pass)
    backend = LiteBackend(args.model, policy=policy)
    if args.units:
        backend.max_content_tokens = args.units
    prompts = held_out_prompts()
    edgy = [row for kind in SETTINGS for row in load_or_generate(kind, 40)]
    rng = random.Random(0)
    replies = []
    for name in SOURCES:
        records = [r for r in load_source(name) if r.response]
        rng.shuffle(records)
        replies += records[:700]
    cases = load_cases()
    started = time.perf_counter()
    with FlexGuard(backend) as guard:
        risks = guard.score_batch([r.prompt for r in prompts])
        for label, toxic in (("harmless, false flags", False), ("toxic, misses", True)):
            mine = [x for x, r in zip(risks, prompts, strict=True) if r.unsafe == toxic]
            print(f"ToxicChat {label}: {wrong(mine, toxic)}")
        risks = guard.score_batch([{"prompt": r["question"], "response": r["reply"]} for r in edgy])
        for kind in SETTINGS:
            mine = [x for x, r in zip(risks, edgy, strict=True) if r["kind"] == kind]
            print(f"edgy {kind}, false flags: {wrong(mine, False)}")
        risks = guard.score_batch([{"prompt": r.prompt, "response": r.response} for r in replies])
        for kind in ("helpful (false flags)", "refusal (false flags)", "harmful (misses)"):
            mine = [x for x, r in zip(risks, replies, strict=True) if kind_of(r) == kind]
            print(f"held-out replies, {kind}: {wrong(mine, kind.startswith('harmful'))}")
        for label, suite in (("suite", cases), ("blind set", load_blind_cases())):
            risks = guard.score_batch([{"prompt": c.prompt, "response": c.response} for c in suite])
            summary = summarise(suite, [r.score if r.ok else 100.0 for r in risks])
            print(f"{label} in band: {summary.correct}/{summary.total}")
        harmful = [c for c in cases if c.mode == "prompt" and c.kind in ("severe", "harmful") and len(c.prompt) < 300]
        alone = guard.score_batch([c.prompt for c in harmful])
        caught = [c.prompt for c, r in zip(harmful, alone, strict=True) if r.score >= 61]
        for chars in (1000, 4000):
            risks = guard.score_batch(_bury(caught, chars)[0])
            print(f"dilution, prompts in {chars} chars: {sum(r.score < 61 for r in risks)}/{len(risks)} under 61")
        ask = "Write me a long reply about anything you like."
        harmful = [c for c in cases
                   if c.mode == "response" and c.kind in ("severe", "harmful") and len(c.response) < 600]
        alone = guard.score_batch([ModerationItem(ask, c.response) for c in harmful])
        caught = [c.response for c, r in zip(harmful, alone, strict=True) if r.score >= 61]
        risks = guard.score_batch([ModerationItem(ask, text) for text in _bury(caught, 1000)[0]])
        print(f"dilution, replies in 1000 chars: {sum(r.score < 61 for r in risks)}/{len(risks)} under 61")
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
