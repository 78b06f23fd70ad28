"""The read-out of the lite scorer: severity latent z → 0-100 risk score, and the category codes it names.

The model gives a scalar latent `z` read through a cumulative-link (ordinal) model,
P(severity ≥ k) = sigmoid(z − cut_k) for k = 1..4. The 0-100 score is a strictly increasing map of
`z` that puts cut_k exactly on the tier edges (21 / 41 / 61 / 81): flagging at the strict, moderate
or loose rubric threshold is the same as asking whether P(severity ≥ 1, 2 or 3) ≥ 0.5. One score
serves every regime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import CATEGORIES
from ..types import TIER_EDGES as _EDGES

TIER_EDGES = np.array(_EDGES, dtype=np.float64)
"""Score at each cut-point (from `types.TIER_EDGES`), so `score ≥ 41` is exactly P(severity ≥ 2) ≥ 0.5."""
DEGENERATE_DISTINCT = 3
"""Text with at most this many distinct word pieces (one character repeated, an emoji wall) carries no JAIL evidence."""


def latent_to_score(z: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Strictly increasing z → [0, 100]; cut_k ↦ TIER_EDGES[k]. Linear between cuts, exponential tails."""
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    cuts = np.asarray(cuts, dtype=np.float64)
    gap = max(float(np.mean(np.diff(cuts))), 1e-3)
    score = np.interp(z, cuts, TIER_EDGES)
    low, high = z < cuts[0], z > cuts[-1]
    score[low] = TIER_EDGES[0] * np.exp((z[low] - cuts[0]) / gap)
    score[high] = 100.0 - (100.0 - TIER_EDGES[-1]) * np.exp(-(z[high] - cuts[-1]) / gap)
    return np.clip(score, 0.0, 100.0)


def at_least(z: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """P(severity ≥ k), k = 1..4, per row."""
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    return 1.0 / (1.0 + np.exp(-(z[:, None] - np.asarray(cuts, dtype=np.float64)[None, :])))


def name_categories(score: float, probabilities: np.ndarray, judged_ids: Sequence[int],
                    threshold: float) -> tuple[str, ...]:
    """The codes a score of `score` names: none under LOW; those whose probability reaches `threshold`, else the
    likeliest; no JAIL for degenerate text (`DEGENERATE_DISTINCT`)."""
    if score < TIER_EDGES[0]:
        return ()
    order = np.argsort(-probabilities)
    categories = tuple(CATEGORIES[j] for j in order if probabilities[j] >= threshold)
    if not categories:  # harmful but no code is confident: name the likeliest one
        categories = (CATEGORIES[int(order[0])],)
    if len(set(judged_ids)) <= DEGENERATE_DISTINCT:
        categories = tuple(c for c in categories if c != "JAIL") or (CATEGORIES[int(order[0])],)
        if categories == ("JAIL",):
            categories = ()
    return categories
