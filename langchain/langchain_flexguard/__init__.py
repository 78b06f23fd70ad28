"""FlexGuard for LangChain: `FlexGuardRunnable` (LCEL, needs langchain-core) and `FlexGuardMiddleware`
(agents, needs the optional `langchain` package; imported on first use)."""

from __future__ import annotations

from typing import Any

from ._decisions import DECISION_EVENT, FlexGuardViolation
from ._items import with_prompt
from .runnable import FlexGuardRunnable

__all__ = ["DECISION_EVENT", "FlexGuardMiddleware", "FlexGuardRunnable", "FlexGuardViolation", "with_prompt"]


def __getattr__(name: str) -> Any:
    if name == "FlexGuardMiddleware":
        from .middleware import FlexGuardMiddleware

        return FlexGuardMiddleware
    raise AttributeError(f"module 'langchain_flexguard' has no attribute {name!r}")
