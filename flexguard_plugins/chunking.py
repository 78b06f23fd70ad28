"""Split judged text that is longer than the model's budget into overlapping chunks, and merge their scores.

Tokens are counted on what the model will actually see: `render` (the prompt neutraliser, for backends
that render FlexGuard's chat prompt) may rewrite the text, e.g. `<|im_end|>` (1 token) into `‹|im_end|›`
(about 13), and the budget must hold for the rewritten text. Spans are always in the caller's text.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from .prompts import forgery_tokens, neutralize_mapped
from .text import SENTENCE_END
from .types import ModerationItem, RiskScore, merge_peaks

CHARS_PER_TOKEN = 4
"""Fallback when the backend has no tokenizer: a token is at most this many characters of one word."""
_FALLBACK_TOKEN = re.compile(rf"^\s+|\S{{1,{CHARS_PER_TOKEN}}}\s*")
MIN_RECHECK_CHARS = 200
"""The least new text before a streaming re-check judges the reply so far again (about two sentences): no check
reads a few words alone, and the first text shows after at most this much plus one check."""

Render = Callable[[str], tuple[str, "tuple[list[int], list[int]] | None"]]
"""text → (what the model sees, per character of it the (starts, ends) in `text`, or None when unchanged)."""


def renderer(tokenizer: Any | None) -> Render | None:
    """What an LLM backend with this tokenizer does to judged text before the model sees it (it neutralises
    forged role markers and special tokens); None for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    tokens = forgery_tokens(tokenizer)
    return lambda text: neutralize_mapped(text, tokens)


def _raw_offsets(text: str, tokenizer: Any | None) -> list[tuple[int, int]]:
    if tokenizer is not None:
        try:
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(span) for span in encoded["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError, ValueError):
            pass
    return [m.span() for m in _FALLBACK_TOKEN.finditer(text)] or [(0, len(text))]


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
                overlap: int | None = None, render: Render | None = None,
                full_last: bool = True) -> list[tuple[int, int]]:
    """Character spans covering `text`, each at most `max_tokens` tokens once rendered, neighbours overlapping.

    Overlap (default 1/8 of a chunk, at most twice that) keeps a harmful sentence on a boundary whole in one
    chunk. Boundaries move by up to twice the overlap to a sentence boundary where there is one: a chunk opening
    on a cut-off fragment ("pinch of salt.") is text no writer wrote, and the lite scorer read such fragments
    alone as risky (52 for harmless filler). With `full_last`, the last chunk is a full one ending at the text's
    end (it overlaps its neighbour more): for the lite scorer a short remainder would be a few sentences read as
    one text, where a harmful closing sentence is diluted, while a full chunk is also read sentence by sentence.
    Without it every chunk starts where its neighbour's overlap does, so a text that grows (a stream re-checked)
    keeps its chunks and a backend's prefix cache serves them.
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

    starts_at = sentence_starts(text, offsets)

    def sentence_start_in(low: int, high: int, last: bool) -> int | None:
        """The first (or last) token in [low, high] that opens a sentence."""
        found = [i for i in starts_at[bisect_left(starts_at, low):bisect_right(starts_at, high)]
                 if not joined(i)]
        return (found[-1] if last else found[0]) if found else None

    spans = []
    first, reach = 0, 0  # reach: one past the previous chunk's last token
    while True:
        if full_last and first > 0 and n - first < max_tokens:  # the remainder: a full chunk ending at the text's end
            first = n - max_tokens
            while first < n - 1 and joined(first):
                first += 1
            first = sentence_start_in(first, min(first + overlap, reach), last=False) or first
        last = min(first + max_tokens, n) - 1
        if last < n - 1:
            opening = sentence_start_in(last + 1 - 2 * overlap, last + 1, last=True)
            last = opening - 1 if opening is not None and opening > first + 1 else last
        while first < last < n - 1 and joined(last + 1):
            last -= 1
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == n - 1 else offsets[last][1]
        spans.append((start, end))
        if last == n - 1:
            return spans
        reach = last + 1
        following = max(first + 1, last + 1 - overlap)
        following = sentence_start_in(max(first + 1, following - overlap), following, last=True) or following
        while following > first + 1 and joined(following):
            following -= 1
        first = last + 1 if joined(following) else following


def sentence_starts(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Sorted token indices, above 0, whose token is the first of a sentence (after `SENTENCE_END`): where chunks
    may start and where the lite scorer's sentence windows start."""
    starts = [start for start, _ in offsets]
    out = []
    for cut in (m.end() for m in SENTENCE_END.finditer(text)):
        i = bisect_left(starts, cut)
        if 0 < i < len(offsets) and (not out or out[-1] != i):
            out.append(i)
    return out


