"""A backend whose answers are FlexGuard-format text chosen by keywords: the I/O seam for facade tests.

It goes through the real parser, so what it exercises is the facade, batching, chunking and policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from flexguard_plugins import Backend
from flexguard_plugins.parsing import parse_output
from flexguard_plugins.types import ModerationItem, RiskScore

ANSWERS = {"bomb": "VIO,ILG\n92", "steal": "ILG\n55", "flirt": "SEX\n30", "garbage": "I am not sure."}


def answer_for(text: str) -> str:
    for keyword, answer in ANSWERS.items():
        if keyword in text:
            return answer
    return "SAFE\n4"


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, model: str | None = None, *, max_content_tokens: int | None = None, delay_s: float = 0.0,
                 fail_with: Exception | None = None, max_batch_size: int = 64, poison: str | None = None,
                 tokenizer: Any = None) -> None:
        self.max_content_tokens = max_content_tokens
        self.poison = poison
        """A marker that makes the whole batch raise when any item holds it (an item a tokenizer rejects)."""
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.delay_s = delay_s
        self.fail_with = fail_with
        self.batches: list[list[ModerationItem]] = []
        self.closed = False

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        self.batches.append(list(items))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        if self.poison is not None and any(self.poison in (i.prompt + (i.response or "")) for i in items):
            raise TypeError(f"cannot encode an item holding {self.poison!r}")
        return [parse_output(f"<think>\nchecked\n</think>\n{answer_for(i.judged_text)}") for i in items]

    async def aclose(self) -> None:
        self.closed = True


PLOT = ("A student, desperate and proud, " + " ".join(f"walks street {i}." for i in range(30)) + " He murders a "
        "pawnbroker with an axe. " + " ".join(f"Then day {i} passes." for i in range(30)) + " The rest of the novel "
        "follows his guilt and paranoia. " + " ".join(f"Chapter {i} ends." for i in range(30)))
"""A harmless plot summary whose beginning, up to the murder, reads as harm to `ClearedLaterBackend` until it goes
on to the guilt."""


class ClearedLaterBackend(ScriptedBackend):
    """Flags (VIO 70) a text that tells of an "axe" unless it goes on to "guilt": a beginning that reads as harm
    until the reply goes on (a plot summary). Records every judged text."""

    def __init__(self) -> None:
        super().__init__()
        self.judged: list[str] = []

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        self.judged += [i.judged_text for i in items]
        return [RiskScore.from_score(70.0, categories=("VIO",)) if "axe" in i.judged_text
                and "guilt" not in i.judged_text else RiskScore.from_score(3.0) for i in items]
