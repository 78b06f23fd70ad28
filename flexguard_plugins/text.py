"""Text normalisation shared by every layer: what the guard judges, what counts as empty, dedup keys.

Attackers hide text from a moderator with look-alike characters: full-width or Cyrillic letters,
zero-width and other format characters, leetspeak. `fold` gives the view the guard reasons about
(NFKC, format characters removed, common homoglyphs mapped to ASCII); it is for judging and matching
only, never shown back to the user. `dedup_key` is the one normaliser for deduplicating data.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources

# Cyrillic and Greek letters that render like Latin ones (only the unambiguous look-alikes); Unicode's confusables
# add the other scripts (`_homoglyph_table`).
_HOMOGLYPHS = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J",
    "α": "a", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "ν": "v", "ι": "i", "κ": "k", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "ı": "i", "ɑ": "a", "ɡ": "g", "ᴀ": "A", "ʙ": "B",
    "ӏ": "l", "Ӏ": "I", "ε": "e", "ς": "c", "ȷ": "j",
    # small capitals (ᴄ, ᴇ, ʜ, ɪ, ...): the letter they are named after
    **{chr(c): unicodedata.name(chr(c))[-1].lower() for c in (*range(0x250, 0x2B0), *range(0x1D00, 0x1D30),
                                                             *range(0xA720, 0xA800))
       if re.fullmatch("LATIN LETTER SMALL CAPITAL [A-Z]", unicodedata.name(chr(c), "")) and chr(c) not in "ᴀʙ"},
}


@lru_cache(maxsize=1)
def _homoglyph_table() -> dict[int, str]:
    """Every non-ASCII letter that Unicode's confusables list (`confusable_homoglyphs`' copy of confusables.txt)
    makes confusable with one ASCII letter (Lisu ꓧ, Cherokee Ꮋ, ...), then the table above, which wins. Built on
    first use (about 0.3 s)."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[int, str] = {}
    for char, entries in data.items():
        if len(char) != 1 or char.isascii() or not unicodedata.category(char).startswith("L"):
            continue
        latin = [e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isalpha()]
        if latin:  # the candidate of the same case first (Lisu ꓲ is listed as l and I: in capitals, I)
            lower = unicodedata.category(char) == "Ll"
            table[ord(char)] = sorted(latin, key=lambda c: c.islower() != lower)[0]
    table.update(str.maketrans(_HOMOGLYPHS))
    return table

_TAGS = {c: c - 0xE0000 for c in range(0xE0020, 0xE007F)}
"""Unicode tag characters spell ASCII invisibly ("ASCII smuggling"), and many LLMs read them: decoded, not dropped."""
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Hangul fillers and the blank braille pattern: letters or symbols by category that render as nothing."""
_LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                             "!": "i", "|": "l", "+": "t"})
_LEET_WORD = re.compile(
    r"(?:(?<![\w@$!|+])[@$])?\b(?=[\w@$!|+]{0,39}[a-zA-Z])(?=[\w@$!|+]{0,39}[0-9@$!|+])[\w@$!|+]{2,40}\b")
"""A word (at most 40 characters: the bound keeps a 100k-character run linear) mixing letters with digits or
symbols; a leading @ or $ belongs to it ("$h00t") when the rest is leet too, so a plain "@mention" or "$100" is
left alone."""
_SPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+|\n+")
"""Where one sentence ends and the next begins (the match's end is the next sentence's first character)."""


def _is_invisible(char: str) -> bool:
    """Format (Cf) characters: zero-width spaces and joiners, bidi controls, soft hyphen, BOM, tags; and the blank
    letters (Hangul fillers, blank braille) that split a word as invisibly."""
    return unicodedata.category(char) == "Cf" or char in _BLANK_LETTERS


def strip_invisible(text: str) -> str:
    """`text` without format characters and NULs (which no tokenizer should see)."""
    return "".join(c for c in text if c != "\x00" and not _is_invisible(c))


def decode_tags(text: str) -> str:
    """Tag characters as the ASCII they spell (one character for one, so positions hold)."""
    return text.translate(_TAGS)


def replace_surrogates(text: str) -> str:
    """Lone surrogates (as `json.loads('"\\ud800"')` produces) replaced by U+FFFD; tokenizers reject them."""
    return _SURROGATE.sub("\ufffd", text)


MAX_COMBINING_RUN = 30
"""Unicode's stream-safe limit (UAX #15): longer runs of combining marks get a U+034F (CGJ) every 30 marks."""


