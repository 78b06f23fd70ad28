"""One training row of the lite model and its targets (shared by the data, the synthetic rows and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flexguard_plugins.types import CATEGORIES


@dataclass
class Example:
    """One row: text, ordinal targets with masks, category targets, refusal target."""

    prompt: str
    response: str | None
    source: str
    severity: int | None
    unsafe: bool
    categories: tuple[str, ...] = ()
    refusal: float | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mode(self) -> str:
        return "prompt" if self.response is None else "response"

    @property
    def judged(self) -> str:
        return self.prompt if self.response is None else self.response

    def targets(self) -> dict[str, np.ndarray]:
        """at_least/at_least_mask (4), categories/categories_mask (7 / 1), refusal/refusal_mask (1)."""
        if self.severity is not None:
            at_least = np.array([self.severity >= k for k in range(1, 5)], dtype=np.float32)
            mask = np.ones(4, dtype=np.float32)
        elif self.unsafe:  # unsafe, tier unknown: at least LOW and MODERATE, higher unknown
            at_least, mask = np.array([1, 1, 0, 0], np.float32), np.array([1, 1, 0, 0], np.float32)
        else:  # no harm label (e.g. only a refusal label)
            at_least, mask = np.zeros(4, np.float32), np.zeros(4, np.float32)
        harmful = (self.severity or 0) > 0 or self.unsafe
        cats = np.array([c in self.categories for c in CATEGORIES], dtype=np.float32) if harmful else \
            np.zeros(len(CATEGORIES), np.float32)
        known = float((not harmful and (self.severity == 0)) or (harmful and bool(self.categories)))
        return {"at_least": at_least, "at_least_mask": mask, "categories": cats,
                "categories_mask": np.array([known], np.float32),
                "refusal": np.array([self.refusal or 0.0], np.float32),
                "refusal_mask": np.array([float(self.refusal is not None and self.response is not None)], np.float32)}

