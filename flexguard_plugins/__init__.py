"""FlexGuard plugins: one scoring core for the FlexGuard risk-score moderator, shared by every wrapper."""

from __future__ import annotations

from pathlib import Path

from .errors import BatchTimeoutError, FlexGuardError, GuardClosedError, PolicyViolation, UndecidedError
from .policy import Thresholds, decide, resolve_strictness
from .scorer import FlexGuard, ashared_guard, shared_guard
from .types import CATEGORIES, Decision, ModerationItem, RiskScore, Tier, tier_for_score

__version__ = "0.1.0"


def nemo_config_path() -> Path:
    """The NeMo Guardrails config folder shipped with this package (for `RailsConfig.from_path`)."""
    import flexguard_nemo

    return Path(flexguard_nemo.__file__).parent


__all__ = [
    "CATEGORIES", "BatchTimeoutError", "Decision", "FlexGuard", "FlexGuardError", "GuardClosedError", "ModerationItem",
    "PolicyViolation", "RiskScore", "Thresholds", "Tier", "UndecidedError", "ashared_guard", "decide",
    "nemo_config_path", "resolve_strictness", "shared_guard", "tier_for_score",
]
