"""What both LangChain wrappers share: what to judge in a LangChain input, a model reply or a tool call; and
`with_prompt`, which carries the user's text to a guard after the model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel

from flexguard_plugins import ModerationItem


def message_text(message: Any) -> str:
    """The text of a message (or of a plain string): what a person would read."""
    if isinstance(message, str):
        return message
    text = message.text
    return text if isinstance(text, str) else str(message.content)


def last_index(messages: Sequence[BaseMessage], kind: type[BaseMessage], before: int | None = None) -> int | None:
    for index in range(len(messages) if before is None else before, 0, -1):
        if isinstance(messages[index - 1], kind):
            return index - 1
    return None


def last_user_text(messages: Sequence[BaseMessage], before: int | None = None) -> str:
    index = last_index(messages, HumanMessage, before)
    return message_text(messages[index]) if index is not None else ""


def reply_text(reply: AIMessage) -> str:
    """A model turn as the guard reads it: its text and every tool call it asks for, name and arguments."""
    lines = [message_text(reply)] if message_text(reply).strip() else []
    for call in reply.tool_calls:
        lines.append(f"{call['name']}({json.dumps(call.get('args') or {}, ensure_ascii=False, default=str)})")
    for call in reply.invalid_tool_calls:
        lines.append(f"{call.get('name') or 'tool'}({call.get('args') or ''})")
    return "\n".join(lines)


def messages_item(messages: Sequence[BaseMessage]) -> ModerationItem:
    """A conversation ending in an AI reply is judged in response mode (with the last user turn as context);
    one ending in a user turn, in prompt mode."""
    if not messages:
        raise ValueError("FlexGuard got an empty message list: nothing to judge")
    last = messages[-1]
    if isinstance(last, AIMessage):
        return ModerationItem(last_user_text(messages, before=len(messages) - 1), reply_text(last))
    return ModerationItem(message_text(last))


def prompt_text(value: Any) -> str:
    """The user's text in a chain input: a string, the last user turn of messages or a prompt value."""
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return last_user_text(value.to_messages())
    if isinstance(value, BaseMessage):
        return message_text(value)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, Mapping)):
        return last_user_text(convert_to_messages(value))
    raise TypeError(f"with_prompt cannot find the user's text in a {type(value).__name__}; pass prompt_key= "
                    "for a dict input, or put with_prompt after the prompt template")


def with_prompt(runnable: Runnable[Any, Any], *, prompt_key: str | None = None) -> Runnable[Any, dict[str, Any]]:
    """`runnable` (your model) giving `{"prompt": <user's text in the chain input>, "response": <its output>}`, so a
    following `FlexGuardRunnable` judges the reply with its question (`input[prompt_key]` for a dict input)."""
    pick = RunnableLambda(itemgetter(prompt_key)) if prompt_key else RunnableLambda(prompt_text)
    return RunnableParallel(prompt=pick, response=runnable)


def to_item(value: Any) -> ModerationItem:
    """A string, a message, a message list, a prompt value or a {prompt, response} dict → a core item.
    Raises TypeError/ValueError for that one input only."""
    if isinstance(value, (str, ModerationItem)):
        return ModerationItem.coerce(value)
    if isinstance(value, PromptValue):
        return messages_item(value.to_messages())
    if isinstance(value, BaseMessage):
        return messages_item([value])
    if isinstance(value, Mapping):
        if "prompt" not in value:
            raise ValueError(f"a FlexGuard input dict needs a 'prompt' key (optional: 'response'), got {sorted(value)}")
        response = value.get("response")
        if isinstance(response, AIMessage):
            response = reply_text(response)
        elif isinstance(response, BaseMessage):
            response = message_text(response)
        return ModerationItem.coerce({"prompt": value["prompt"], "response": response})
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return messages_item(convert_to_messages(value))
    raise TypeError(f"FlexGuard cannot judge a {type(value).__name__}; pass a str, messages or a prompt/response dict")


def to_items(inputs: list[Any]) -> tuple[list[ModerationItem], list[Any]]:
    """Core items for the inputs that can be judged, and per input None or its own error (a malformed input fails
    alone)."""
    items, outputs = [], []
    for value in inputs:
        try:
            items.append(to_item(value))
            outputs.append(None)
        except (TypeError, ValueError) as error:
            outputs.append(error)
    return items, outputs
