"""`flexguard eval`: the FlexBench protocol for any scorer.

Scores one subset/split through the core (`FlexGuard.load(...).score_batch`), another guard
(`--baseline wildguard --model PATH`, see `guards`) or a plugged-in callable (`--scorer`), saves every
score as it arrives (`scores.jsonl`, so an interrupted run resumes), and reports per-regime F1 at the
rubric thresholds (21/41/61) and at thresholds calibrated on the valid split, plus tier MAE (in score
points), spearman, parse rate and speed, overall and per source (`metrics.json`, `report.md` with two
plots, written by `report`). A binary
baseline is scored at its one decision for every regime, a probability baseline at p ≥ 0.5 and, like
FlexGuard, at calibrated thresholds. `--compare RUN …` puts finished runs side by side like the
paper's main table (`comparison.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexguard_plugins.policy import REGIMES, load_policy, resolve_strictness
from flexguard_plugins.scorer import FlexGuard

from . import metrics as M
from .baselines import BINARY_THRESHOLD, FlexGuardScorer, Scorer, load_scorer
from .flexbench import COLUMNS_HELP, SPLITS, SUBSETS, has_split, load_flexbench
from .guards import GUARDS
from .report import write_comparison, write_report
from .scores import CALIBRATION_SCORES_FILE, SCORES_FILE, score_frame

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"


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
        from .generators import load_guard_scorer

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


OUTPUTS_HELP = """\
written under --out (a rerun resumes; run.json refuses a run with other settings):
  scores.jsonl   one JSON object per item: id, score (0-100; null when unscored), ok, categories, severity,
                 scorer, and error when unscored (calibration_scores.jsonl: the same for the valid split)
  metrics.json   n; f1_strict, f1_moderate, f1_loose, f1_avg, f1_worst, f1_gap (F1 of the harmful class, in
                 percent, unscored items counted as flagged); mae_tier, the tier MAE in score points (mean
                 distance of a score from its true tier's band, 0 inside); spearman; parse_rate;
                 false_positive_rate, false_negative_rate (misses) and thresholds per regime; items_per_s;
                 the same under "calibrated", "policy" and per source ("per_source")
  report.md      those as tables (column "tier MAE (score points)") and two plots (PNG)
  comparison.md  with --compare: finished runs side by side (and comparison.json)
"""


def new_parser(prog: str, description: str, outputs: str) -> argparse.ArgumentParser:
    """The parser of eval or calibrate: the data format and what it writes in --help; no abbreviated flags,
    so a misspelt prefix (`--subs`) is an error instead of silently another option."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=f"{COLUMNS_HELP}\n{outputs}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)


def make_parser() -> argparse.ArgumentParser:
    parser = new_parser("flexguard eval", __doc__.splitlines()[0], OUTPUTS_HELP)
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