def tail(text: str, max_tokens: int, tokenizer: Any | None = None, render: Render | None = None) -> str:
    """The last `max_tokens` tokens of `text` (context that only needs its most recent part)."""
    offsets = token_offsets(text, tokenizer, render)
    if len(offsets) <= max_tokens:
        return text
    return "…" + text[offsets[len(offsets) - max_tokens][0]:]


def split_item(item: ModerationItem, budget: int | None, tokenizer: Any | None = None, *,
               max_context_tokens: int | None = None, max_input_chars: int | None = None,
               render: Render | None = None, full_last: bool = True) -> list[tuple[ModerationItem, int | None]]:
    """The units to score for `item`, each with where its judged text starts in the item's (None: scored whole).

    Args:
        item: what to judge; in response mode the response is chunked and the prompt is context.
        budget: tokens of judged text one unit may hold (None: no limit, one unit).
        tokenizer: counts tokens (None: about `CHARS_PER_TOKEN` characters a token).
        max_context_tokens: tokens of the prompt's end kept as a response's context (None: a quarter of `budget`).
        max_input_chars: characters of the prompt's end kept as a response's context (None: all).
        render: what the backend does to the text before the model sees it (`Render`).
        full_last: the last chunk is a full one ending at the text's end (`chunk_spans`).
    """
    prompt = item.prompt
    if item.response is not None and max_input_chars is not None:
        prompt = prompt[-max_input_chars:]  # context: only its end matters
    if budget is None:
        return [(ModerationItem(prompt, item.response), None)]
    if item.response is None:
        spans = chunk_spans(prompt, budget, tokenizer, render=render, full_last=full_last)
        if len(spans) == 1:
            return [(item, None)]
        return [(ModerationItem(prompt[a:b]), a) for a, b in spans]
    context = tail(prompt, max_context_tokens or max(8, budget // 4), tokenizer, render=render)
    spans = chunk_spans(item.response, budget, tokenizer, render=render, full_last=full_last)
    if len(spans) == 1:
        return [(ModerationItem(context, item.response), None)]
    return [(ModerationItem(context, item.response[a:b]), a) for a, b in spans]


def placed(risk: RiskScore, unit: ModerationItem, start: int | None) -> RiskScore:
    """A unit's score with its span in the item's judged text (a backend's own span is relative to the unit)."""
    if start is None:
        return risk
    local = risk.span or (0, len(unit.judged_text))
    return risk.with_(span=(start + local[0], start + local[1]))


def riskiest(risks: Sequence[RiskScore]) -> RiskScore:
    """An item's score from its chunks' (`placed`): the riskiest chunk that was scored, with every category's
    highest part in `peaks`. When some chunks failed the result says so (`partial_error`): `decide` flags it
    if the scored part reaches the threshold and treats it as undecided otherwise. With no chunk scored, the
    first failure."""
    scored = [r for r in risks if r.ok]  # ok scores are finite and 0-100 (`RiskScore.checked`)
    failed = [r for r in risks if not r.ok]
    if not scored:
        return failed[0]
    best = max(scored, key=lambda r: r.score)
    parts = [part for r in scored for part in ([(s, (c,)) for c, s in r.peaks] or [(r.score, r.categories)])]
    best = best.with_(peaks=merge_peaks(best, parts))
    if failed:
        best = best.with_(partial_error=f"{len(failed)} of {len(risks)} chunks failed: {failed[0].error}")
    return best
