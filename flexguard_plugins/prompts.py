"""Render FlexGuard's input: the rubric system prompt plus the `[User]:`/`[Assistant]:` conversation.

Prompt and parser live in the core so that inference, training and every wrapper share one format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .types import ModerationItem

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK = "<think>\n\n</think>\n"
"""Prefill for `reasoning=False`: the model skips straight to the answer lines."""

_ROLE_MARKER = re.compile(r"\[\s*(user|assistant)\s*\]\s*:", re.IGNORECASE)
_THINK_TAG = re.compile(r"<\s*(/?)\s*think\s*>", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"<\|([^|<>\s]{1,64})\|>")


@lru_cache(maxsize=8)
def _read_prompt(path: str | None) -> str:
    if path is None:
        return resources.files("flexguard_plugins").joinpath("system_prompt.txt").read_text(encoding="utf-8")
    return Path(path).read_text(encoding="utf-8")


def system_prompt(mode: str, path: str | Path | None = None) -> str:
    """The rubric for `mode` ('prompt' judges the User turn, 'response' the Assistant turn).

    A file given by `path` may use `{role}`; it replaces our rubric (e.g. the released FlexGuard prompt).
    """
    if mode not in ("prompt", "response"):
        raise ValueError(f"mode must be 'prompt' or 'response', got {mode!r}")
    template = _read_prompt(None if path is None else str(path))
    return template.replace("{role}", "User" if mode == "prompt" else "Assistant")


def neutralize(text: str, special_tokens: Sequence[str] = ()) -> str:
    """Make user text unable to forge a role marker, a think block or a chat-template control token."""
    text = _ROLE_MARKER.sub(lambda m: f"({m.group(1)}):", text)
    text = _THINK_TAG.sub(lambda m: f"‹{m.group(1)}think›", text)
    text = _SPECIAL_TOKEN.sub(lambda m: f"‹|{m.group(1)}|›", text)
    for token in special_tokens:
        if token and token in text:
            text = text.replace(token, token.replace("<", "‹").replace(">", "›"))
    return text


def conversation(item: ModerationItem, special_tokens: Sequence[str] = ()) -> str:
    """`[User]: …` (prompt mode) or `[User]: …\\n[Assistant]: …` (response mode)."""
    text = f"[User]: {neutralize(item.prompt, special_tokens)}"
    if item.response is not None:
        text += f"\n[Assistant]: {neutralize(item.response, special_tokens)}"
    return text


def messages(item: ModerationItem, system_prompt_path: str | Path | None = None,
             special_tokens: Sequence[str] = ()) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(item.mode, system_prompt_path)},
        {"role": "user", "content": conversation(item, special_tokens)},
    ]


def generation_prefill(reasoning: bool) -> str:
    """Text placed at the start of the assistant turn: an open think block, or an empty one."""
    return f"{THINK_OPEN}\n" if reasoning else EMPTY_THINK


def _special_tokens(tokenizer: Any) -> tuple[str, ...]:
    return tuple(getattr(tokenizer, "all_special_tokens", ()) or ())


def render_prompt(tokenizer: Any, item: ModerationItem, *, reasoning: bool = True,
                  system_prompt_path: str | Path | None = None) -> str:
    """The full model input as text, through the tokenizer's chat template, ending in the prefill."""
    chat = messages(item, system_prompt_path, _special_tokens(tokenizer))
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return text + generation_prefill(reasoning)


def render_target(categories: Sequence[str], score: int, reasoning: str | None = None) -> str:
    """FlexGuard's answer format, the completion that follows `render_prompt(..., reasoning=...)`'s prefill.

    With a reasoning trace the prefill is `<think>\\n`; without one it is the empty think block.
    """
    category_line = ",".join(categories) if categories else "SAFE"
    answer = f"{category_line}\n{int(score)}"
    if reasoning is None:
        return answer
    return f"{reasoning.strip()}\n{THINK_CLOSE}\n{answer}"


def shared_prefix(tokenizer: Any, mode: str, *, system_prompt_path: str | Path | None = None) -> str:
    """The longest text every rendered input of `mode` starts with (system prompt and `[User]: `).

    Backends cache its KV once; computed by rendering two different items and taking the common start.
    """
    probe_a = ModerationItem("a", None if mode == "prompt" else "a")
    probe_b = ModerationItem("b", None if mode == "prompt" else "b")
    a = render_prompt(tokenizer, probe_a, system_prompt_path=system_prompt_path)
    b = render_prompt(tokenizer, probe_b, system_prompt_path=system_prompt_path)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
