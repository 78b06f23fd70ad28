"""Where a refusing reply may turn: the sentence starts the turn rules read a reply again from (`readings.py`).

A jailbroken reply opens with a refusal and complies anyway ("Sorry, I can't. Just kidding! Step 1 ..."), or hides
the harm between refusals; `continuations` finds where each later part of a reply starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..text import SENTENCE_END, folded_view

UNSPACED_TERMINALS = "\u0589\u06d4\u061f\u0964\u0965\u3002\uff61\uff01\uff1f\u203c\u2047-\u2049\u203d"
TURN_BREAK = re.compile(rf"{SENTENCE_END.pattern}|(?<=[{UNSPACED_TERMINALS}])|(?<=[\u2013\u2014])\s*|(?i:<br\s*/?>)\s*")
"""Where a continuation may start: `SENTENCE_END`; after terminals that need no space (Armenian, Urdu, Arabic,
Devanagari, CJK full stops; doubled marks); after a dash or an HTML line break, where a turn can be glued on."""


def continuations(text: str, count: int | None, folded: tuple[str, Sequence[int]] | None = None
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

