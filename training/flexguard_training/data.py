"""`flexguard train prepare`: labelled sources → FlexGuard training records, a held-out split and a data card.

Each record holds the item (`query`, `reply`; `reply` is None in prompt mode) and its target: harm
codes, a 0-100 risk score and, when a teacher wrote one, a reasoning trace. The records are
tokenizer-free; `sft` and `grpo` render them with the core's `render_prompt` / `render_target`.

Where a target score comes from (the record's `label_source`):
  teacher    a teacher annotation's raw score, put through the paper's label-consistency
             calibration: source-safe items linearly into [0, 40], source-unsafe into [40, 100].
  severity   no teacher score: the middle of the source's severity tier band
             (BENIGN 10, LOW 30, MODERATE 50, HIGH 70, EXTREME 90). Our choice.
  binary     no teacher score and no graded severity (binary sources): the middle of the
             calibration band of the source label, safe 10 (BENIGN's middle), unsafe 70. Our choice;
             `--unknown_severity skip` drops these records instead.

Training records whose normalised query text (`flexguard_plugins.text.dedup_key`: NFKC, homoglyphs
and invisible characters folded, case-folded, whitespace collapsed) appears in the evaluation data
(`--eval_data` files and the held-out sources) are removed and counted.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexguard_plugins.evaluation.flexbench import load_flexbench
from flexguard_plugins.parsing import parse_output
from flexguard_plugins.text import dedup_key
from flexguard_plugins.types import CATEGORIES, TIER_BANDS, TIER_EDGES, Tier, tier_for_score

from . import arguments
from .sources import SourceRecord, load_sources

logger = logging.getLogger(__name__)

SAFE_BAND = (0.0, 40.0)
UNSAFE_BAND = (40.0, 100.0)
"""The label-consistency calibration's target ranges for source-safe and source-unsafe items."""

