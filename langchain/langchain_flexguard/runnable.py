"""`FlexGuardRunnable`: a FlexGuard check as an LCEL step. Batches go to the core in one call, each input
gets its own result; streamed output is released window by window, the reply so far judged before each goes out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from flexguard_plugins import (
    MIN_RECHECK_CHARS,
    Decision,
    FlexGuard,
    UndecidedError,
    check_on_error,
    check_shadow,
    resolve_strictness,
    shared_guard,
)

from ._decisions import DECISION_EVENT, FlexGuardViolation
from ._items import to_items
from ._stream import WindowedRelease, areleased, released

Mode = Literal["raise", "annotate"]


class FlexGuardRunnable(RunnableSerializable[Any, Any]):
    """Judge a string, a message list or a `{prompt, response}` dict with FlexGuard.

    A conversation ending in an AI message is judged in response mode. Every decision, allowed ones included,
    goes to callbacks as the custom event "flexguard_decision" (tracing, `astream_events`). Streamed through
    (`llm | guard`), text goes out window by window, each after the reply so far passed (with its question when
    the stream carries one, as `with_prompt` does), and the tail only after the whole text passed; a flagged window
    holds the rest back for that whole-text check.

    Args:
        strictness: strict | moderate | loose | 0-100 | a per-category mapping | a policy file.
        on_error: block | allow | raise, for a text the guard cannot judge (case and white space ignored).
        shadow: judge and report every decision, never refuse (`Decision.would_flag` holds the verdict).
        mode: "raise" passes the input through or raises `FlexGuardViolation`; "annotate" returns
            `{"input": ..., "decision": Decision}` for `RunnableBranch`.
        model, backend, reasoning: which scorer to load (default: the embedded one); or `guard=` a `FlexGuard`.
        stream_chunk_size: characters of new text before the reply so far is judged again (at least
            `MIN_RECHECK_CHARS`, 200).

    Raises:
        ValueError: an unknown option name, a bad strictness, on_error or shadow (shadow with on_error="raise").

    Example:
        >>> (FlexGuardRunnable(strictness="strict") | llm).with_fallbacks([refusal])  # doctest: +SKIP
    """

    strictness: Any = "moderate"
    on_error: str = "block"
    shadow: bool = Field(default=False, strict=True)
    mode: Mode = "raise"
    model: str | None = None
    backend: str = "auto"
    reasoning: bool | None = None
    stream_chunk_size: int = Field(default=MIN_RECHECK_CHARS, ge=MIN_RECHECK_CHARS)
    guard: FlexGuard | None = Field(default=None, exclude=True)
    _loaded: FlexGuard | None = PrivateAttr(default=None)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        unknown = sorted(set(data) - set(cls.model_fields)) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(cls.model_fields)}")
        return data

    @field_validator("on_error")
    @classmethod
    def _check_on_error(cls, value: Any) -> str:
        return check_on_error(value)

    @model_validator(mode="after")
    def _check_policy(self) -> FlexGuardRunnable:
        resolve_strictness(self.strictness)
        check_shadow(self.shadow, self.on_error)
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_flexguard"]

    def to_json(self) -> Any:
        """Settings serialise (and `langchain_core.load` rebuilds them); a live `guard=` object cannot, so a
        runnable built with one serialises as not-implemented rather than reloading onto another scorer."""
        return self.to_json_not_implemented() if self.guard is not None else super().to_json()

    def _guard(self) -> FlexGuard:
        """The given guard, or one handle on the process-wide guard for these options, taken on first use."""
        if self.guard is not None:
            return self.guard
        if self._loaded is None or self._loaded.closed:
            self._loaded = shared_guard(None, self.model, self.backend, self.reasoning)
        return self._loaded

    # --- one place turns inputs into items and decisions into outputs, for calls, batches and streams --------

    def _output(self, value: Any, decision: Decision) -> Any:
        if decision.failed and self.on_error == "raise":
            return UndecidedError(f"guard could not decide: {decision.risk.error}", decision.risk)
        if self.mode == "annotate":
            return {"input": value, "decision": decision}
        return FlexGuardViolation(decision, value) if decision.flagged else value

    def _policy(self) -> tuple[Any, str, bool]:
        """`raise` is applied per input here, so one undecided input never fails the others."""
        return self.strictness, "block" if self.on_error == "raise" else self.on_error, self.shadow

    def _merge(self, inputs: list[Any], outputs: list[Any], decisions: list[Decision]) -> list[Any]:
        todo = iter(decisions)
        return [out if out is not None else self._output(value, next(todo))
                for value, out in zip(inputs, outputs, strict=True)]

    def _judge(self, inputs: list[Any], run_manager: list[CallbackManagerForChainRun]) -> list[Any]:
        items, outputs = to_items(inputs)
        decisions = self._guard().check_batch(items, *self._policy()) if items else []
        managers = [m for m, out in zip(run_manager, outputs, strict=True) if out is None]
        for manager, decision in zip(managers, decisions, strict=True):
            manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict(), run_id=manager.run_id)
        return self._merge(inputs, outputs, decisions)

    async def _ajudge(self, inputs: list[Any], run_manager: list[AsyncCallbackManagerForChainRun]) -> list[Any]:
        items, outputs = to_items(inputs)
        decisions = await self._guard().acheck_batch(items, *self._policy()) if items else []
        managers = [m for m, out in zip(run_manager, outputs, strict=True) if out is None]
        for manager, decision in zip(managers, decisions, strict=True):
            await manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict(), run_id=manager.run_id)
        return self._merge(inputs, outputs, decisions)

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

    # --- streaming: the reply so far is judged before a window goes out; the tail waits for the whole-text check

    def _windows(self, chunks: Iterator[Any], run_manager: CallbackManagerForChainRun) -> Iterator[Any]:
        judge = lambda value: self._one(value, run_manager)  # noqa: E731
        yield from released(chunks, self._release(), judge, windowed=self.mode == "raise")

    async def _awindows(self, chunks: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun
                        ) -> AsyncIterator[Any]:
        async def judge(value: Any) -> Any:
            return await self._aone(value, run_manager)

        async for chunk in areleased(chunks, self._release(), judge, windowed=self.mode == "raise"):
            yield chunk

    def _release(self) -> WindowedRelease:
        """Window by window under mode="raise"; an annotated stream is buffered and judged once, at its end."""
        return WindowedRelease(self.stream_chunk_size)

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._windows, config, run_type="chain")

    async def atransform(self, input: AsyncIterator[Any], config: RunnableConfig | None = None,
                         **kwargs: Any) -> AsyncIterator[Any]:
        async for chunk in self._atransform_stream_with_config(input, self._awindows, config, run_type="chain"):
            yield chunk
