"""`flexguard eval`: the FlexBench protocol for any scorer.

Scores one subset/split through the core (`FlexGuard.load(...).score_batch`), another guard
(`--baseline wildguard --model PATH`, see `guards`) or a plugged-in callable (`--scorer`), saves every
score as it arrives (`scores.jsonl`, so an interrupted run resumes), and reports per-regime F1 at the
rubric thresholds (21/41/61) and at thresholds calibrated on the valid split, plus tier MAE, spearman,
parse rate and speed, overall and per source (`metrics.json`, `report.md` with two plots). A binary
baseline is scored at its one decision for every regime, a probability baseline at p ≥ 0.5 and, like
FlexGuard, at calibrated thresholds. `--compare RUN …` puts finished runs side by side like the
paper's main table (`comparison.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from flexguard_plugins.evaluation.thresholds import f1_curve
from flexguard_plugins.policy import REGIMES, load_policy, resolve_strictness
from flexguard_plugins.scorer import FlexGuard
from flexguard_plugins.types import RiskScore, Tier

from . import metrics as M
from .baselines import BINARY_THRESHOLD, FlexGuardScorer, Scorer, load_scorer, run_scorer
from .flexbench import SPLITS, SUBSETS, has_split, load_flexbench, to_items
from .guards import GUARDS

logger = logging.getLogger(__name__)

SCORES_FILE = "scores.jsonl"
CALIBRATION_SCORES_FILE = "calibration_scores.jsonl"
RUN_FILE = "run.json"


# --- scoring with resume ---------------------------------------------------------------------------

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


# --- thresholds and metrics ------------------------------------------------------------------------

def rubric_thresholds(kind: str) -> dict[str, float]:
    """21/41/61 for a risk score; a binary or probability baseline gets its own one decision (yes, or
    p ≥ 0.5) for every regime, as the paper scores other guards."""
    return dict(REGIMES) if kind == "score" else {r: BINARY_THRESHOLD for r in REGIMES}


def policy_thresholds(policy_path: str | Path, categories: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Per-item thresholds of a calibrated policy file (its per-category overrides use the scorer's categories)."""
    policy = load_policy(policy_path)
    out = {}
    for regime in REGIMES:
        if regime in policy["regimes"]:
            thresholds = resolve_strictness(f"{policy_path}#{regime}")
        else:
            logger.warning("%s has no %s regime; using the rubric threshold", policy_path, regime)
            thresholds = resolve_strictness(regime)
        out[regime] = np.array([thresholds.for_categories(tuple(c)) for c in categories], dtype=float)
    return out


def metric_block(table: pd.DataFrame, thresholds: Mapping[str, Any], binary: bool) -> dict[str, Any]:
    return M.compute_metrics(table["score"].to_numpy(), table["severity"].to_numpy(), thresholds,
                             table["ok"].to_numpy(dtype=bool), binary=binary)


def calibrate_on_table(table: pd.DataFrame, kind: str) -> dict[str, float]:
    """F1-max thresholds per regime; a binary moderator has nothing to calibrate."""
    if kind == "binary":
        return rubric_thresholds(kind)
    return M.calibrate_regimes(table["score"].to_numpy(), table["severity"].to_numpy(),
                               table["ok"].to_numpy(dtype=bool))


# --- the runner ------------------------------------------------------------------------------------

def build_scorer(model: str | None = None, backend: str = "auto", *, scorer: str | None = None,
                 scorer_kind: str | None = None, options: Mapping[str, Any] | None = None,
                 baseline: str | None = None) -> Scorer:
    """`--baseline NAME` (another guard on `model`), `--scorer module:callable`, or FlexGuard through the core."""
    if baseline is not None and scorer is not None:
        raise ValueError("give --baseline or --scorer, not both")
    if baseline is not None:
        from .guards import load_guard_scorer

        return load_guard_scorer(baseline, model, backend, **dict(options or {}))
    if scorer is not None:
        return load_scorer(scorer, scorer_kind)
    guard = FlexGuard.load(model, backend, **dict(options or {}))
    return FlexGuardScorer(guard, name=f"{guard.backend.name}:{model}" if model else guard.backend.name)


