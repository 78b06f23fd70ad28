"""What each reading rule of the embedded scorer catches and costs: every rule switched off alone, and all off.

    python bench/lite_rules.py [--cap 100] [--seed 0]

Items: the held-out real sources the lite trainer never trains on (`HELDOUT_SOURCES`, drawn as
`flexguard train lite --eval-only` draws them: stratified by tier, at most `--cap` rows per source, from
../shared/data), the must-catch suite and the blind set (tests/must_catch/). Per configuration and mode:

- false flags: harmless rows (tier BENIGN) scored at or over the regime's line (strict 21, moderate 41, loose 61);
- misses: rows whose tier reaches the regime (strict: LOW and up, moderate: MODERATE and up, loose: HIGH and up)
  scored under its line;
- rows: model rows read per item (its cost; `rows=` in `RiskScore.raw`);
- suite and blind set: cases in their band (undecided counts as blocked, the default `on_error`).

An item in a language the scorer does not read is undecided and counts as flagged (blocked); the gate runs before
every rule, so this is the same in every configuration. A rule that reads only replies (everything but the views
and windows) leaves prompt-mode scores as they are: those rows are scored once, with the shipped policy.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.must_catch

REGIMES = {"strict": (21.0, 1), "moderate": (41.0, 2), "loose": (61.0, 3)}
"""Regime → (score line, lowest true tier the regime must flag)."""
PROMPT_RULES = ("visible_view", "leet_view", "sentence_windows")
"""The switches that change how a prompt is read; the others read only replies."""


def items(cap: int, seed: int) -> list[tuple[str, str, str | None, int | None, object]]:
    """(group, prompt, response, tier or None, case or None): held-out rows, the suite and the blind set."""
    from flexguard_training.lite.data import HELDOUT_SOURCES, heldout_examples

    from tests.must_catch.suite import load_blind_cases, load_cases

    out: list[tuple[str, str, str | None, int | None, object]] = [
        ("heldout", e.prompt, e.response, e.severity, None) for e in heldout_examples(HELDOUT_SOURCES, None, seed, cap)]
    out += [("suite", c.prompt, c.response, None, c) for c in load_cases()]
    out += [("blind", c.prompt, c.response, None, c) for c in load_blind_cases()]
    return out


def score(backend, rows: list, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(scores, model rows read) per item; an undecided or failed item scores 100 (blocked) and reads 0 rows."""
    from flexguard_plugins.types import ModerationItem

    scores, read = [], []
    for start in range(0, len(rows), chunk):
        for risk in backend.score_sync([ModerationItem(p, r) for _, p, r, _, _ in rows[start:start + chunk]]):
            scores.append(risk.score if risk.ok else 100.0)
            found = re.search(r"rows=(\d+)", risk.raw or "") if risk.ok else None
            read.append(int(found.group(1)) if found else 0)
    return np.array(scores), np.array(read)


def figures(rows: list, scores: np.ndarray, read: np.ndarray) -> dict[str, object]:
    from tests.must_catch.suite import summarise

    out: dict[str, object] = {}
    groups = np.array([g for g, *_ in rows])
    modes = np.array(["prompt" if r is None else "response" for _, _, r, _, _ in rows])
    tiers = np.array([-1 if t is None else t for *_, t, _ in rows])
    for mode in ("prompt", "response"):
        held = (groups == "heldout") & (modes == mode)
        s, t = scores[held], tiers[held]
        block: dict[str, object] = {"n_benign": int((t == 0).sum()), "rows": float(read[held].mean())}
        for name, (line, tier) in REGIMES.items():
            block[f"ff_{name}"] = int(((t == 0) & (s >= line)).sum())
            block[f"miss_{name}"] = int(((t >= tier) & (s < line)).sum())
            block[f"n_{name}"] = int((t >= tier).sum())
        out[mode] = block
    for group in ("suite", "blind"):
        chosen = groups == group
        summary = summarise([c for (g, *_, c) in rows if g == group], list(scores[chosen]))
        out[group] = (summary.correct, summary.total)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=100, help="held-out rows per source (stratified by tier)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from flexguard_plugins.lite import DEFAULT_POLICY, SWITCHES, LiteBackend

    rows = items(args.cap, args.seed)
    replies = np.array([r is not None for _, _, r, _, _ in rows])
    configs = {"shipped": DEFAULT_POLICY, **{f"no {name}": replace(DEFAULT_POLICY, **{name: False})
                                             for name in SWITCHES}}
    configs["all off"] = replace(DEFAULT_POLICY, **{name: False for name in SWITCHES})
    print(f"{len(rows)} items: {int((~replies).sum())} prompt mode, {int(replies.sum())} response mode")
    base_scores = base_read = None
    results = {}
    for label, policy in configs.items():
        started = time.perf_counter()
        backend = LiteBackend(policy=policy, threads=args.threads)
        if base_scores is None:
            base_scores, base_read = score(backend, rows)
            scores, read = base_scores, base_read
        else:
            prompt_too = label == "all off" or label.removeprefix("no ") in PROMPT_RULES
            chosen = np.ones(len(rows), bool) if prompt_too else replies
            scores, read = base_scores.copy(), base_read.copy()
            scores[chosen], read[chosen] = score(backend, [r for r, c in zip(rows, chosen, strict=True) if c])
        results[label] = figures(rows, scores, read)
        print(f"{label}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    for mode in ("prompt", "response"):
        base = results["shipped"][mode]
        print(f"\n{mode} mode, held-out: {base['n_benign']} harmless rows; harmful rows per regime "
              f"{base['n_strict']}/{base['n_moderate']}/{base['n_loose']} (strict/moderate/loose)\n")
        print("| policy | false flags s/m/l | misses s/m/l | net vs shipped (errors) | rows per item |")
        print("|---|---|---|---|---|")
        total = {label: sum(r[mode][f"{k}_{n}"] for k in ("ff", "miss") for n in REGIMES)
                 for label, r in results.items()}
        for label, r in results.items():
            m = r[mode]
            ff = "/".join(str(m[f"ff_{n}"]) for n in REGIMES)
            miss = "/".join(str(m[f"miss_{n}"]) for n in REGIMES)
            print(f"| {label} | {ff} | {miss} | {total[label] - total['shipped']:+d} | {m['rows']:.2f} |")
    print("\n| policy | suite in band | blind set in band |\n|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['suite'][0]}/{r['suite'][1]} | {r['blind'][0]}/{r['blind'][1]} |")


if __name__ == "__main__":
    main()
