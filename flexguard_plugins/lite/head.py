"""The small trained head of the lite scorer, in numpy: embeddings → severity latent → 0-100 score.

The head is a one-hidden-layer MLP with two outputs: a scalar severity latent `z` read through a
cumulative-link (ordinal) model, P(severity ≥ k) = sigmoid(z − cut_k) for k = 1..4, and seven
category logits. The 0-100 score is a strictly increasing map of `z` that puts cut_k exactly on the
rubric thresholds (21 / 41 / 61 / 81): flagging at the strict, moderate or loose rubric threshold is
the same as asking whether P(severity ≥ 1, 2 or 3) ≥ 0.5. One score serves every regime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..types import CATEGORIES

FEATURE_VERSION = 1
EMBED_DIM = 384
TIER_EDGES = np.array([21.0, 41.0, 61.0, 81.0])
"""Score at each cut-point: the rubric thresholds, so `score ≥ 41` is exactly P(severity ≥ 2) ≥ 0.5."""


def features(judged: np.ndarray, context: np.ndarray | None, is_response: np.ndarray) -> np.ndarray:
    """[judged, context, judged⊙context, mode flag]. Prompt mode has no context (zeros)."""
    judged = np.asarray(judged, dtype=np.float32)
    context = np.zeros_like(judged) if context is None else np.asarray(context, dtype=np.float32)
    flag = np.asarray(is_response, dtype=np.float32).reshape(-1, 1)
    context = context * flag  # a prompt-mode row never carries context
    return np.concatenate([judged, context, judged * context, flag], axis=1)


def feature_dim() -> int:
    return 3 * EMBED_DIM + 1


def latent_to_score(z: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Strictly increasing z → [0, 100]; cut_k ↦ TIER_EDGES[k]. Linear between cuts, exponential tails."""
    z = np.asarray(z, dtype=np.float64)
    cuts = np.asarray(cuts, dtype=np.float64)
    gap = max(float(np.mean(np.diff(cuts))), 1e-3)
    score = np.interp(z, cuts, TIER_EDGES)
    low, high = z < cuts[0], z > cuts[-1]
    score[low] = TIER_EDGES[0] * np.exp((z[low] - cuts[0]) / gap)
    score[high] = 100.0 - (100.0 - TIER_EDGES[-1]) * np.exp(-(z[high] - cuts[-1]) / gap)
    return np.clip(score, 0.0, 100.0)


@dataclass
class Head:
    """Weights of the MLP; `predict` gives scores, P(severity ≥ k) and category probabilities."""

    w1: np.ndarray
    b1: np.ndarray
    w_latent: np.ndarray
    b_latent: np.ndarray
    w_cat: np.ndarray
    b_cat: np.ndarray
    cuts: np.ndarray
    meta: dict[str, Any]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.meta.get("categories", CATEGORIES))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.w1.shape[0]:
            raise ValueError(f"head expects features of shape (n, {self.w1.shape[0]}), got {x.shape}")
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        z = (hidden @ self.w_latent + self.b_latent).reshape(-1)
        cat_logits = hidden @ self.w_cat + self.b_cat
        return {
            "latent": z,
            "score": latent_to_score(z, self.cuts),
            "p_at_least": 1.0 / (1.0 + np.exp(-(z[:, None] - self.cuts[None, :]))),
            "categories": 1.0 / (1.0 + np.exp(-cat_logits)),
        }

    def save(self, path: str | Path) -> Path:
        """Weight matrices in float16 (the file stays well under 1 MB), the rest in float32."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, w1=self.w1.astype(np.float16), b1=self.b1.astype(np.float32),
            w_latent=self.w_latent.astype(np.float16), b_latent=self.b_latent.astype(np.float32),
            w_cat=self.w_cat.astype(np.float16), b_cat=self.b_cat.astype(np.float32),
            cuts=self.cuts.astype(np.float32), meta=np.array(json.dumps(self.meta)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Head:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"lite head weights not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            arrays: Mapping[str, np.ndarray] = {k: data[k] for k in data.files}
        missing = {"w1", "b1", "w_latent", "b_latent", "w_cat", "b_cat", "cuts", "meta"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a lite head file (missing {sorted(missing)})")
        meta = json.loads(str(arrays["meta"]))
        if meta.get("feature_version") != FEATURE_VERSION:
            raise ValueError(f"{path}: feature version {meta.get('feature_version')} != {FEATURE_VERSION}")
        cuts = arrays["cuts"].astype(np.float32)
        if cuts.shape != (4,) or np.any(np.diff(cuts) <= 0):
            raise ValueError(f"{path}: cut-points must be 4 increasing numbers, got {cuts}")
        return cls(
            w1=arrays["w1"].astype(np.float32), b1=arrays["b1"].astype(np.float32),
            w_latent=arrays["w_latent"].astype(np.float32), b_latent=arrays["b_latent"].astype(np.float32),
            w_cat=arrays["w_cat"].astype(np.float32), b_cat=arrays["b_cat"].astype(np.float32),
            cuts=cuts, meta=meta,
        )
