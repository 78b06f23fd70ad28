"""What both LangChain wrappers share: which guard to use, and what to judge in a LangChain input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from flexguard_plugins import FlexGuard, shared_guard


def load_guard(guard: FlexGuard | None, model: str | None, backend: str, reasoning: bool | None) -> FlexGuard:
    """The given guard, or the process-wide one; `reasoning` only reaches a model backend (lite has none)."""
    options = {"reasoning": reasoning} if model is not None and reasoning is not None else {}
    return shared_guard(guard, model=model, backend=backend, **options)


def message_text(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.content)


def last_index(messages: Sequence[BaseMessage], kind: type[BaseMessage], before: int | None = None) -> int | None:
    for index in range(len(messages) if before is None else before, 0, -1):
        if isinstance(messages[index - 1], kind):
            return index - 1
    return None


def messages_item(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """A conversation ending in an AI reply is judged in response mode (with the last user turn as context);
    one ending in a user turn, in prompt mode."""
    if not messages:
        raise ValueError("FlexGuard got an empty message list: nothing to judge")
    last = messages[-1]
    if isinstance(last, AIMessage):
        user = last_index(messages, HumanMessage, before=len(messages) - 1)
        prompt = message_text(messages[user]) if user is not None else ""
        return {"prompt": prompt, "response": message_text(last)}
    return {"prompt": message_text(last)}


def to_item(value: Any) -> dict[str, Any]:
    """A string, a message, a message list, a prompt value or a {prompt, response} dict → a core item."""
    if isinstance(value, str):
        return {"prompt": value}
    if isinstance(value, PromptValue):
        return messages_item(value.to_messages())
    if isinstance(value, BaseMessage):
        return messages_item([value])
    if isinstance(value, Mapping):
        if "prompt" not in value:
            raise ValueError(f"a FlexGuard input dict needs a 'prompt' key (optional: 'response'), got {sorted(value)}")
        return {"prompt": value["prompt"], "response": value.get("response")}
    if isinstance(value, Sequence):
        return messages_item(convert_to_messages(value))
    raise TypeError(f"FlexGuard cannot judge a {type(value).__name__}; pass a str, messages or a prompt/response dict")
