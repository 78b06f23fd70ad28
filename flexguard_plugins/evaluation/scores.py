"""Scores saved as they arrive (`scores.jsonl`), so an interrupted `flexguard eval` or `calibrate` resumes.

One JSON object per line: id, score (0-100, null when unscored), ok, categories, severity, scorer, and
error for an unscored item. A torn last line (the run was killed mid-write) is cut off on reading.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from flexguard_plugins.types import RiskScore

from .baselines import Scorer, run_scorer
from .flexbench import to_items

logger = logging.getLogger(__name__)

SCORES_FILE = "scores.jsonl"
CALIBRATION_SCORES_FILE = "calibration_scores.jsonl"


def score_record(item_id: str, severity: int, risk: RiskScore) -> dict[str, Any]:
    """One line of scores.jsonl: enough to recompute every metric and to calibrate without re-scoring."""
    return {
        "id": item_id, "score": risk.score if risk.ok else None, "ok": bool(risk.ok),
        "categories": list(risk.categories), "severity": int(severity), "scorer": risk.scorer,
        **({"error": risk.error} if not risk.ok else {}),
    }


def read_scores(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records by id. A torn last line (the run was killed mid-write) is cut off so appending is safe."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    records: dict[str, dict[str, Any]] = {}
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
            records[str(record["id"])] = record
        except (ValueError, KeyError, TypeError):
            break
        good += len(line)
    if good < len(data):
        logger.warning("%s: dropping a torn record at byte %d (interrupted run)", path, good)
        with path.open("r+b") as handle:
            handle.truncate(good)
    return records


def load_scores_table(path: str | Path) -> pd.DataFrame:
    """A scores.jsonl as a table (id, score, ok, categories, severity); for calibrating without a model."""
    records = read_scores(path)
    if not records:
        raise ValueError(f"{path}: no scores")
    table = pd.DataFrame(list(records.values()))
    missing = {"id", "score", "ok", "severity"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: records lack {sorted(missing)}; is this a flexguard eval scores.jsonl?")
    if "categories" not in table:
        table["categories"] = [[] for _ in range(len(table))]
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    return table


def score_frame(frame: pd.DataFrame, scorer: Scorer, path: str | Path | None = None, *, batch_size: int = 64,
                desc: str = "scoring") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every row not already in `path`, appending each finished batch; returns scores in row order."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path) if path is not None else None
    done = read_scores(path) if path is not None else {}
    ids = frame["id"].tolist()
    todo = [index for index, item_id in enumerate(ids) if item_id not in done]
    items = to_items(frame)
    severity = frame["severity_level"].to_numpy()
    start = time.perf_counter()
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc=desc, unit="item", leave=False) as bar, \
            (path.open("a", encoding="utf-8") if path is not None else nullcontext()) as handle:
        for offset in range(0, len(todo), batch_size):
            rows = todo[offset:offset + batch_size]
            risks = run_scorer(scorer, [items[i] for i in rows])
            lines = []
            for index, risk in zip(rows, risks, strict=True):
                record = score_record(ids[index], int(severity[index]), risk)
                done[ids[index]] = record
                lines.append(json.dumps(record) + "\n")
            if handle is not None:
                handle.write("".join(lines))
                handle.flush()
            bar.update(len(rows))
    elapsed = time.perf_counter() - start
    timing = {
        "scored": len(todo), "resumed": len(ids) - len(todo), "elapsed_s": round(elapsed, 3),
        "items_per_s": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
    }
    table = pd.DataFrame([done[item_id] for item_id in ids])
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    return table, timing
