"""`flexguard calibrate`: fit per-regime (and optionally per-category) thresholds on labelled data.

Writes a policy file (`flexguard_plugins.policy.make_policy`) that every wrapper accepts as
`strictness` ("policy.json" uses its default regime, "policy.json#strict" picks one). Thresholds are
F1-max per regime, or, with `--max-false-positive-rate R`, the lowest threshold whose false-positive
rate on the regime's non-harmful items is at most R. Scores come from a model run here, or from an
existing `scores.jsonl` written by `flexguard eval` (no re-scoring).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexguard_plugins.evaluation.thresholds import calibrate_threshold
from flexguard_plugins.policy import REGIMES, make_policy, save_policy
from flexguard_plugins.types import CATEGORIES

from . import metrics as M
from .baselines import Scorer
from .evaluate import add_data_arguments, build_scorer, new_parser, parse_options
from .flexbench import load_flexbench
from .scores import load_scores_table, score_frame


def _threshold(scores: np.ndarray, labels: np.ndarray, rate: float | None) -> tuple[float, float]:
    return calibrate_threshold(scores, labels, max_false_positive_rate=rate)


def calibrate_policy(table: pd.DataFrame, *, per_category: bool = False, min_category_items: int = 30,
                     max_false_positive_rate: float | None = None, regimes: Sequence[str] | None = None,
                     default_regime: str = "moderate", meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A policy from a scores table (id, score, ok, categories, severity).

    Unscored items count as flagged (fail-closed, as deployed with on_error=block). Per-category
    thresholds are fitted on the items whose *predicted* categories include that code (that is what
    the policy sees at run time), only where there are `min_category_items` of them with both classes.
    """
    if max_false_positive_rate is not None and not 0 <= max_false_positive_rate <= 1:
        raise ValueError("--max-false-positive-rate must be between 0 and 1")
    targets = set(REGIMES if regimes is None else regimes)
    unknown = targets - set(REGIMES)
    if unknown:
        raise ValueError(f"unknown regime(s) {sorted(unknown)}; choose from {', '.join(REGIMES)}")
    scores = M.fail_closed(table["score"].to_numpy(dtype=float), table["ok"].to_numpy(dtype=bool))
    severity = table["severity"].to_numpy(dtype=int)
    categories = [set(c or ()) for c in table.get("categories", pd.Series([[]] * len(table)))]
    thresholds: dict[str, float] = {}
    by_category: dict[str, dict[str, float]] = {}
    fitted: dict[str, Any] = {}
    for regime in REGIMES:
        labels = M.regime_labels(severity, regime)
        if not labels.any():
            raise ValueError(f"no harmful items for the {regime} regime (severity ≥ "
                             f"{M.REGIME_MIN_SEVERITY[regime]}): cannot calibrate")
        rate = max_false_positive_rate if regime in targets else None
        thresholds[regime], f1 = _threshold(scores, labels, rate)
        fitted[regime] = {"f1": round(100 * f1, 3), "method": "fpr" if rate is not None else "f1-max",
                          "false_positive_rate": M.json_number(
                              M.false_positive_rate(scores, severity, thresholds[regime], regime))}
        if not per_category:
            continue
        chosen = {}
        for code in CATEGORIES:
            mask = np.array([code in c for c in categories], dtype=bool)
            if mask.sum() < min_category_items or labels[mask].all() or not labels[mask].any():
                continue
            chosen[code], _ = _threshold(scores[mask], labels[mask], rate)
        if chosen:
            by_category[regime] = chosen
    info = {"n": int(len(table)), "parse_rate": M.parse_rate(table["ok"].to_numpy(dtype=bool)), "fitted": fitted,
            **({"max_false_positive_rate": max_false_positive_rate} if max_false_positive_rate is not None else {}),
            **(meta or {})}
    return make_policy(thresholds, categories=by_category or None, default_regime=default_regime, meta=info)


