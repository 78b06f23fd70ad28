"""`FlexGuardMiddleware`: FlexGuard around the model call of a LangChain 1.x agent (needs `langchain`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain.agents.middleware.types import AgentMiddleware, AgentState, hook_config
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from flexguard_plugins import Decision, FlexGuard, resolve_strictness

from ._items import last_index, load_guard, message_text
from .runnable import FlexGuardViolation

Stage = Literal["input", "output"]
DEFAULT_VIOLATION_MESSAGE = "I'm sorry, but I can't help with that. It was flagged by FlexGuard ({categories})."


class FlexGuardMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Judge the last user message before the model runs and the model's reply after it.

    `exit_behavior`: "error" raises `FlexGuardViolation`; "end" stops the agent with a refusal (a flagged
    reply is replaced in place); "replace" swaps the flagged message's text for the refusal and goes on.
    The decision rides on the refusal in `response_metadata["flexguard"]`.
    """

    def __init__(self, *, guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                 reasoning: bool | None = None, strictness: Any = "moderate",
                 on_error: Literal["block", "allow", "raise"] = "block", check_input: bool = True,
                 check_output: bool = True, exit_behavior: Literal["error", "end", "replace"] = "end",
                 violation_message: str | None = None) -> None:
        super().__init__()
        if exit_behavior not in ("error", "end", "replace"):
            raise ValueError(f"exit_behavior must be error, end or replace, got {exit_behavior!r}")
        if on_error not in ("block", "allow", "raise"):
            raise ValueError(f"on_error must be block, allow or raise, got {on_error!r}")
        resolve_strictness(strictness)
        self.guard = load_guard(guard, model, backend, reasoning)
        self.strictness, self.on_error = strictness, on_error
        self.check_input, self.check_output = check_input, check_output
        self.exit_behavior = exit_behavior
        self.violation_message = violation_message or DEFAULT_VIOLATION_MESSAGE

    def _target(self, state: AgentState[Any], stage: Stage) -> tuple[int, dict[str, Any]] | None:
        """Which message to judge and the core item for it, or None when this stage has nothing to judge."""
        if not (self.check_input if stage == "input" else self.check_output):
            return None
        messages: Sequence[BaseMessage] = state.get("messages", [])
        index = last_index(messages, HumanMessage if stage == "input" else AIMessage)
        if index is None or not message_text(messages[index]).strip():
            return None
        if stage == "input":
            return index, {"prompt": message_text(messages[index])}
        user = last_index(messages, HumanMessage, before=index)
        prompt = message_text(messages[user]) if user is not None else ""
        return index, {"prompt": prompt, "response": message_text(messages[index])}

    def _apply(self, state: AgentState[Any], index: int, stage: Stage, decision: Decision) -> dict[str, Any] | None:
        """One pure policy for sync and async hooks: what a decision does to the agent state."""
        if not decision.flagged:
            return None
        if self.exit_behavior == "error":
            raise FlexGuardViolation(decision, state["messages"][index])
        text = self.violation_message.format(categories=", ".join(decision.categories) or "unsafe", stage=stage,
                                             score=decision.score, threshold=decision.threshold)
        metadata = {"flexguard": {**decision.to_dict(), "stage": stage}}
        original = state["messages"][index]
        if self.exit_behavior == "replace" or stage == "output":
            replaced = original.model_copy(update={"content": text, "response_metadata": metadata})
            update: dict[str, Any] = {"messages": [replaced]}  # same id: the reducer replaces it in place
        else:
            update = {"messages": [AIMessage(content=text, response_metadata=metadata)]}
        if self.exit_behavior == "end":
            update["jump_to"] = "end"
        return update

    def _run(self, state: AgentState[Any], stage: Stage) -> dict[str, Any] | None:
        target = self._target(state, stage)
        if target is None:
            return None
        decision = self.guard.check_batch([target[1]], self.strictness, self.on_error)[0]
        return self._apply(state, target[0], stage, decision)

    async def _arun(self, state: AgentState[Any], stage: Stage) -> dict[str, Any] | None:
        target = self._target(state, stage)
        if target is None:
            return None
        decision = (await self.guard.acheck_batch([target[1]], self.strictness, self.on_error))[0]
        return self._apply(state, target[0], stage, decision)

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        return self._run(state, "input")

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        return self._run(state, "output")

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        return await self._arun(state, "input")

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        return await self._arun(state, "output")
