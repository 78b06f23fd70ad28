"""One exception base for every guard failure, so one `except FlexGuardError` catches them all.

`FlexGuardError` subclasses `RuntimeError`, so code written against the earlier `RuntimeError`s still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Decision, RiskScore


class FlexGuardError(RuntimeError):
    """Base of every guard failure.

    Args:
        message: what went wrong, in one line.
        risk: the `RiskScore` behind the failure, where there is one.

    Example:
        >>> try:
        ...     raise UndecidedError("guard could not decide: empty input")
        ... except FlexGuardError as error:
        ...     print(error)
        guard could not decide: empty input
    """

    def __init__(self, message: str, risk: RiskScore | None = None) -> None:
        super().__init__(message)
        self.risk = risk


class UndecidedError(FlexGuardError):
    """The guard could not decide (`RiskScore.ok` is False) and the failure policy is `on_error="raise"`."""


class GuardClosedError(FlexGuardError):
    """A call on a closed guard, or a call still pending when its guard closed."""


class BatchTimeoutError(FlexGuardError, TimeoutError):
    """A backend batch did not answer within `batch_timeout_s`; its items are undecided."""


class PolicyViolation(FlexGuardError):
    """A wrapper refused content: `decision` is the verdict that flagged it (or an undecided one under block).

    Args:
        message: what was refused and why, in one line.
        decision: the `Decision` that refused it.
        **details: wrapper-specific context kept on the exception (e.g. `input`).
    """

    def __init__(self, message: str, decision: Decision, **details: Any) -> None:
        super().__init__(message, decision.risk)
        self.decision = decision
        self.details = details
