"""False flags and misses of the embedded scorer on real user prompts it was not trained on.

    python bench/lite_user_prompts.py [--model DIR]

ToxicChat (a public chat log; ../shared/data has its train split) is a lite training source, but the trainer draws
only some of its rows (`flexguard train lite` with seed 0): the rest, which the model never saw, are real prompts
as people write them. Prints, at strict / moderate / loose, the share of harmless ones flagged and of toxic ones
let through; undecided rows (the language gate) are counted apart and left out of the rates.
"""

from __future__ import annotations

import argparse
import sys
import time

from flexguard_training.lite.cli import make_parser as trainer_parser
from flexguard_training.lite.data import HELDOUT_SOURCES, TRAIN_SOURCES, training_examples
from flexguard_training.sources import load_source

from flexguard_plugins import FlexGuard
from flexguard_plugins.lite import LiteBackend
from flexguard_plugins.policy import REGIMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a lite model folder (default: the shipped one)")
    args = parser.parse_args()
    trainer = trainer_parser().parse_args([])  # the shipped card's command: the trainer's defaults
    drawn, _ = training_examples(list(TRAIN_SOURCES), list(HELDOUT_SOURCES), None, budget=trainer.budget,
                                 augment_share=trainer.augment_share, seed=trainer.seed)
    seen = {e.prompt for e in drawn if e.source == "toxic_chat"}
    rows = [r for r in load_source("toxic_chat") if r.prompt not in seen]
    start = time.perf_counter()
    with FlexGuard(LiteBackend(args.model)) as guard:
        risks = guard.score_batch([r.prompt for r in rows])
    print(f"{len(rows)} prompts ({len(seen)} drawn for training left out) in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    print("| ToxicChat, not drawn for training | n | undecided | strict | moderate | loose |")
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
