"""The one interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..types import ModerationItem, RiskScore

if TYPE_CHECKING:
    from ..language import LanguageGate


class Backend(abc.ABC):
    """Scores a batch of items. Must return one `RiskScore` per item, in order.

    A backend may raise for a whole-batch failure (dead server, OOM); the facade turns that into
    `ok=False` results so no item is lost. Per-item failures are `RiskScore(ok=False, ...)`.
    """

    name: str = "backend"
    max_batch_size: int = 64
    """Largest batch the facade should hand over at once."""
    max_concurrent_batches: int = 1
    """How many batches may run at the same time (remote backends overlap requests)."""
    max_content_tokens: int | None = None
    """Tokens of judged text that fit in one call; longer text is chunked by the facade."""
    max_context_tokens: int | None = None
    """Tokens of a reply's prompt the facade passes as its context (the prompt's end); None: a quarter of
    `max_content_tokens`."""
    full_last_chunk: bool = False
    """Whether the last chunk of a long text is a full one ending at its end (`chunking.chunk_spans`), for a
    scorer that reads a chunk sentence by sentence; otherwise chunk starts stay put as a streamed text grows."""
    gate: LanguageGate | None = None
    """The languages the model was trained and measured on (set by its `languages` option): the facade answers
    "unsupported language: xx" for an item with a part in another, without scoring it. None: any language."""
    max_judged_chars: int | None = None
    """The longest judged text the model was measured on (set by its `max_judged_chars` option): the facade answers
    "input too long" for longer text instead of scoring it. None: no limit of the model's own."""
    tokenizer: Any = None
    """A Hugging Face tokenizer when the backend has one (used to count tokens for chunking)."""

    @abc.abstractmethod
    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        """Score `items`; one result each, in input order."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release engines, servers' connections, threads."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def unreadable(self, item: ModerationItem) -> str | None:
        """Why `item` is outside the languages the model accepts ("unsupported language: de"), or None; what the
        facade answers instead of scoring it (`gate`)."""
        language = None if self.gate is None else self.gate.unsupported_in(item, self.max_context_tokens)
        return None if language is None else f"unsupported language: {language}"

    def measured_range(self) -> dict[str, Any]:
        """What the facade holds the model to, for `describe`: the languages it accepts and its longest judged text."""
        return {"languages": None if self.gate is None else list(self.gate.languages),
                "max_judged_chars": self.max_judged_chars}