SEVERITY_SCORE: dict[int, int] = {tier.severity: (lo + hi) // 2 for tier, (lo, hi) in TIER_BANDS.items()}
"""Target score when only a severity tier is known: the middle of the tier band (10/30/50/70/90)."""

BINARY_SCORE = {False: 10, True: 70}
"""Target score when only the source's safe/unsafe label is known (our choice, see the module doc)."""


# --- pure functions ---------------------------------------------------------------------------------

def calibrate_score(raw: float, unsafe: bool, raw_range: tuple[float, float] = (0.0, 100.0)) -> float:
    """The paper's label-consistency calibration of a teacher's raw score.

    Source-safe items map linearly from `raw_range` onto [0, 40], source-unsafe onto [40, 100], so a
    teacher can never contradict the source label, while its ranking within each side is kept.

    >>> calibrate_score(50, unsafe=False), calibrate_score(50, unsafe=True)
    (20.0, 70.0)
    """
    low, high = raw_range
    if high <= low:
        raise ValueError(f"raw_range must be increasing, got {raw_range}")
    if raw != raw:
        raise ValueError("raw score is NaN")
    fraction = (min(max(float(raw), low), high) - low) / (high - low)
    band_low, band_high = UNSAFE_BAND if unsafe else SAFE_BAND
    return band_low + fraction * (band_high - band_low)


def clean_categories(categories: Any) -> tuple[str, ...]:
    """Known harm codes in the given order, without duplicates; SAFE and unknown names dropped."""
    if categories is None:
        return ()
    if isinstance(categories, str):
        categories = categories.replace(";", ",").split(",")
    codes = [str(c).strip().upper() for c in categories]
    return tuple(dict.fromkeys(c for c in codes if c in CATEGORIES))


@dataclass(frozen=True)
class Teacher:
    """One teacher annotation: harm codes, a raw score on `raw_range`, optionally a reasoning trace,
    and the item it is about (`id`, or the `prompt`/`response` text)."""

    categories: tuple[str, ...]
    score: float
    reasoning: str | None = None
    id: str | None = None
    prompt: str | None = None
    response: str | None = None

    @property
    def key(self) -> str:
        """How `prepare` joins it to an item: the id, else the item text's dedup key."""
        return self.id if self.id is not None else text_key(self.prompt, self.response)


@dataclass(frozen=True)
class Target:
    """A training target. `categories` None: a harmful item whose harm codes nobody knows; its category
    line is masked out of the SFT loss and the GRPO category reward (never trained as SAFE)."""

    categories: tuple[str, ...] | None
    score: int
    reasoning: str | None
    label_source: str

    @property
    def category_known(self) -> bool:
        return self.categories is not None


def _codes(score: int, codes: tuple[str, ...]) -> tuple[str, ...] | None:
    """SAFE (no codes) below the LOW edge; above it the codes, or None (unknown) when there are none."""
    if score < TIER_EDGES[0]:
        return ()
    return codes or None


def make_target(severity: int | None, unsafe: bool, categories: Sequence[str], teacher: Teacher | None = None,
                *, raw_range: tuple[float, float] = (0.0, 100.0)) -> Target:
    """The training target of one item.

    Categories: a score in the BENIGN band means SAFE (no codes); otherwise the teacher's codes, or the
    source's when the teacher named none. A harmful target with no codes from either gets `None`
    (unknown), never SAFE: saying SAFE for harmful text is what the guard must not learn.
    """
    source_codes = clean_categories(categories)
    if teacher is not None:
        score = int(round(calibrate_score(teacher.score, unsafe, raw_range)))
        return Target(_codes(score, clean_categories(teacher.categories) or source_codes), score, teacher.reasoning,
                      "teacher")
    if severity is not None:
        score = SEVERITY_SCORE[int(severity)]
        return Target(_codes(score, source_codes), score, None, "severity")
    score = BINARY_SCORE[bool(unsafe)]
    return Target(_codes(score, source_codes), score, None, "binary")


def read_teacher_lines(path: str | Path, raw_range: tuple[float, float] = (0.0, 100.0)) -> list[Teacher]:
    """The one reader of teacher files (JSONL), used by `prepare` and the lite trainer.

    Each line names its item by `id` and/or by text (`prompt`, `response`?) and gives either
    `categories` | `category` and `score` | `raw_score` | `risk_score` (on `raw_range`) with an optional
    `reasoning`, or `output`: the teacher's raw FlexGuard-format answer, read by the core's parser
    (an unparsable output is skipped with a warning). Anything else is an error naming the line.
    """
    low, high = raw_range
    annotations: list[Teacher] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a teacher line must be a JSON object")
        if "id" not in row and not isinstance(row.get("prompt"), str):
            raise ValueError(f"{where}: a teacher line needs 'id' or a 'prompt' text")
        item = {"id": None if row.get("id") is None else str(row["id"]),
                "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else None,
                "response": row.get("response") if isinstance(row.get("response"), str) else None}
        if "output" in row:
            risk = parse_output(str(row["output"]))
            if not risk.ok:
                logger.warning("%s: teacher output unparsable (%s); skipped", where, risk.error)
                continue
            annotations.append(Teacher(risk.categories, risk.score, risk.reasoning, **item))
            continue
        score = row.get("score", row.get("raw_score", row.get("risk_score")))
        if score is None:
            raise ValueError(f"{where}: a teacher line needs 'score' (or 'output')")
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: score {score!r} is not a number") from None
        if not low <= value <= high:
            raise ValueError(f"{where}: score {score} outside raw_range {raw_range}")
        categories = clean_categories(row.get("categories", row.get("category")))
        annotations.append(Teacher(categories, value, row.get("reasoning") or None, **item))
    return annotations


def read_teacher(path: str | Path, raw_range: tuple[float, float] = (0.0, 100.0)) -> dict[str, Teacher]:
    """Teacher annotations keyed by record id, or by the item text's dedup key when a line has no id."""
    return {teacher.key: teacher for teacher in read_teacher_lines(path, raw_range)}


def text_key(prompt: str | None, response: str | None) -> str:
    """The dedup key of an item (prompt and reply), with the core's one normaliser."""
    return dedup_key(prompt or "") + "\x1f" + dedup_key(response or "")


# --- records ------------------------------------------------------------------------------------

def items_from_sources(names: Sequence[str], root: str | None = None) -> list[SourceRecord]:
    return load_sources(names, Path(root) if root else None)


def items_from_flexbench(path: str) -> list[SourceRecord]:
    """Every subset and split of a FlexBench-format folder, or one file; the source column when present."""
    target = Path(path)
    frames = []
    if target.is_dir():
        for csv in sorted(target.glob("Guard_*_*.csv")):
            _, subset, split = csv.stem.split("_", 2)
            frames.append(load_flexbench(target, subset, split))
    else:
        frames.append(load_flexbench(target))
    items = []
    for frame in frames:
        for row in frame.to_dict("records"):
            severity = int(row["severity_level"])
            reply = row.get("response") if isinstance(row.get("response"), str) else None
            items.append(SourceRecord(
                id=str(row["id"]), source=str(row.get("source", Path(path).stem)), prompt=row["prompt"], response=reply,
                severity=severity, categories=clean_categories(row.get("category")), unsafe=severity >= 2,
            ))
    return items


def to_record(item: SourceRecord, target: Target) -> dict[str, Any]:
    return {
        "id": item.id, "source": item.source, "mode": "prompt" if item.response is None else "response",
        "query": item.prompt, "reply": item.response, "severity": -1 if item.severity is None else int(item.severity),
        "unsafe": item.unsafe,
        "target_categories": None if target.categories is None else list(target.categories),
        "category_known": target.category_known, "target_score": int(target.score),
        "target_tier": tier_for_score(target.score).value, "reasoning": target.reasoning,
        "label_source": target.label_source,
    }


def data_card(records: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """Counts per source, tier, category, mode and label source: what a reader needs to judge the mix."""
    categories = Counter(c for r in records for c in (
        ["UNKNOWN"] if r["target_categories"] is None else r["target_categories"] or ["SAFE"]))
    return {
        "records": len(records),
        "per_source": dict(sorted(Counter(r["source"] for r in records).items())),
        "per_tier": {t.value: sum(r["target_tier"] == t.value for r in records) for t in Tier},
        "per_category": dict(sorted(categories.items())),
        "per_mode": dict(sorted(Counter(r["mode"] for r in records).items())),
        "per_label_source": dict(sorted(Counter(r["label_source"] for r in records).items())),
        "with_reasoning": sum(bool(r["reasoning"]) for r in records),
        "category_unknown": sum(r["target_categories"] is None for r in records),
        **extra,
    }


def heldout_frames(items: Sequence[SourceRecord], per_tier: int | None, seed: int) -> dict[str, Any]:
    """FlexBench-format tables (prompt and response mode) of graded held-out items, balanced per tier."""
    import pandas as pd

    rng = random.Random(seed)
    graded = [i for i in items if i.severity is not None]
    frames = {}
    for mode in ("prompt", "response"):
        pool = [i for i in graded if (i.response is None) == (mode == "prompt")]
        chosen: list[SourceRecord] = []
        for severity in range(5):
            tier = [i for i in pool if i.severity == severity]
            rng.shuffle(tier)
            chosen += tier[:per_tier] if per_tier else tier
        if not chosen:
            continue
        rows = []
        for i in chosen:
            row = {"id": i.id, "prompt": i.prompt}
            if mode == "response":
                row["response"] = i.response
            row.update({"severity_level": i.severity, "label_strict": int(i.severity >= 1),
                        "label_moderate": int(i.severity >= 2), "label_loose": int(i.severity >= 3),
                        "category": ",".join(i.categories) or ("SAFE" if i.severity == 0 else "UNKNOWN"),
                        "source": i.source})
            rows.append(row)
        frames[mode] = pd.DataFrame(rows)
    return frames


def balance_cells(records: Sequence[dict[str, Any]], per_cell: int, rng: random.Random,
                  removed: Counter) -> list[dict[str, Any]]:
    """At most `per_cell` records per (mode, target tier), taken from the cell's sources in turn so that
    no one large source fills a cell; the rest are counted in `removed["over_max_per_tier_mode"]`."""
    cells: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        cells.setdefault((record["mode"], record["target_tier"]), {}).setdefault(record["source"], []).append(record)
    kept: list[dict[str, Any]] = []
    for cell in sorted(cells):
        queues = [cells[cell][source] for source in sorted(cells[cell])]
        for queue in queues:
            rng.shuffle(queue)
        taken: list[dict[str, Any]] = []
        while len(taken) < per_cell and any(queues):
            for queue in queues:
                if queue and len(taken) < per_cell:
                    taken.append(queue.pop())
        removed["over_max_per_tier_mode"] += sum(len(queue) for queue in queues)
        kept += taken
    return kept


# --- command line -------------------------------------------------------------------------------

@dataclass
class PrepareArguments:
    """Arguments of `flexguard train prepare`."""

    output_dir: str = field(metadata={"help": "Folder to write: the datasets folder, data_card.json, heldout/."})
    sources: list[str] | None = field(default=None, metadata={
        "help": "Public sources to train on (names in flexguard_training.sources.SOURCES)."})
    data_root: str | None = field(default=None, metadata={
        "help": "Folder holding the public sources (default: FLEXGUARD_DATA or ../shared/data)."})
    flexbench: list[str] | None = field(default=None, metadata={
        "help": "FlexBench-format CSV files or folders to train on."})
    teacher: list[str] | None = field(default=None, metadata={
        "help": "JSONL teacher annotations (id, categories, score, reasoning), joined by id or text."})
    teacher_raw_range: list[float] = field(default_factory=lambda: [0.0, 100.0], metadata={
        "help": "Range of the teacher's raw scores, mapped by the label-consistency calibration."})
    require_teacher: bool = field(default=False, metadata={
        "help": "Keep only records with a teacher annotation."})
    unknown_severity: str = field(default="binary", metadata={
        "help": "Records with neither teacher score nor severity: 'binary' (safe 10, unsafe 70) or 'skip'.",
        "choices": ["binary", "skip"]})
    eval_data: list[str] | None = field(default=None, metadata={
        "help": "FlexBench-format files or folders to deduplicate against (exact normalised query text)."})
    holdout_sources: list[str] | None = field(default=None, metadata={
        "help": "Whole sources kept out of training and written to heldout/ as FlexBench-format CSVs."})
    holdout_per_tier: int | None = field(default=None, metadata={
        "help": "Items per severity tier in the held-out tables (balanced like FlexBench); all when unset."})
    max_per_source: int | None = field(default=None, metadata={
        "help": "Random sample of at most this many training records per source."})
    max_per_tier_mode: int | None = field(default=None, metadata={
        "help": "At most this many training records per (mode, target tier) cell, drawn across sources in turn "
                "(balances tiers and modes; applied after --max_per_source)."})
    max_text_chars: int | None = field(default=None, metadata={
        "help": "Drop items whose query plus reply is longer than this (keeps sequences short)."})
    validation_fraction: float = field(default=0.0, metadata={
        "help": "Fraction of training records written as a 'validation' split."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling and shuffling."})


def make_parser(prog: str | None = None) -> Any:
    return arguments.make_parser((PrepareArguments,), prog)


def prepare(args: PrepareArguments) -> dict[str, Any]:
    """Build and write the training set; returns the data card."""
    from datasets import Dataset, DatasetDict

    if not args.sources and not args.flexbench:
        raise ValueError("nothing to prepare: give --sources and/or --flexbench")
    rng = random.Random(args.seed)
    raw_range = (float(args.teacher_raw_range[0]), float(args.teacher_raw_range[1]))
    items: list[SourceRecord] = []
    if args.sources:
        items += items_from_sources(args.sources, args.data_root)
    for path in args.flexbench or []:
        items += items_from_flexbench(path)

    heldout = items_from_sources(args.holdout_sources, args.data_root) if args.holdout_sources else []
    overlap = set(args.sources or []) & set(args.holdout_sources or [])
    if overlap:
        raise ValueError(f"sources both trained on and held out: {sorted(overlap)}")
    eval_queries = {dedup_key(i.prompt) for i in heldout}
    for path in args.eval_data or []:
        eval_queries |= {dedup_key(i.prompt) for i in items_from_flexbench(path)}

    teacher: dict[str, Teacher] = {}
    for path in args.teacher or []:
        teacher.update(read_teacher(path, raw_range))

    removed = Counter()
    records, seen = [], set()
    for item in items:
        if args.max_text_chars and len(item.prompt) + len(item.response or "") > args.max_text_chars:
            removed["too_long"] += 1
            continue
        if dedup_key(item.prompt) in eval_queries:
            removed["eval_duplicate"] += 1
            continue
        key = text_key(item.prompt, item.response)
        if key in seen:
            removed["train_duplicate"] += 1
            continue
        seen.add(key)
        annotation = teacher.get(item.id) or teacher.get(key)
        if annotation is None and args.require_teacher:
            removed["no_teacher"] += 1
            continue
        if annotation is None and item.severity is None and args.unknown_severity == "skip":
            removed["unknown_severity"] += 1
            continue
        records.append(to_record(item, make_target(item.severity, item.unsafe, item.categories, annotation,
                                                   raw_range=raw_range)))

    if args.max_per_source:
        by_source: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_source.setdefault(record["source"], []).append(record)
        records = []
        for source in sorted(by_source):
            group = by_source[source]
            rng.shuffle(group)
            removed["over_max_per_source"] += max(0, len(group) - args.max_per_source)
            records += group[: args.max_per_source]
    if args.max_per_tier_mode:
        records = balance_cells(records, args.max_per_tier_mode, rng, removed)
    rng.shuffle(records)
    if not records:
        raise ValueError("no training records left after filtering")

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    n_valid = int(round(len(records) * args.validation_fraction))
    splits = {"train": Dataset.from_list(records[n_valid:])}
    if n_valid:
        splits["validation"] = Dataset.from_list(records[:n_valid])
    DatasetDict(splits).save_to_disk(str(output))

    heldout_counts = {}
    if heldout:
        folder = output / "heldout"
        folder.mkdir(exist_ok=True)
        for mode, frame in heldout_frames(heldout, args.holdout_per_tier, args.seed).items():
            frame.to_csv(folder / f"Guard_{mode}_test.csv", index=False)
            heldout_counts[mode] = {"rows": len(frame), "per_severity": {
                int(k): int(v) for k, v in frame["severity_level"].value_counts().sort_index().items()}}

    card = data_card(records, splits={name: len(ds) for name, ds in splits.items()},
                     removed=dict(removed), eval_duplicates_removed=removed["eval_duplicate"],
                     heldout_sources=list(args.holdout_sources or []), heldout=heldout_counts,
                     inputs={"sources": list(args.sources or []), "flexbench": list(args.flexbench or []),
                             "teacher": list(args.teacher or []), "eval_data": list(args.eval_data or [])},
                     seed=args.seed)
    (output / "data_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = arguments.parse_arguments(make_parser(prog="flexguard train prepare"), argv)
    card = prepare(args)
    print(f"wrote {card['records']} records to {args.output_dir} "
          f"({card['eval_duplicates_removed']} removed as duplicates of evaluation data)")
    print(json.dumps({k: card[k] for k in ("per_source", "per_tier", "per_category", "removed")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
