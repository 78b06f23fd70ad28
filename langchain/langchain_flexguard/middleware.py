"""`FlexGuardMiddleware`: FlexGuard in a LangChain 1.x agent loop (needs `langchain`).

The user turn is judged once per run (`before_agent`); every model turn, text and tool-call arguments,
inside the model call (`wrap_model_call`), so a flagged turn never enters the state: no tool runs and no
tool call is left without its answer, even when `exit_behavior="error"` stops a checkpointed thread.
Tool results are judged on request (`check_tool_results`, for prompt injection through tools).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langchain.agents.middleware.types import AgentMiddleware, AgentState, ModelResponse, hook_config
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from flexguard_plugins import (
    Decision,
    FlexGuard,
    ModerationItem,
    check_on_error,
    check_shadow,
    is_blank,
    resolve_strictness,
    shared_guard,
)

from ._decisions import FlexGuardViolation, adispatch, dispatch
from ._items import last_index, last_user_text, message_text, reply_text

Stage = Literal["input", "output", "tool"]
DEFAULT_VIOLATION_MESSAGE = "I'm sorry, but I can't help with that. It was flagged by FlexGuard ({categories})."
TOOL_RESULT_NOTE = "[tool result withheld: flagged by FlexGuard ({categories})]"


class FlexGuardMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Judge the user turn, each model turn (text and tool calls) and, opt-in, each tool result.

    The decision rides on a refusal in `response_metadata["flexguard"]`; every decision, allowed ones included,
    goes to callbacks as the custom event "flexguard_decision" (`Decision.to_dict()` and `stage`).

    Args:
        strictness, on_error: as `FlexGuardRunnable`; `shadow=True` judges and reports, never refuses.
        guard, model, backend, reasoning: a `FlexGuard`, or which scorer to load (default: the embedded one).
        check_input, check_output, check_tool_results: which turns to judge (tool results: opt-in).
        exit_behavior: on a flag, "error" raises `FlexGuardViolation`; "end" stops the agent with a refusal;
            "replace" puts the refusal in place of the flagged model turn (a flagged tool result becomes a
            note and the agent goes on). A flagged user turn always ends the run with no model call.
        violation_message: the refusal, formatted with `categories`, `stage`, `score` and `threshold`.

    Raises:
        ValueError: a bad strictness, on_error, exit_behavior or shadow (shadow with on_error="raise").

    Example:
        >>> create_agent(llm, tools, middleware=[FlexGuardMiddleware(exit_behavior="end")])  # doctest: +SKIP
    """

    def __init__(self, *, guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                 reasoning: bool | None = None, strictness: Any = "moderate",
                 on_error: Literal["block", "allow", "raise"] = "block", shadow: bool = False, check_input: bool = True,
                 check_output: bool = True, check_tool_results: bool = False,
                 exit_behavior: Literal["error", "end", "replace"] = "end",
                 violation_message: str | None = None) -> None:
        super().__init__()
        if exit_behavior not in ("error", "end", "replace"):
            raise ValueError(f"exit_behavior must be error, end or replace, got {exit_behavior!r}")
        resolve_strictness(strictness)
        self.on_error = check_on_error(on_error)
        self.shadow = check_shadow(shadow, self.on_error)
        self.guard = shared_guard(guard, model, backend, reasoning)
        self.strictness = strictness
        self.check_input, self.check_output, self.check_tool_results = check_input, check_output, check_tool_results
        self.exit_behavior = exit_behavior
        self.violation_message = violation_message or DEFAULT_VIOLATION_MESSAGE

    # --- what to judge ---------------------------------------------------------------------------

    def _input_item(self, state: AgentState[Any]) -> ModerationItem | None:
        messages = state.get("messages", [])
        index = last_index(messages, HumanMessage)
        if not self.check_input or index is None or is_blank(message_text(messages[index])):
            return None
        return ModerationItem(message_text(messages[index]))

    def _reply_item(self, request: Any, response: ModelResponse) -> ModerationItem | None:
        replies = [m for m in response.result if isinstance(m, AIMessage)]
        text = "\n".join(reply_text(m) for m in replies)
        if not self.check_output or is_blank(text):
            return None
        return ModerationItem(last_user_text(request.messages), text)

    def _tool_item(self, result: Any) -> ModerationItem | None:
        if not self.check_tool_results or not isinstance(result, ToolMessage) or is_blank(message_text(result)):
            return None
        return ModerationItem(message_text(result))  # untrusted text the model will read, judged as a prompt

    # --- one pure policy for sync and async hooks --------------------------------------------------

    def _refusal(self, info: dict[str, Any], template: str | None = None) -> tuple[str, dict[str, Any]]:
        """The refusal text and its metadata from a decision's `to_dict()` plus the stage."""
        text = (template or self.violation_message).format(
            categories=", ".join(info["categories"]) or "unsafe", stage=info["stage"],
            score=info["score"], threshold=info["threshold"])
        return text, {"flexguard": info}

    def _on_input(self, decision: Decision) -> dict[str, Any] | None:
        if not decision.flagged:
            return None
        if self.exit_behavior == "error":
            raise FlexGuardViolation(decision)
        text, metadata = self._refusal({**decision.to_dict(), "stage": "input"})
        return {"messages": [AIMessage(content=text, response_metadata=metadata)], "jump_to": "end"}

    def _on_reply(self, response: ModelResponse, decision: Decision) -> ModelResponse:
        if not decision.flagged:
            return response
        if self.exit_behavior == "error":
            raise FlexGuardViolation(decision, response.result)
        text, metadata = self._refusal({**decision.to_dict(), "stage": "output"})
        return ModelResponse(result=[AIMessage(content=text, response_metadata=metadata)])  # no tool calls

    def _on_tool(self, result: ToolMessage, decision: Decision) -> ToolMessage:
        if not decision.flagged:
            return result
        if self.exit_behavior == "error":
            raise FlexGuardViolation(decision, result)
        note, metadata = self._refusal({**decision.to_dict(), "stage": "tool"}, TOOL_RESULT_NOTE)
        # under "end", the model call that would read this note is skipped (`_withheld`)
        return ToolMessage(content=note, tool_call_id=result.tool_call_id, name=result.name, status="error",
                           response_metadata=metadata)

    def _withheld(self, messages: list[Any]) -> ModelResponse | None:
        """Under "end", a tool result withheld in this step (any of parallel calls) ends the run: the model is
        not called and the refusal is its turn (no tool calls, so the agent stops)."""
        if self.exit_behavior != "end" or not self.check_tool_results:
            return None
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                return None
            if message.response_metadata.get("flexguard"):
                text, metadata = self._refusal(message.response_metadata["flexguard"])
                return ModelResponse(result=[AIMessage(content=text, response_metadata=metadata)])
        return None

    def _decide(self, item: ModerationItem, stage: Stage) -> Decision:
        decision = self.guard.check_batch([item], self.strictness, self.on_error, self.shadow)[0]
        dispatch(decision, stage)
        return decision

    async def _adecide(self, item: ModerationItem, stage: Stage) -> Decision:
        decision = (await self.guard.acheck_batch([item], self.strictness, self.on_error, self.shadow))[0]
        await adispatch(decision, stage)
        return decision

    # --- hooks -----------------------------------------------------------------------------------

    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        item = self._input_item(state)
        return None if item is None else self._on_input(self._decide(item, "input"))

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        item = self._input_item(state)
        return None if item is None else self._on_input(await self._adecide(item, "input"))

    def wrap_model_call(self, request: Any, handler: Callable[[Any], ModelResponse]) -> ModelResponse:
        if (stop := self._withheld(request.messages)) is not None:
            return stop
        response = handler(request)
        item = self._reply_item(request, response)
        return response if item is None else self._on_reply(response, self._decide(item, "output"))

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[ModelResponse]]
                               ) -> ModelResponse:
        if (stop := self._withheld(request.messages)) is not None:
            return stop
        response = await handler(request)
        item = self._reply_item(request, response)
        return response if item is None else self._on_reply(response, await self._adecide(item, "output"))

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        result = handler(request)
        item = self._tool_item(result)
        return result if item is None else self._on_tool(result, self._decide(item, "tool"))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        result = await handler(request)
        item = self._tool_item(result)
        return result if item is None else self._on_tool(result, await self._adecide(item, "tool"))
