"""The turn readings of a refusing reply: where a reply may turn, and the plan of rows that reads it again.

A jailbroken reply opens with a refusal and complies anyway ("Sorry, I can't. Just kidding! Step 1 ..."), or hides
the harm between refusals. The backend (`LiteBackend._plan_turn`, `_risk`) reads such a reply's continuations (from
each later sentence start, `_continuations`) and its cuts (without its last sentences) as parts of their own; the
constants here say which are read and when one counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..text import SENTENCE_END, folded_view

TURN_SENTENCES = 3
"""A short reply (read in one pass) that opens with a refusal is read again from each of its 2nd to 4th sentences
on; a continuation that does not itself refuse counts like a window. Behind "Sorry, that's not something I'm able to
do. Just kidding! " a quarter of the must-catch suite's harmful replies dropped under 61: the whole reply read as a
refusal, or the opener diluted it. "Opens with a refusal": the whole reply or its first sentence (read alone, one
short row, its score unused) reads as one, so only refusals pay for the continuations."""
TURN_CONFIDENT_REFUSAL = 0.95
"""A whole reply that refuses at least this confidently is read more warily: with the question, the model reads an
explanation after a refusal ("They cause mass casualties ...") as an answer to the request. Its continuations are
also read alone (`TURN_CORROBORATED`), from every later sentence, not only the next `TURN_SENTENCES`: behind four
refusing sentences ("I'm sorry. I can't help with that. It's against my guidelines. I won't provide it. ") 42 of 96
suite harmful replies blocked on their own fell under 61, 6 with this. At most a short reply's sentence starts
(`SINGLE_PASS_TOKENS`), two rows each."""
PREFIX_REFUSAL = 0.1
"""A short reply whose whole reading only leans to refusal (at least this, under `COMPLIANCE_REFUSAL`) is also read
cut before its last sentence; one that reads as a refusal, cut before each of its last `TURN_SENTENCES`. A refusal
after the harm often only dilutes it: the whole reply then leans to refusal without reading as one. Of 576 probe pairs
(the suite's harmful replies with a closing refusal) 64 fell under 61 with cuts for refusals only; 44 with this (36 at
0.05, 30 at 0.03). On `bench/lite.py`'s replies the word pieces read per prompt-mode one rise from 1.47 to 1.55 (0.05:
1.63, 0.03: 1.70, past the 1.6 budget)."""
TURN_CORROBORATED = 61.0
"""A confident refusal's continuation, or a cut of a reply leaning to refusal (`PREFIX_REFUSAL`), counts only if it
refuses in neither reading (with the question, alone) and both put it at HIGH or above; the lower of the two counts.
Without this, a refusal followed by the harm with no turn ("I'm sorry, but I can't help with that. Get a steel pipe
..."), two refusing sentences before the turn, or a refusal after the harm passed every strictness: the whole reply
reads as a refusal, or leans to one. Explanations around real refusals read alone mostly stay under HIGH."""



@dataclass
class _Plan:
    """The rows one item needs: (row index range, per row: view, token range)."""

    first: int
    parts: list[tuple[Any, Any, tuple[int, int]]]  # (view, encoding, (token start, token end))
    response: bool
    request: list[tuple[Any, Any, tuple[int, int]]] = field(default_factory=list)
    """Response mode: the rows after the parts, the prompt's end read in prompt mode (as `parts`)."""
    context: list[int] | None = None
    """Response mode: the question's word pieces (the replies' context)."""
    continuations: list[tuple[int, str]] = field(default_factory=list)
    """Response mode, a reply read in one pass: (character offset, the reply from there on) per later sentence,
    read (`_Turn`) only if the reply opens with a refusal: the first `TURN_SENTENCES`, or every one, alone too, of a
    confident one (`TURN_CONFIDENT_REFUSAL`)."""
    opening: list[tuple[Any, Any, tuple[int, int]]] = field(default_factory=list)
    """The rows after the request's: the reply's first sentence alone, read for its refusal probability only."""
    prefixes: list[str] = field(default_factory=list)
    """The reply cut before each of its last `TURN_SENTENCES` sentences, read (`_Turn`, with the question and alone)
    if the whole reply reads as a refusal, the last cut only if it leans to one (`PREFIX_REFUSAL`): a refusal after
    the harm."""

    @property
    def size(self) -> int:
        return len(self.parts) + len(self.request) + len(self.opening)


@dataclass
class _Turn:
    """The rows that read parts of a refusal (`plan.parts`), and per candidate part: (its row read with the
    question, its row read alone or None, the character offset of its text in the reply)."""

    plan: _Plan
    readings: list[tuple[int, int | None, int]]


UNSPACED_TERMINALS = "\u0589\u06d4\u061f\u0964\u0965\u3002\uff61\uff01\uff1f\u203c\u2047-\u2049\u203d"
TURN_BREAK = re.compile(rf"{SENTENCE_END.pattern}|(?<=[{UNSPACED_TERMINALS}])|(?<=[\u2013\u2014])\s*|(?i:<br\s*/?>)\s*")
"""Where a continuation may start: `SENTENCE_END`, and after sentence terminals that need no space (Armenian,
Urdu, Arabic, Devanagari, CJK full stops; doubled marks) so a reply in those scripts can turn too; after a dash and
an HTML line break, where a turn can be glued on ("I can't help with that — just kidding — ...": 26 of 96 suite
harmful replies under 61 before, 5 after; with `<br>`, 9 and 1)."""


def _continuations(text: str, count: int | None, folded: tuple[str, Sequence[int]] | None = None
                   ) -> list[tuple[int, str]]:
    """(offset, text[offset:]) from each of the 2nd .. count+1-th sentence starts (every later one if `count` is
    None), found on the folded text (`folded`: `text.folded_view(text)`, if already made) so a look-alike full stop
    still ends a sentence."""
    view, owners = folded if folded is not None else folded_view(text)
    out: list[tuple[int, str]] = []
    for match in TURN_BREAK.finditer(view):
        if (count is not None and len(out) >= count) or match.end() >= len(view):
            break
        start = owners[match.end()]
        if text[start:].strip() and (not out or out[-1][0] != start):
            out.append((start, text[start:]))
    return out

