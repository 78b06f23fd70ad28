"""Split judged text that is longer than the model's budget into overlapping chunks."""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4
"""Fallback when the backend has no tokenizer."""


def token_offsets(text: str, tokenizer: Any | None) -> list[tuple[int, int]]:
    """Character (start, end) of each token; an approximation of 4 characters a token without a tokenizer."""
    if tokenizer is not None:
        try:
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(span) for span in encoded["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError, ValueError):
            pass
    return [(i, min(i + CHARS_PER_TOKEN, len(text))) for i in range(0, len(text), CHARS_PER_TOKEN)]


def chunk_spans(text: str, max_tokens: int, tokenizer: Any | None = None,
                overlap: int | None = None) -> list[tuple[int, int]]:
    """Character spans covering `text`, each at most `max_tokens` tokens, neighbours overlapping.

    Overlap (default 1/8 of a chunk) keeps a harmful sentence on a boundary whole in one chunk.
    """
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    offsets = token_offsets(text, tokenizer)
    if len(offsets) <= max_tokens:
        return [(0, len(text))]
    overlap = max_tokens // 8 if overlap is None else overlap
    step = max(1, max_tokens - overlap)
    spans = []
    for first in range(0, len(offsets), step):
        last = min(first + max_tokens, len(offsets)) - 1
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == len(offsets) - 1 else offsets[last][1]
        spans.append((start, end))
        if last == len(offsets) - 1:
            break
    return spans


def tail(text: str, max_tokens: int, tokenizer: Any | None = None) -> str:
    """The last `max_tokens` tokens of `text` (context that only needs its most recent part)."""
    offsets = token_offsets(text, tokenizer)
    if len(offsets) <= max_tokens:
        return text
    return "…" + text[offsets[len(offsets) - max_tokens][0]:]