@lru_cache(maxsize=1)
def _long_mark_runs() -> re.Pattern[str]:
    """MAX_COMBINING_RUN combining marks (non-starters) followed by another one. Built once (about 0.1 s)."""
    marks = "".join(re.escape(chr(c)) for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c)))
    return re.compile(f"[{marks}]{{{MAX_COMBINING_RUN}}}(?=[{marks}])")


def stream_safe(text: str) -> str:
    """`text` with long runs of combining marks broken up: NFKC reorders a mixed run in quadratic time
    (100k marks took 10 s), so every normaliser call goes through this first."""
    if text.isascii():
        return text
    return _long_mark_runs().sub(lambda m: m.group(0) + "\u034f", text)


def fold(text: str) -> str:
    """The view a moderator judges: NFKC, tag characters decoded, no other format characters, homoglyphs mapped to
    ASCII letters."""
    text = decode_tags(unicodedata.normalize("NFKC", stream_safe(replace_surrogates(text))))
    return strip_invisible(text).translate(_homoglyph_table())


_fold_char = lru_cache(maxsize=8192)(fold)
"""`fold` of one character, cached: a long non-Latin text repeats few distinct characters."""


def _char_view(text: str, per_char: Callable[[str], str]) -> tuple[str, list[int]]:
    """`per_char` applied to each non-ASCII character (printable ASCII kept), with the index of the original
    character behind each character of the result."""
    parts: list[str] = []
    owners: list[int] = []
    for index, char in enumerate(text):
        seen = char if " " <= char < "\x7f" else per_char(char)
        parts.append(seen)
        owners.extend([index] * len(seen))
    return "".join(parts), owners


def folded_view(text: str) -> tuple[str, Sequence[int]]:
    """`fold` character by character, with the index of the original character behind each folded one.

    Character by character, not `fold(text)`: folding the whole text composes a mark with the character
    before it (`>` + U+0338 becomes `≯`), which would hide `<think>\u0338` while a tokenizer still finds
    `<think>` in the raw text. Each character folded alone keeps every ASCII character where it was, and
    the index map lets a match on the view be traced back to the user's text.
    """
    if text.isascii() and "\x00" not in text:
        return text, range(len(text))  # folding printable ASCII changes nothing
    return _char_view(text, _fold_char)


def _is_tag(char: str) -> bool:
    return "\U000e0000" <= char <= "\U000e007f"


def _seen_char(char: str) -> str:
    if _is_tag(char):
        return ""
    if _is_invisible(char) or unicodedata.category(char) in ("So", "Sk"):
        return " "
    return _fold_char(char)


def visible_view(text: str) -> tuple[str, Sequence[int]]:
    """What a reader sees, character by character with the index of each character's origin: tag characters
    dropped (`fold` decodes them), other invisible characters as a space (`fold` drops them, so one used as a
    word separator glues the words), and symbols (emoji, ✓) as a space (the encoder's tokenizer reads "story🙂" as one
    unknown word, and a lone emoji as another). The second reading of a text that hides its shape; otherwise like
    `folded_view`."""
    return _char_view(text, _seen_char)


def undo_leet(text: str) -> str:
    """Leetspeak undone inside words that mix letters with digits or symbols ("b0mb" → "bomb"); one character for one,
    so positions in `text` still hold."""
    return _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET_TABLE), text)


def fold_leet(text: str) -> str:
    """`fold`, then `undo_leet`."""
    return undo_leet(fold(text))


def is_blank(text: str | None) -> bool:
    """Empty after normalisation: nothing but white space, format characters and NULs. One rule everywhere."""
    return text is None or not fold(text).strip()


def dedup_key(text: str) -> str:
    """The one key for deduplicating data across sources: folded, case-folded, white space collapsed."""
    return _SPACE.sub(" ", fold(text).casefold()).strip()


__all__ = [
    "decode_tags", "dedup_key", "fold", "fold_leet", "folded_view", "is_blank", "replace_surrogates", "stream_safe",
    "strip_invisible", "undo_leet", "visible_view",
]
