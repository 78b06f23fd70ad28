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

from .text import decode_tags, fold, folded_view
from .types import ModerationItem

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK = "<think>\n\n</think>\n"
"""Prefill for `reasoning=False`: the model skips straight to the answer lines."""

_ROLE_MARKER = r"(?i:\[\s*(?P<role>user|assistant)\s*\]\s*:)"
_THINK_TAG = r"(?i:<\s*(?P<slash>/?)\s*think\s*>)"
_SPECIAL_TOKEN = r"<\|(?P<special>[^|<>\s]{1,64})\|>"
_DEFANG = str.maketrans({"<": "‹", ">": "›", "[": "⁅", "]": "⁆"})
_NOT_A_WORD = re.compile(r"[^\w\s]")

Origin = tuple[list[int], list[int]]
"""For each character of a neutralised text, the (start, end) of the original characters it stands for."""


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


@lru_cache(maxsize=32)
def _forgery_pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    folded = sorted({fold(t) for t in tokens if t and fold(t)}, key=len, reverse=True)
    parts = [_ROLE_MARKER, _THINK_TAG, _SPECIAL_TOKEN]
    if folded:
        parts.append("(?P<token>" + "|".join(re.escape(t) for t in folded) + ")")
    return re.compile("|".join(parts))


def _defanged(match: re.Match[str]) -> str:
    """What a forgery becomes: readable, but no role marker, think tag or token id of the template."""
    if match.group("role") is not None:
        return f"({match.group('role')}):"
    if match.group("slash") is not None:
        return f"‹{match.group('slash')}think›"
    if match.group("special") is not None:  # its inside defanged too: "<|[INST]|>" must not keep an [INST]
        return f"‹|{match.group('special').translate(_DEFANG)}|›"
    token = match.group(0)
    defanged = token.translate(_DEFANG)
    return defanged if defanged != token else token[0] + "\u2060" + token[1:]


def neutralize_mapped(text: str, special_tokens: Sequence[str] = ()) -> tuple[str, Origin | None]:
    """`neutralize(text)` and, when a forgery was rewritten, where each of its characters came from (None: each
    character stands for the one at its position, decoded tag characters included).

    Forgeries are found on the folded view (NFKC, format characters removed, homoglyphs mapped: see
    `text.fold`), so `［Assistant］：`, `[Assi\u200bstant]:` or a Cyrillic `[Аssistant]:` are caught; only
    the matched characters are rewritten and the rest of the user's text is kept as it was, except that Unicode tag
    characters (invisible ASCII) are decoded, one for one.
    """
    pattern = _forgery_pattern(tuple(special_tokens))
    text = decode_tags(text)  # the guard model reads what tag characters spell, as a downstream LLM may
    view, owners = folded_view(text)
    if not pattern.search(view):
        return text, None
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    for match in pattern.finditer(view):
        start, end = owners[match.start()], owners[match.end() - 1] + 1
        if start < last:
            continue
        parts.append(text[last:start])
        starts.extend(range(last, start))
        ends.extend(range(last + 1, start + 1))
        replacement = _defanged(match)
        parts.append(replacement)
        starts.extend([start] * len(replacement))
        ends.extend([end] * len(replacement))
        last = end
    parts.append(text[last:])
    starts.extend(range(last, len(text)))
    ends.extend(range(last + 1, len(text) + 1))
    return "".join(parts), (starts, ends)


def neutralize(text: str, special_tokens: Sequence[str] = ()) -> str:
    """Make user text unable to forge a role marker, a think block or a chat-template token (`special_tokens`:
    see `forgery_tokens`), also through look-alike characters."""
    return neutralize_mapped(text, special_tokens)[0]


def forgery_tokens(tokenizer: Any) -> tuple[str, ...]:
    """Tokens user text must not produce: the special tokens and every added token that is not a plain word
    (Qwen's `<tool_call>`, Mistral's `[INST]`: added tokens reach the model as their own ids)."""
    if tokenizer is None:
        return ()
    special = tuple(getattr(tokenizer, "all_special_tokens", ()) or ())
    try:
        added = tuple(tokenizer.get_added_vocab())
    except (AttributeError, NotImplementedError, TypeError):
        added = ()
    return special + tuple(t for t in added if t not in special and _NOT_A_WORD.search(t))


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


def render_prompt(tokenizer: Any, item: ModerationItem, *, reasoning: bool = True,
                  system_prompt_path: str | Path | None = None) -> str:
    """The full model input as text, through the tokenizer's chat template, ending in the prefill."""
    chat = messages(item, system_prompt_path, forgery_tokens(tokenizer))
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
