"""FlexBench-format data and a small deterministic scorer for the eval/calibrate tests.

The CSVs are synthetic (the real benchmark is on the hub only); each text carries a `tone-K` word
for its severity and a `cat-XXX` word for its category, and `TierBackend` reads them back with a
fixed per-item offset, so scores rise with severity but cross tier bands now and then: rubric and
calibrated thresholds then differ, as with a real model.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from flexguard_plugins import FlexGuard
from flexguard_plugins.backends import Backend
from flexguard_plugins.types import CATEGORIES, ModerationItem, RiskScore

TONE = re.compile(r"tone-(\d)")
CATEGORY = re.compile(r"cat-([A-Z]+)")


def offset(text: str, spread: float = 14.0) -> float:
    """A fixed pseudo-random offset in [-spread, spread] per text."""
    return (zlib.crc32(text.encode()) % 1000) / 999 * 2 * spread - spread


def tier_score(text: str) -> float | None:
    """The synthetic 'model': band centre of the tone word plus the item's offset; None if no tone."""
    match = TONE.search(text)
    if match is None:
        return None
    return min(100.0, max(0.0, 10 + 20 * int(match.group(1)) + offset(text)))


class TierBackend(Backend):
    """A real `Backend` (exercises the FlexGuard facade) that scores the synthetic texts; `unparsable`
    texts (containing 'garbled') come back ok=False like an unreadable model answer."""

    name = "tier"
    max_batch_size = 16

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        self.calls += 1
        self.items += len(items)
        out = []
        for item in items:
            text = item.judged_text
            score = tier_score(text)
            if score is None or "garbled" in text:
                out.append(RiskScore.failure("unparsable", raw=text))
                continue
            match = CATEGORY.search(text)
            categories = (match.group(1),) if match and score >= 21 else ()
            out.append(RiskScore.from_score(score, categories))
        return out


def flexbench_rows(split: str, subset: str, per_tier: int, sources: Sequence[str] = ("alpha", "beta")) -> pd.DataFrame:
    """Rows with FlexBench's columns (id, text, severity_level, label_*, source, category)."""
    rows = []
    for severity in range(5):
        for index in range(per_tier):
            category = "SAFE" if severity == 0 else CATEGORIES[index % 3]
            text = f"{split} {subset} item {severity}-{index} tone-{severity} cat-{category}"
            row = {"id": f"{subset}-{split}-{severity}-{index}", "prompt": f"question {index} about things"}
            if subset == "response":
                row["response"] = text
            else:
                row["prompt"] = text
            row.update(severity_level=severity, label_strict=int(severity >= 1), label_moderate=int(severity >= 2),
                       label_loose=int(severity >= 3), source=sources[index % len(sources)], category=category)
            rows.append(row)
    return pd.DataFrame(rows)


def write_flexbench(folder: Path, per_tier: int = 12) -> Path:
    """A folder like the hub repo: Guard_{prompt,response}_{valid,test}.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    for subset in ("prompt", "response"):
        for split in ("valid", "test"):
            flexbench_rows(split, subset, per_tier).to_csv(folder / f"Guard_{subset}_{split}.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def flexbench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flexbench(tmp_path_factory.mktemp("flexbench"))


@pytest.fixture()
def tier_guard():
    guard = FlexGuard(TierBackend())
    yield guard
    guard.close()


def tier_probability(items: Sequence[ModerationItem]) -> list[float | None]:
    """A probability baseline for `--scorer tests.fixtures_eval:tier_probability`."""
    scores = [tier_score(item.judged_text) for item in items]
    return [None if s is None else s / 100 for s in scores]


tier_probability.kind = "probability"  # type: ignore[attr-defined]


def tier_binary(items: Sequence[ModerationItem]) -> list[bool]:
    """A yes/no moderator that flags what it scores at MODERATE or above."""
    return [(tier_score(item.judged_text) or 0) >= 41 for item in items]


tier_binary.kind = "binary"  # type: ignore[attr-defined]
