"""What both LangChain wrappers say about a decision: the custom event that carries every one, allowed ones
included, and the exception a flag raises."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event

from flexguard_plugins import Decision, PolicyViolation

DECISION_EVENT = "flexguard_decision"
"""Custom callback event carrying every decision (`Decision.to_dict()`; the middleware adds `stage`)."""


class FlexGuardViolation(PolicyViolation, ValueError):
    """The guard flagged the input (or could not decide and `on_error="block"`): `.decision` is the verdict,
    `.value` what was refused. The core's `PolicyViolation`, so `except FlexGuardError` catches it; still a
    `ValueError`, as it always was.

    Args:
        decision: the `Decision` that refused the value.
        value: the refused input, model reply or tool result.
    """

    def __init__(self, decision: Decision, value: Any = None) -> None:
        super().__init__(decision.reason, decision, value=value)
        self.value = value


def dispatch(decision: Decision, stage: str) -> None:
    """Send a decision to the callbacks of the run it was made in (tracing, `astream_events`)."""
    try:
        dispatch_custom_event(DECISION_EVENT, {**decision.to_dict(), "stage": stage})
    except RuntimeError:  # no parent run (a hook called outside an agent run): nobody to tell
        pass


async def adispatch(decision: Decision, stage: str) -> None:
    try:
        await adispatch_custom_event(DECISION_EVENT, {**decision.to_dict(), "stage": stage})
    except RuntimeError:
        pass