def calibrate(out: str | Path, *, data: str | None = None, scores: str | Path | None = None,
              subset: str | None = None, split: str = "valid", model: str | None = None, backend: str = "auto",
              scorer: Scorer | str | None = None, scorer_kind: str | None = None, options: dict[str, Any] | None = None,
              prompt_column: str | None = None, response_column: str | None = None, batch_size: int = 64,
              save_scores: str | Path | None = None, limit: int | None = None, baseline: str | None = None,
              **policy_options: Any) -> dict[str, Any]:
    """Score `data` (or read `scores`), fit thresholds, write the policy to `out`; returns the policy."""
    if (data is None) == (scores is None):
        raise ValueError("give exactly one of --data (score it now) or --scores (an existing scores.jsonl)")
    if scores is not None:
        table = load_scores_table(scores)
        meta: dict[str, Any] = {"scores": str(scores)}
    else:
        frame = load_flexbench(str(data), subset, split, prompt_column=prompt_column, response_column=response_column)
        if limit is not None and limit < len(frame):
            frame = frame.sample(n=limit, random_state=0).sort_index()
        runner = scorer if not isinstance(scorer, (str, type(None))) else build_scorer(
            model, backend, scorer=scorer, scorer_kind=scorer_kind, options=options, baseline=baseline)
        if runner.kind == "binary":
            raise ValueError("a binary moderator has one fixed decision: there is no threshold to calibrate")
        table, timing = score_frame(frame, runner, save_scores, batch_size=batch_size, desc="calibration")
        meta = {"data": str(data), "subset": frame.attrs.get("subset", subset), "split": split,
                "scorer": runner.name, "items_per_s": timing["items_per_s"]}
    policy = calibrate_policy(table, meta=meta, **policy_options)
    save_policy(policy, out)
    return policy


OUTPUTS_HELP = """\
--scores reads a scores.jsonl written by flexguard eval (id, score, ok, categories, severity) instead of
scoring. --out gets a policy file: thresholds per regime (and per category with --per-category), the
default regime, and how each threshold was fitted (F1, false-positive rate); any wrapper takes it as
strictness "policy.json" or "policy.json#strict".
"""


def make_parser() -> argparse.ArgumentParser:
    parser = new_parser("flexguard calibrate", __doc__.splitlines()[0], OUTPUTS_HELP)
    add_data_arguments(parser, "valid")
    parser.add_argument("--scores", help="calibrate from an existing scores.jsonl (from flexguard eval) instead")
    parser.add_argument("--save-scores", help="append the scores to this JSONL as they arrive (resumable)")
    parser.add_argument("--out", required=True, help="policy file to write (e.g. policy.json)")
    parser.add_argument("--per-category", action="store_true", help="also fit per-category thresholds")
    parser.add_argument("--min-category-items", type=int, default=30,
                        help="fit a category's threshold only with at least this many items naming it")
    parser.add_argument("--max-false-positive-rate", type=float,
                        help="instead of F1-max: the lowest threshold with at most this false-positive rate")
    parser.add_argument("--regime", action="append", choices=tuple(REGIMES),
                        help="regime(s) the false-positive target applies to (default: all); repeatable")
    parser.add_argument("--default-regime", choices=tuple(REGIMES), default="moderate",
                        help="regime used when the policy is given without #regime")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.regime and args.max_false_positive_rate is None:
        print("flexguard calibrate: error: --regime needs --max-false-positive-rate", file=sys.stderr)
        return 2
    try:
        policy = calibrate(
            args.out, data=args.data, scores=args.scores, subset=args.subset, split=args.split, model=args.model,
            backend=args.backend, scorer=args.scorer, scorer_kind=args.scorer_kind, options=parse_options(args.option),
            prompt_column=args.prompt_column, response_column=args.response_column, batch_size=args.batch_size,
            save_scores=args.save_scores, limit=args.limit, baseline=args.baseline, per_category=args.per_category,
            min_category_items=args.min_category_items, max_false_positive_rate=args.max_false_positive_rate,
            regimes=args.regime, default_regime=args.default_regime,
        )
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"flexguard calibrate: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "regimes": policy["regimes"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
