"""`report.md` and its plots for one `flexguard eval` run, and `comparison.md` for several side by side.

F1 is in percent; "tier MAE (score points)" is the mean distance, in points of the 0-100 score, of each
scored item from its true tier's band (0 inside the band).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexguard_plugins.evaluation.thresholds import f1_curve
from flexguard_plugins.policy import REGIMES
from flexguard_plugins.types import Tier

from . import metrics as M


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _new_figure() -> tuple[Any, Any]:
    """A figure on the non-interactive backend (reports are written on machines with no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_distribution(table: pd.DataFrame, path: Path, thresholds: Mapping[str, float]) -> Path:
    """Histogram of scores per true severity tier, with the rubric thresholds marked."""
    fig, ax = _new_figure()
    scored = table[table["ok"].astype(bool)]
    bins = np.arange(0, 105, 5)
    for tier in Tier:
        values = scored.loc[scored["severity"] == tier.severity, "score"].to_numpy(dtype=float)
        if len(values):
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{tier.value} (n={len(values)})")
    for regime, threshold in thresholds.items():
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
        ax.text(threshold, ax.get_ylim()[1] * 0.95, f" {regime}", fontsize=7, color="grey")
    ax.set_xlabel("risk score")
    ax.set_ylabel("items")
    ax.set_title("Score distribution per true severity tier")
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


def plot_f1_curves(table: pd.DataFrame, path: Path, rubric: Mapping[str, float],
                   calibrated: Mapping[str, float] | None) -> Path:
    """F1 vs threshold per regime, rubric (dashed) and calibrated (dotted) thresholds marked."""
    scores = M.fail_closed(table["score"].to_numpy(dtype=float), table["ok"].to_numpy(dtype=bool))
    grid = np.arange(0, 100.5, 0.5)
    fig, ax = _new_figure()
    for regime in REGIMES:
        labels = M.regime_labels(table["severity"].to_numpy(), regime)
        thresholds, f1 = f1_curve(scores, labels, grid=grid)
        (line,) = ax.plot(thresholds, 100 * f1, label=regime)
        ax.axvline(rubric[regime], color=line.get_color(), linestyle="--", linewidth=0.8)
        if calibrated is not None:
            ax.axvline(calibrated[regime], color=line.get_color(), linestyle=":", linewidth=1.2)
    ax.set_xlabel("threshold (flag when score ≥ threshold)")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("F1 vs threshold (dashed: rubric, dotted: calibrated)")
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _row(name: str, block: Mapping[str, Any]) -> str:
    thresholds = block.get("thresholds") or {}
    cells = [block.get(f"f1_{r}") for r in REGIMES] + [block.get(k) for k in ("f1_avg", "f1_worst", "f1_gap")]
    cells += [block.get("mae_tier"), block.get("spearman", None)]
    cells_text = [_fmt(c) for c in cells[:-1]] + [_fmt(cells[-1], 3)]
    ts = "/".join(_fmt(thresholds.get(r), 1) for r in REGIMES)
    return f"| {name} | " + " | ".join(cells_text) + f" | {_fmt(block.get('parse_rate'), 3)} | {ts} |"


HEADER = ("| strategy | F1 strict | F1 moderate | F1 loose | F1 avg | F1 worst | gap | tier MAE (score points) "
          "| spearman | parse rate | thresholds s/m/l |\n|---|---|---|---|---|---|---|---|---|---|---|")


def write_report(out: Path, result: Mapping[str, Any], table: pd.DataFrame, rubric: Mapping[str, float],
                 calibrated: Mapping[str, float] | None, *, plots: bool = True) -> Path:
    """report.md: the metrics table, per-source table and the two plots."""
    lines = [
        f"# FlexBench evaluation: {result['scorer']}", "",
        f"Data `{result['data']}`, subset **{result['subset']}**, split **{result['split']}**, n = {result['n']}, "
        f"scorer kind {result['kind']}, speed {_fmt(result.get('items_per_s'))} items/s.", "",
        "F1 is of the harmful class, in percent; unscored items count as flagged (fail-closed). Tier MAE is "
        "the mean distance, in score points, of a scored item from its true tier's band (0 inside).", "",
        HEADER, _row("rubric", result),
    ]
    if result.get("calibrated"):
        lines.append(_row(f"calibrated ({result['calibrated']['on']})", result["calibrated"]))
    if result.get("policy"):
        lines.append(_row(f"policy {Path(result['policy']['path']).name}", result["policy"]))
    if result.get("per_source"):
        lines += ["", "## Per source (rubric thresholds)", "", HEADER]
        lines += [_row(f"{name} (n={block['n']})", block) for name, block in result["per_source"].items()]
    if plots:
        plot_distribution(table, out / "score_distribution.png", rubric)
        plot_f1_curves(table, out / "f1_vs_threshold.png", rubric, calibrated)
        lines += ["", "## Plots", "", "![score distribution per tier](score_distribution.png)", "",
                  "![F1 vs threshold](f1_vs_threshold.png)"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


COMPARISON_HEADER = ("| scorer | kind | thresholds | F1 strict | F1 moderate | F1 loose | F1 avg | F1 worst | gap "
                     "| parse rate |\n|---|---|---|---|---|---|---|---|---|---|")


def comparison_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One run's rows for the side-by-side table: its one decision, and its calibrated thresholds if any."""
    kind = result["kind"]
    first = {"score": "rubric 21/41/61", "probability": "p ≥ 0.5, all regimes",
             "binary": "one decision, all regimes"}[kind]
    blocks = [(first, result)]
    if kind != "binary" and result.get("calibrated"):
        blocks.append((f"calibrated ({result['calibrated']['on']})", result["calibrated"]))
    keys = ("f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst", "f1_gap")
    return [{"scorer": result["scorer"], "kind": kind, "thresholds": label, "n": result["n"],
             "data": result["data"], "subset": result["subset"], "split": result["split"],
             **{k: block[k] for k in keys}, "parse_rate": block.get("parse_rate")} for label, block in blocks]


def write_comparison(out: str | Path, runs: Sequence[str | Path]) -> dict[str, Any]:
    """`comparison.md`/`.json` under `out`: finished eval runs side by side (per-regime F1, avg, worst, gap).

    Runs must be on the same data, subset and split, or the rows would not be comparable.
    """
    results = []
    for run in runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --compare takes folders written by flexguard eval")
        results.append(json.loads(path.read_text(encoding="utf-8")))
    settings = {(r["data"], r["subset"], r["split"], r["n"]) for r in results}
    if len(settings) > 1:
        raise ValueError(f"runs are on different data (data, subset, split, n): {sorted(settings)}")
    rows = [row for result in results for row in comparison_rows(result)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, subset, split, n = settings.pop()
    lines = [f"# FlexBench comparison: {data}, {subset}/{split}, n = {n}", "",
             "F1 of the harmful class per regime, in percent; unscored items count as flagged (fail-closed). "
             "Binary guards give one decision, scored against all three regimes.", "", COMPARISON_HEADER]
    for row in rows:
        cells = [_fmt(row[k]) for k in ("f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst", "f1_gap")]
        lines.append(f"| {row['scorer']} | {row['kind']} | {row['thresholds']} | " + " | ".join(cells)
                     + f" | {_fmt(row['parse_rate'], 3)} |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = {"data": data, "subset": subset, "split": split, "n": n, "rows": rows}
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return table
