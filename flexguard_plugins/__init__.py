"""FlexGuard plugins: one scoring core for the FlexGuard risk-score moderator, shared by every wrapper.

Wrappers import only the names in `__all__`. The core imports no wrapper and no training code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .backends import Backend, backend_names
from .chunking import MIN_RECHECK_CHARS
from .errors import BatchTimeoutError, FlexGuardError, GuardClosedError, PolicyViolation, UndecidedError
from .policy import OnError, Strictness, Thresholds, check_on_error, check_shadow, decide, resolve_strictness
from .scorer import FlexGuard, ashared_guard, shared_guard
from .text import is_blank
from .types import CATEGORIES, Decision, ModerationItem, RiskScore, Tier, tier_for_score

__version__ = "0.1.0"


def nemo_config_path() -> Path:
    """The NeMo Guardrails config folder shipped with this package (for `RailsConfig.from_path`).

    Found without importing it: the core never runs wrapper code.

    Raises:
        ModuleNotFoundError: the `flexguard_nemo` folder is not installed.
    """
    spec = importlib.util.find_spec("flexguard_nemo")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("flexguard_nemo (the NeMo Guardrails config folder) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


__all__ = [
    "CATEGORIES", "MIN_RECHECK_CHARS", "Backend", "BatchTimeoutError", "Decision", "FlexGuard", "FlexGuardError",
    "GuardClosedError", "ModerationItem", "OnError", "PolicyViolation", "RiskScore", "Strictness", "Thresholds", "Tier",
    "UndecidedError", "ashared_guard", "backend_names", "check_on_error", "check_shadow", "decide", "is_blank",
    "nemo_config_path", "resolve_strictness", "shared_guard", "tier_for_score",
]
