"""Split judged text that is longer than the model's budget into overlapping chunks.

Tokens are counted on what the model will actually see: `render` (the prompt neutraliser, for backends
that render FlexGuard's chat prompt) may rewrite the text, e.g. `<|im_end|>` (1 token) into `‹|im_end|›`
(about 13), and the budget must hold for the rewritten text. Spans are always in the caller's text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHARS_PER_TOKEN = 4
"""Fallback when the backend has no tokenizer."""

Render = Callable[[str], tuple[str, "tuple[list[int], list[int]] | None"]]
"""text → (what the model sees, per character of it the (starts, ends) in `text`, or None when unchanged)."""


def _raw_offsets(text: str, tokenizer: Any | None) -> list[tuple[int, int]]:
    if tokenizer is not None:
        try:
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(span) for span in encoded["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError, ValueError):
            pass
    return [(i, min(i + CHARS_PER_TOKEN, len(text))) for i in range(0, len(text), CHARS_PER_TOKEN)]


def token_offsets(text: str, tokenizer: Any | None, render: Render | None = None) -> list[tuple[int, int]]:
    """Character (start, end) in `text` of each token of its rendering; 4 characters a token without a tokenizer."""
    if render is None:
        return _raw_offsets(text, tokenizer)
    rendered, origin = render(text)
    if origin is None:
        return _raw_offsets(text, tokenizer)
    starts, ends = origin
    offsets = []
    for a, b in _raw_offsets(rendered, tokenizer):
        a = min(max(a, 0), len(starts) - 1)
        b = min(max(b, a + 1), len(ends))
        offsets.append((starts[a], ends[b - 1]))
    return offsets


def chunk_spans(text: str, max_tokens: int, tokenizer: Any | None = None,
                overlap: int | None = None, render: Render | None = None) -> list[tuple[int, int]]:
    """Character spans covering `text`, each at most `max_tokens` tokens once rendered, neighbours overlapping.

    Overlap (default 1/8 of a chunk) keeps a harmful sentence on a boundary whole in one chunk. The last chunk
    is a full one ending at the text's end (it overlaps its neighbour more): a short remainder would be a few
    sentences read as one text, where a harmful closing sentence is diluted by its neighbours, while a full
    chunk is also read sentence by sentence (the lite scorer's windows).
    """
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    offsets = token_offsets(text, tokenizer, render)
    if len(offsets) <= max_tokens:
        return [(0, len(text))]
    overlap = max_tokens // 8 if overlap is None else overlap
    n = len(offsets)

    def joined(i: int) -> bool:
        """Tokens i-1 and i come from the same original characters (a rewritten forgery, a split character):
        a chunk boundary there would render more tokens than counted."""
        return 0 < i < n and offsets[i][0] < offsets[i - 1][1]

    spans = []
    first = 0
    while True:
        if first > 0 and n - first < max_tokens:  # the remainder: a full chunk ending at the text's end
            first = n - max_tokens
            while first < n - 1 and joined(first):
                first += 1
        last = min(first + max_tokens, n) - 1
        while first < last < n - 1 and joined(last + 1):
            last -= 1
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == n - 1 else offsets[last][1]
        spans.append((start, end))
        if last == n - 1:
            return spans
        following = max(first + 1, last + 1 - overlap)
        while following > first + 1 and joined(following):
            following -= 1
        first = last + 1 if joined(following) else following


def tail(text: str, max_tokens: int, tokenizer: Any | None = None, render: Render | None = None) -> str:
    """The last `max_tokens` tokens of `text` (context that only needs its most recent part)."""
    offsets = token_offsets(text, tokenizer, render)
    if len(offsets) <= max_tokens:
        return text
    return "…" + text[offsets[len(offsets) - max_tokens][0]:]
