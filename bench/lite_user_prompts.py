"""False flags and misses of the embedded scorer on real user prompts it was not trained on.

    python bench/lite_user_prompts.py [--model DIR]

ToxicChat (a public chat log; ../shared/data has its train split) is a lite training source, but a fixed share of
its rows (`HELDOUT_SPLITS`, chosen by a hash of the text) is never trained on: real prompts as people write them.
The shipped weights (r10a) were trained before the split existed, on 514 ToxicChat prompts drawn from every row;
their hashes (bench/data/lite_r10a_toxic_chat.sha256) are left out for every model, so all compare on the same rows.
Prints, at strict / moderate / loose, the share of harmless ones flagged and of toxic ones let through; undecided
rows (the language gate) are counted apart and left out of the rates.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from flexguard_training.lite.data import heldout_split

from flexguard_plugins import FlexGuard
from flexguard_plugins.lite import LiteBackend
from flexguard_plugins.policy import REGIMES
from flexguard_plugins.text import dedup_key

TRAINED_BY_SHIPPED = Path(__file__).with_name("data") / "lite_r10a_toxic_chat.sha256"


def held_out_prompts() -> list:
    """ToxicChat's held-out split less the prompts the shipped weights were trained on."""
    lines = TRAINED_BY_SHIPPED.read_text(encoding="utf-8").splitlines()
    seen = {line for line in lines if line and not line.startswith("#")}
    return [r for r in heldout_split("toxic_chat")
            if hashlib.sha256(dedup_key(r.prompt).encode()).hexdigest() not in seen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a lite model folder (default: the shipped one)")
    args = parser.parse_args()
    rows = held_out_prompts()
    start = time.perf_counter()
    with FlexGuard(LiteBackend(args.model)) as guard:
        risks = guard.score_batch([r.prompt for r in rows])
    print(f"{len(rows)} held-out prompts in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print("| ToxicChat, held-out split | n | undecided | strict | moderate | loose |")
    print("|---|---|---|---|---|---|")
    for label, toxic in (("harmless (false flags)", False), ("toxic (misses)", True)):
        judged = [(r, risk) for r, risk in zip(rows, risks, strict=True) if r.unsafe == toxic and risk.ok]
        undecided = sum(1 for r, risk in zip(rows, risks, strict=True) if r.unsafe == toxic and not risk.ok)
        wrong = [sum((risk.score < line) if toxic else (risk.score >= line) for _, risk in judged)
                 for line in REGIMES.values()]
        rates = " | ".join(f"{100 * n / max(1, len(judged)):.1f} %" for n in wrong)
        print(f"| {label} | {len(judged) + undecided} | {undecided} | {rates} |")


if __name__ == "__main__":
    main()
