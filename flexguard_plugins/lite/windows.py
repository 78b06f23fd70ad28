"""What the lite model reads of one text: normalised views and dilution-proof windows.

A view is `text.fold` (NFKC, format characters removed, homoglyphs mapped), where its words differ
`text.visible_view` (what a reader sees), and the `text.undo_leet` copy of each (leetspeak undone). Each
view is built character by character so every view character maps back to a span of the original text
(for `RiskScore.span`).

A text of at most `SINGLE_PASS_TOKENS` word pieces is read whole (the model was trained with harmful
sentences diluted inside benign text up to that length). Longer text is also read in sentence-aligned
windows of at most `WINDOW_TOKENS` word pieces: each sentence alone and each pair of neighbouring
sentences (a request split over two sentences). One harmful sentence cannot be diluted by any amount
of benign text around it; the riskiest window wins and its span is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..chunking import sentence_starts
from ..text import folded_view, undo_leet, visible_view

SINGLE_PASS_TOKENS = 128
"""Text up to this many word pieces is read whole only: the length the model was trained on."""
WINDOW_TOKENS = 64
"""The longest sentence window: short enough that benign text around one harmful sentence cannot dilute it."""


@dataclass(frozen=True)
class View:
    text: str
    starts: tuple[int, ...]
    """Original character index of each view character (plus one entry for the end)."""

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        start = min(max(start, 0), len(self.starts) - 1)
        end = min(max(end, start), len(self.starts) - 1)
        return self.starts[start], self.starts[end]


def views(text: str, *, visible: bool = True, leet: bool = True) -> list[View]:
    """The fold view; the visible view (`text.visible_view`) where its words differ (hidden padding, invisible word
    separators, symbols glued to words); and the leet-undone copy of each where it differs (same length: leet maps
    1:1; not `fold_leet(view)`: folding again composes a letter with a following mark and shifts later positions).
    The riskiest reading wins, so hiding text's shape from one reading does not hide it from the other. `visible`
    and `leet` switch those readings off (`readings.ReadingPolicy`)."""
    view, owners = folded_view(text)
    out = [View(view, (*owners, len(text)))]
    if visible and not text.isascii():
        seen, seen_owners = visible_view(text)
        if seen.split() and seen.split() != view.split():  # words, and other words than the fold view's
            out.append(View(seen, (*seen_owners, len(text))))
    for base in list(out) if leet else []:
        undone = undo_leet(base.text)
        if undone != base.text:
            out.append(View(undone, base.starts))
    return out


def windows(encoding: Any, text: str, *, window: int = WINDOW_TOKENS,
            single_pass: int = SINGLE_PASS_TOKENS) -> list[tuple[int, int]]:
    """Token ranges [start, end) to read: the whole text; for long text also every sentence alone and every
    two neighbouring sentences (each at most `window` tokens; a longer sentence in half-overlapping pieces)."""
    n = len(encoding.ids)
    whole = [(0, n)]
    if n <= single_pass:
        return whole
    boundaries = [0, *sentence_starts(text, encoding.offsets), n]  # token index where each sentence starts
    sentences = list(zip(boundaries, boundaries[1:], strict=False))
    out: list[tuple[int, int]] = []
    for start, end in sentences:
        if end - start <= window:
            out.append((start, end))
        else:
            for s in range(start, end, window // 2):
                out.append((s, min(s + window, end)))
                if s + window >= end:
                    break
    for (start, _), (_, end) in zip(sentences, sentences[1:], strict=False):
        if end - start <= window:
            out.append((start, end))
    return whole + sorted(set(out) - set(whole))
