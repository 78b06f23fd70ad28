"""`FlexGuardRunnable`: a FlexGuard check as an LCEL step. Batches go to the core in one call."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, field_validator

from flexguard_plugins import Decision, FlexGuard, resolve_strictness

from ._items import load_guard, to_item

Mode = Literal["raise", "annotate"]
DECISION_EVENT = "flexguard_decision"
"""Custom callback event carrying every decision (`Decision.to_dict()`), allowed ones included."""


class FlexGuardViolation(ValueError):
    """The guard flagged the input (or could not decide and `on_error="block"`). Carries the `Decision`."""

    def __init__(self, decision: Decision, value: Any = None) -> None:
        super().__init__(decision.reason)
        self.decision = decision
        self.value = value


class FlexGuardRunnable(RunnableSerializable[Any, Any]):
    """Judge a string, a message list or a `{prompt, response}` dict with FlexGuard.

    `mode="raise"` passes the input through unchanged or raises `FlexGuardViolation` (use
    `.with_fallbacks(...)` for a refusal); `mode="annotate"` returns `{"input": ..., "decision": Decision}`
    for `RunnableBranch`. A conversation ending in an AI message is judged in response mode. Every
    decision is also sent to callbacks as the custom event "flexguard_decision" (tracing, astream_events).
    """

    strictness: Any = "moderate"
    on_error: Literal["block", "allow", "raise"] = "block"
    mode: Mode = "raise"
    model: str | None = None
    backend: str = "auto"
    reasoning: bool | None = None
    guard: FlexGuard | None = Field(default=None, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @field_validator("strictness")
    @classmethod
    def _check_strictness(cls, value: Any) -> Any:
        resolve_strictness(value)
        return value

    def _guard(self) -> FlexGuard:
        return load_guard(self.guard, self.model, self.backend, self.reasoning)

    def _outputs(self, inputs: list[Any], decisions: list[Decision]) -> list[Any]:
        """The one place that turns decisions into outputs, for single calls and batches alike."""
        pairs = zip(inputs, decisions, strict=True)
        if self.mode == "annotate":
            return [{"input": value, "decision": d} for value, d in pairs]
        return [FlexGuardViolation(d, value) if d.flagged else value for value, d in pairs]

    def _judge(self, inputs: list[Any], run_manager: list[CallbackManagerForChainRun]) -> list[Any]:
        items = [to_item(value) for value in inputs]
        decisions = self._guard().check_batch(items, self.strictness, self.on_error)
        for manager, decision in zip(run_manager, decisions, strict=True):
            manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict(), run_id=manager.run_id)
        return self._outputs(inputs, decisions)

    async def _ajudge(self, inputs: list[Any], run_manager: list[AsyncCallbackManagerForChainRun]) -> list[Any]:
        items = [to_item(value) for value in inputs]
        decisions = await self._guard().acheck_batch(items, self.strictness, self.on_error)
        for manager, decision in zip(run_manager, decisions, strict=True):
            await manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict(), run_id=manager.run_id)
        return self._outputs(inputs, decisions)

    def _one(self, value: Any, run_manager: CallbackManagerForChainRun) -> Any:
        out = self._judge([value], [run_manager])[0]
        if isinstance(out, Exception):
            raise out
        return out

    async def _aone(self, value: Any, run_manager: AsyncCallbackManagerForChainRun) -> Any:
        out = (await self._ajudge([value], [run_manager]))[0]
        if isinstance(out, Exception):
            raise out
        return out

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._one, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._aone, input, config, run_type="chain")

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        return self._batch_with_config(self._judge, inputs, config, return_exceptions=return_exceptions,
                                       run_type="chain")

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        return await self._abatch_with_config(self._ajudge, inputs, config, return_exceptions=return_exceptions,
                                              run_type="chain")
