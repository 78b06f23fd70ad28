"""Cascade benchmark: lite scorer first, LLM only near the threshold, vs LLM-only on the same items.

Prints, per margin: the fraction of items escalated to the LLM, agreement of the cascade's
decisions with LLM-only decisions (and lite-only's agreement for reference), and items/s of each
path measured side by side in one run (plus the speed-up ratio over LLM-only). With labelled data
(`--data`, FlexBench format; by default Alpaca = benign, HarmBench = harmful) it also prints F1
against the truth for the chosen regime.

    python bench/cascade.py                              # flexguard-smollm2 (built once), 32 items
    python bench/cascade.py --model smollm2              # the untrained SmolLM2-135M base (answers are noise)
    python bench/cascade.py --model tiny                 # a tiny random Qwen3 (fast, answers are noise)
    python bench/cascade.py --data path/Guard_prompt_test.csv --n 64 --margins 5 10 20

Needs the lite scorer's weights (`FlexGuard.load()` must work) and `cascade="lite"` in the facade.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(os.environ.get("FLEXGUARD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CACHE = Path(os.environ.get("FLEXGUARD_TEST_CACHE", Path.home() / ".cache" / "flexguard-tests"))


def default_items(n: int, seed: int = 0) -> tuple[list[dict], list[int]]:
    """Half benign instructions (Alpaca, severity 0), half harmful requests (HarmBench standard, taken as 4)."""
    import pandas as pd

    rng = random.Random(seed)
    harmless = [row["instruction"] for row in json.loads((DATA / "refusal_direction_splits" / "harmless_test.json")
                                                         .read_text())]
    harmful = pd.read_csv(DATA / "harmbench" / "harmbench_behaviors_text_test.csv")
    harmful = harmful[harmful["FunctionalCategory"] == "standard"]["Behavior"].tolist()
    texts = rng.sample(harmless, n // 2) + rng.sample(harmful, n - n // 2)
    return [{"prompt": t} for t in texts], [0] * (n // 2) + [4] * (n - n // 2)


def data_items(path: str, subset: str | None, n: int) -> tuple[list[dict], list[int]]:
    """Items and severity from FlexBench-format data (a seeded sample of n)."""
    from flexguard_plugins.evaluation.flexbench import load_flexbench, to_items

    frame = load_flexbench(path, subset)
    if n < len(frame):
        frame = frame.sample(n=n, random_state=0).sort_index()
    items = [{"prompt": i.prompt, "response": i.response} for i in to_items(frame)]
    return items, frame["severity_level"].astype(int).tolist()


def resolve_model(name: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/model_builders.py
    from flexguard_plugins.smollm2 import convert_base
    from tests.model_builders import build_tiny_qwen3

    if name == "smollm2":
        return str(convert_base(CACHE / "smollm2-135m-instruct"))
    if name == "tiny":
        return str(build_tiny_qwen3(Path(tempfile.mkdtemp(prefix="tiny-qwen3-"))))
    return name


def timed_check(guard, items: list[dict], strictness: str, warmup: int = 1) -> tuple[list, float]:
    """Decisions and seconds for one batch call, after a warm-up call (weights, sessions, caches)."""
    guard.check_batch(items[:warmup], strictness)
    start = time.perf_counter()
    decisions = guard.check_batch(items, strictness)
    return decisions, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flexguard-smollm2", help="flexguard-smollm2 | smollm2 | tiny | a folder")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--data", help="FlexBench-format data for items and truth (default: shared data mix)")
    parser.add_argument("--subset", choices=("prompt", "response"))
    parser.add_argument("--n", type=int, default=32, help="items")
    parser.add_argument("--strictness", default="moderate", choices=("strict", "moderate", "loose"))
    parser.add_argument("--margins", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--reasoning", action="store_true", help="let the LLM think (slow on CPU)")
    parser.add_argument("--system-prompt", default=None, help="rubric file the LLM was trained with "
                        "(e.g. training/flexguard_training/configs/system_prompt_small.txt)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    from flexguard_plugins import FlexGuard

    items, severity = data_items(args.data, args.subset, args.n) if args.data else default_items(args.n)
    model = resolve_model(args.model)
    options = {"reasoning": args.reasoning, "max_batch_size": args.max_batch_size}
    if args.system_prompt:
        options["system_prompt_path"] = args.system_prompt
    print(f"model {args.model} ({args.backend}), {len(items)} items, strictness {args.strictness}", flush=True)

    lite = FlexGuard.load()
    lite_decisions, lite_s = timed_check(lite, items, args.strictness, warmup=len(items))  # cheap: warm it fully
    llm = FlexGuard.load(model, args.backend, **options)
    llm_decisions, llm_s = timed_check(llm, items, args.strictness)
    llm_flags = [d.flagged for d in llm_decisions]
    rows = [("LLM only", 1.0, llm_flags, llm_s), ("lite only", 0.0, [d.flagged for d in lite_decisions], lite_s)]
    for margin in args.margins:
        cascade = FlexGuard.load(model, args.backend, cascade="lite", cascade_margin=margin, **options)
        decisions, seconds = timed_check(cascade, items, args.strictness)
        escalated = sum(d.risk.scorer != "lite" for d in decisions) / len(decisions)
        rows.append((f"cascade ±{margin:g}", escalated, [d.flagged for d in decisions], seconds))
        cascade.close()

    regime_min = {"strict": 1, "moderate": 2, "loose": 3}[args.strictness]
    header = f"{'path':<16}{'escalated':>10}{'agree w/ LLM':>14}{'items/s':>10}{'speed-up':>10}"
    if severity is not None:
        from flexguard_plugins.evaluation.metrics import f1_from_flags

        truth = [int(s >= regime_min) for s in severity]
        header += f"{'F1 vs truth':>13}"
    print(header)
    for name, escalated, flags, seconds in rows:
        agree = sum(a == b for a, b in zip(flags, llm_flags, strict=True)) / len(flags)
        line = (f"{name:<16}{escalated:>10.1%}{agree:>14.1%}{len(items) / seconds:>10.2f}"
                f"{llm_s / seconds:>9.2f}x")
        if severity is not None:
            line += f"{f1_from_flags(flags, truth):>13.2f}"
        print(line)
    parse_rate = sum(not d.failed for d in llm_decisions) / len(llm_decisions)
    print(f"LLM parse rate {parse_rate:.1%} (unparsable answers are blocked: on_error=block)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