def _check_run(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume into a folder scored by another scorer or on other data."""
    path = out / RUN_FILE
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (previous.get(k), v) for k, v in identity.items() if previous.get(k) != v}
        if changed:
            raise ValueError(f"{out} holds a run with different settings {changed}; use another --out "
                             "or delete its scores files")
    path.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def _limit(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """A seeded random sample (FlexBench files may be ordered by tier, so `head` would be biased)."""
    if limit is None or limit >= len(frame):
        return frame
    if limit < 1:
        raise ValueError("limit must be at least 1")
    sample = frame.sample(n=limit, random_state=0).sort_index()
    sample.attrs = frame.attrs
    return sample


def _calibration_frame(data: str, subset: str, split: str, calibrate_on: str | None,
                       **overrides: str | None) -> tuple[pd.DataFrame | None, str | None]:
    """Where calibrated thresholds come from: --calibrate-on, else the valid split, else in-sample on valid."""
    if calibrate_on:
        return load_flexbench(calibrate_on, subset, "valid", **overrides), str(calibrate_on)
    if split != "valid" and has_split(data, "valid"):
        return load_flexbench(data, subset, "valid", **overrides), f"{data} (valid split)"
    if split == "valid":
        return None, "in-sample"
    return None, None


def evaluate(data: str, out: str | Path, *, subset: str | None = None, split: str = "test", model: str | None = None,
             backend: str = "auto", scorer: Scorer | FlexGuard | str | None = None, scorer_kind: str | None = None,
             calibrate_on: str | None = None, strictness_policy: str | None = None,
             prompt_column: str | None = None, response_column: str | None = None, batch_size: int = 64,
             limit: int | None = None, options: Mapping[str, Any] | None = None, plots: bool = True,
             baseline: str | None = None) -> dict[str, Any]:
    """Run the FlexBench protocol and write metrics.json, scores.jsonl and report.md under `out`.

    `scorer` may be a `Scorer`, a `FlexGuard`, a `module:callable` spec, or None for FlexGuard with
    `model`/`backend`/`options` (None model: the embedded lite scorer). Returns the metrics dict.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = _limit(load_flexbench(data, subset, split, prompt_column=prompt_column,
                                  response_column=response_column), limit)
    subset = frame.attrs["subset"]
    if isinstance(scorer, FlexGuard):
        scorer = FlexGuardScorer(scorer)
    elif isinstance(scorer, str) or scorer is None:
        scorer = build_scorer(model, backend, scorer=scorer, scorer_kind=scorer_kind, options=options,
                              baseline=baseline)
    kind = scorer.kind
    identity = {"data": str(data), "subset": subset, "split": split, "scorer": scorer.name, "kind": kind,
                "limit": limit, "calibrate_on": None if calibrate_on is None else str(calibrate_on)}
    _check_run(out, identity)

    table, timing = score_frame(frame, scorer, out / SCORES_FILE, batch_size=batch_size, desc=f"{subset}/{split}")
    binary = kind == "binary"
    rubric = rubric_thresholds(kind)
    result: dict[str, Any] = metric_block(table, rubric, binary)
    result.update(strategy="rubric", scorer=scorer.name, kind=kind, data=str(data), subset=subset, split=split,
                  columns=frame.attrs.get("columns"), items_per_s=timing["items_per_s"], timing=timing,
                  score_by_tier=M.tier_score_stats(table["score"].to_numpy(), table["severity"].to_numpy(),
                                                   table["ok"].to_numpy(dtype=bool)))

    calibration, calibrated_on = _calibration_frame(
        str(data), subset, split, calibrate_on, prompt_column=prompt_column, response_column=response_column)
    calibrated_thresholds = None
    if calibration is not None:
        calibration = _limit(calibration, limit)
        calibration_table, calibration_timing = score_frame(
            calibration, scorer, out / CALIBRATION_SCORES_FILE, batch_size=batch_size, desc=f"{subset}/calibration")
        calibrated_thresholds = calibrate_on_table(calibration_table, kind)
        result["timing"]["calibration"] = calibration_timing
    elif calibrated_on == "in-sample":
        calibrated_thresholds = calibrate_on_table(table, kind)
    if calibrated_thresholds is not None:
        result["calibrated"] = {**metric_block(table, calibrated_thresholds, binary), "on": calibrated_on}
    else:
        result["calibrated"] = None
        result["calibrated_note"] = "no valid split for single-file data: pass --calibrate-on FILE"

    if strictness_policy:
        per_item = policy_thresholds(strictness_policy, table["categories"].tolist())
        result["policy"] = {**metric_block(table, per_item, binary), "path": str(strictness_policy)}

    if "source" in frame:
        result["per_source"] = {}
        for source in sorted(frame["source"].unique()):
            mask = (frame["source"] == source).to_numpy()
            part = table[mask].reset_index(drop=True)
            block = metric_block(part, rubric, binary)
            if calibrated_thresholds is not None:
                block["calibrated"] = metric_block(part, calibrated_thresholds, binary)
            result["per_source"][str(source)] = block

    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_report(out, result, table, rubric, calibrated_thresholds, plots=plots)
    return result


# --- report ----------------------------------------------------------------------------------------

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


HEADER = ("| strategy | F1 strict | F1 moderate | F1 loose | F1 avg | F1 worst | gap | MAE tier | spearman "
          "| parse rate | thresholds s/m/l |\n|---|---|---|---|---|---|---|---|---|---|---|")


def write_report(out: Path, result: Mapping[str, Any], table: pd.DataFrame, rubric: Mapping[str, float],
                 calibrated: Mapping[str, float] | None, *, plots: bool = True) -> Path:
    """report.md: the metrics table, per-source table and the two plots."""
    lines = [
        f"# FlexBench evaluation: {result['scorer']}", "",
        f"Data `{result['data']}`, subset **{result['subset']}**, split **{result['split']}**, n = {result['n']}, "
        f"scorer kind {result['kind']}, speed {_fmt(result.get('items_per_s'))} items/s.", "",
        "F1 is of the harmful class, in percent; unscored items count as flagged (fail-closed).", "",
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


# --- comparison ------------------------------------------------------------------------------------

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


# --- command line ----------------------------------------------------------------------------------

def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` backend options; VALUE is read as JSON when it parses (numbers, true, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def add_data_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    """Arguments shared by eval and calibrate: where the data is and how to read and score it."""
    parser.add_argument("--data", help="Tommy-DING/FlexBench, a folder of Guard_*_{valid,test}.csv, or a CSV/JSONL")
    parser.add_argument("--subset", choices=SUBSETS, default=None,
                        help="prompt or response (default: prompt; for a single file, response if it has one)")
    parser.add_argument("--split", choices=SPLITS, default=default_split)
    parser.add_argument("--prompt-column", help="override the detected prompt text column")
    parser.add_argument("--response-column", help="override the detected response text column")
    parser.add_argument("--model", help="FlexGuard model (hub id or folder); default: the embedded lite scorer")
    parser.add_argument("--backend", default="auto", help="auto, transformers, vllm, openai or lite")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, repeatable (e.g. reasoning=false, base_url=http://h:8000/v1)")
    parser.add_argument("--baseline", choices=tuple(GUARDS),
                        help="another guard instead of FlexGuard, run on --model with --backend (see guards.py)")
    parser.add_argument("--scorer", help="a plugged-in scorer instead of FlexGuard: package.module:callable")
    parser.add_argument("--scorer-kind", choices=("score", "probability", "binary"),
                        help="how to read the baseline's outputs (default: its `kind`, else probability)")
    parser.add_argument("--batch-size", type=int, default=64, help="items per scoring call (and per resume step)")
    parser.add_argument("--limit", type=int, help="score a seeded random sample of this many items")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexguard eval", description=__doc__.splitlines()[0])
    add_data_arguments(parser, "test")
    parser.add_argument("--out", required=True, help="output folder (resumes from its scores.jsonl)")
    parser.add_argument("--calibrate-on", help="labelled file/folder to calibrate thresholds on (default: valid split)")
    parser.add_argument("--strictness-policy", help="also report a policy file's thresholds (from flexguard calibrate)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--compare", nargs="+", metavar="RUN",
                        help="instead of scoring: put these finished eval folders side by side in --out/comparison.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.compare:
        try:
            table = write_comparison(args.out, args.compare)
        except (ValueError, FileNotFoundError) as error:
            print(f"flexguard eval: error: {error}", file=sys.stderr)
            return 2
        print((Path(args.out) / "comparison.md").read_text(encoding="utf-8"), end="")
        return 0 if table["rows"] else 2
    if not args.data:
        print("flexguard eval: error: --data is required", file=sys.stderr)
        return 2
    try:
        result = evaluate(
            args.data, args.out, subset=args.subset, split=args.split, model=args.model, backend=args.backend,
            scorer=args.scorer, scorer_kind=args.scorer_kind, calibrate_on=args.calibrate_on,
            strictness_policy=args.strictness_policy, prompt_column=args.prompt_column,
            response_column=args.response_column, batch_size=args.batch_size, limit=args.limit,
            options=parse_options(args.option), plots=not args.no_plots, baseline=args.baseline,
        )
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"flexguard eval: error: {error}", file=sys.stderr)
        return 2
    summary = {k: result[k] for k in ("n", "f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst", "f1_gap")}
    print(json.dumps({"rubric": summary, "calibrated": {k: result["calibrated"][k] for k in summary}
                      if result.get("calibrated") else None, "out": str(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
