"""The reading rules of the lite scorer: one frozen policy, typed rows, one pure function per rule.

An item is read as rows (one model input each, `Row`): the judged text's views, whole and in sentence windows
(`windows.py`); in response mode also the request (the prompt's end, read as a prompt) and, for a reply that
refuses, its continuations and cuts (`turn.py`). The model scores every row (`Scored`); each rule below turns
scored rows into a `Candidate` (a latent, its categories, where it came from) or None, and the riskiest candidate
is the item's score. `ReadingPolicy` holds every knob and one switch per rule, so a benchmark can switch any rule
off (`bench/lite_rules.py`); `docs/lite.md` records what each rule catches and costs on held-out data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .head import latent_to_score
from .windows import SINGLE_PASS_TOKENS, WINDOW_TOKENS, View

if TYPE_CHECKING:
    from tokenizers import Encoding


@dataclass(frozen=True)
class ReadingPolicy:
    """Every knob of the reading rules and a switch per rule; `DEFAULT_POLICY` is what ships.

    Args:
        Each field, documented under its name below: a rule's switch (`SWITCHES`) or a knob of one.

    Raises:
        ValueError: a knob out of its range, naming it.

    Example:
        >>> from dataclasses import replace
        >>> no_compliance = replace(DEFAULT_POLICY, compliance=False)
        >>> LiteBackend(policy=no_compliance)  # doctest: +SKIP
    """

    # --- one text: its views and windows ---
    visible_view: bool = True
    """Read text that hides its shape (tags, invisible separators, glued symbols) a second way, as a reader sees it."""
    leet_view: bool = True
    """Read each view again with leetspeak undone."""
    sentence_windows: bool = True
    """Read text longer than `single_pass_tokens` also sentence by sentence, so benign text cannot dilute harm."""
    single_pass_tokens: int = SINGLE_PASS_TOKENS
    """Text up to this many word pieces is read whole only (the length trained with harm diluted in benign text)."""
    window_tokens: int = WINDOW_TOKENS
    """Longest window: one sentence or two neighbours; a longer sentence is read in half-overlapping pieces."""
    window_gate_score: float = 0.0
    """A window counts only when the text read whole reaches this score (0: always), so a window read out of
    context cannot outvote the whole reading on its own..."""
    window_alone_score: float = 101.0
    """...unless the window alone reaches this score (harm no context makes harmless)."""
    # --- response mode: the request ---
    compliance: bool = True
    """A reply that does not refuse a request the moderate regime blocks scores at least the request
    (`from=request`)."""
    compliance_refusal: float = 0.5
    """Refusal probability under which a reply, or a part of one, does not refuse."""
    compliance_request_score: float = 41.0
    """The request score the compliance rule needs: the moderate line, so LOW false alarms on everyday requests
    do not spread to every reply."""
    request_tokens: int = 512
    """Word pieces of the prompt's end read as the request; the cross-encoder's own context is only its last 48."""
    # --- response mode: a reply that refuses (only a reply read in one pass) ---
    turn_sentences: int = 3
    """Sentences read again after a refusal (`turned_refusal`), and cuts before the last ones (`refusal_cuts`);
    0 reads no part of a refusal."""
    turned_refusal: bool = True
    """A reply that opens with a refusal (it, or its first sentence alone, refuses) is read again from each of its
    next `turn_sentences` sentences with the question; a part that does not refuse counts like a window."""
    confident_refusal: bool = True
    """A reply that refuses confidently is read from every later sentence, with the question and alone: with the
    question the model reads an explanation after a refusal as an answer to it."""
    confident_refusal_at: float = 0.95
    """The whole reply's refusal probability from which it is a confident refusal."""
    refusal_cuts: bool = True
    """A reply that refuses is read without each of its last `turn_sentences` sentences: a refusal after the harm."""
    leaning_cut: bool = True
    """A reply that only leans to refusal (`leaning_refusal_at` up to `compliance_refusal`) is read without its last
    sentence: a closing refusal that dilutes the harm without making the reply read as a refusal."""
    leaning_refusal_at: float = 0.1
    """The whole reply's refusal probability from which it leans to refusal."""
    corroborated_score: float = 61.0
    """A part read alone too (a confident refusal's continuation, a cut) counts only if both readings reach this
    score and neither refuses; the lower one counts. Explanations around real refusals read alone stay under it."""

    def __post_init__(self) -> None:
        if not 16 <= self.window_tokens <= self.single_pass_tokens:
            raise ValueError(f"window_tokens must be between 16 and {self.single_pass_tokens}, "
                             f"got {self.window_tokens}")
        for name in ("window_gate_score", "window_alone_score"):
            if not 0.0 <= getattr(self, name) <= 101.0:
                raise ValueError(f"{name} must be between 0 and 101 (101: never), got {getattr(self, name)}")
        if not 0 <= self.turn_sentences <= 8:
            raise ValueError(f"turn_sentences must be between 0 and 8, got {self.turn_sentences}")
        if self.request_tokens < 1:
            raise ValueError(f"request_tokens must be at least 1, got {self.request_tokens}")
        for name in ("compliance_refusal", "confident_refusal_at", "leaning_refusal_at"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    @property
    def reads_turns(self) -> bool:
        """Whether any rule reads parts of a refusing reply."""
        return self.turn_sentences > 0 and (self.turned_refusal or self.confident_refusal or self.refusal_cuts
                                            or self.leaning_cut)


DEFAULT_POLICY = ReadingPolicy()
SWITCHES: tuple[str, ...] = ("visible_view", "leet_view", "sentence_windows", "compliance", "turned_refusal",
                             "confident_refusal", "refusal_cuts", "leaning_cut")
"""The policy's rule switches, in reading order."""


@dataclass(frozen=True, eq=False)
class Row:
    """One model input: word pieces `start:end` of a view of a text, read as a prompt or as a reply to a context;
    `shift` is where the read text starts in the judged text (a continuation of a reply)."""

    inputs: tuple[list[int], list[int]]
    view: View
    encoding: Encoding
    start: int
    end: int
    shift: int = 0

    def span(self) -> tuple[int, int] | None:
        """The judged text's characters this row read; None for an empty row."""
        if self.end <= self.start:
            return None
        offsets = self.encoding.offsets
        first, last = self.view.original_span(offsets[self.start][0], offsets[self.end - 1][1])
        return first + self.shift, last + self.shift


@dataclass(frozen=True, eq=False)
class Scored:
    """A row with the model's reading of it."""

    row: Row
    latent: float
    refusal: float
    categories: np.ndarray


@dataclass(frozen=True, eq=False)
class Candidate:
    """A reading that may decide the item's score: its latent, category probabilities, the word pieces whose
    categories it names, the judged characters it covers, and the rule it came from."""

    latent: float
    categories: np.ndarray
    ids: Sequence[int]
    span: tuple[int, int] | None
    source: str


@dataclass(frozen=True)
class TurnRead:
    """A part of a refusing reply to read again: its text, where it starts in the reply, and whether it is read
    alone too (then it must be harmful in both readings)."""

    text: str
    shift: int
    alone: bool


@dataclass(frozen=True, eq=False)
class TurnPart:
    """One part of a refusing reply as read: with the question, and alone if its rule asks for it."""

    question: Scored
    alone: Scored | None


def _candidate(scored: Scored, source: str, span: bool) -> Candidate:
    return Candidate(scored.latent, scored.categories, scored.row.encoding.ids, scored.row.span() if span else None,
                     source)


def _score(latent: float, cuts: np.ndarray) -> float:
    return float(latent_to_score(np.array([latent]), cuts)[0])


# --- the rules: which parts of a refusing reply are read again ------------------------------------------------

def confident_continuations(whole: float, continuations: Sequence[tuple[int, str]],
                            policy: ReadingPolicy) -> list[TurnRead] | None:
    """A confident refusal: every later sentence on, with the question and alone."""
    if not policy.confident_refusal or whole < policy.confident_refusal_at:
        return None
    return [TurnRead(text, shift, True) for shift, text in continuations]


def turned_continuations(whole: float, opening: Sequence[float], continuations: Sequence[tuple[int, str]],
                         policy: ReadingPolicy) -> list[TurnRead] | None:
    """A reply that opens with a refusal: its next `turn_sentences` sentences on, with the question."""
    if not policy.turned_refusal:
        return None
    if whole < policy.compliance_refusal and not any(p >= policy.compliance_refusal for p in opening):
        return None
    return [TurnRead(text, shift, False) for shift, text in continuations[:policy.turn_sentences]]


def refusal_cuts(whole: float, prefixes: Sequence[str], policy: ReadingPolicy) -> list[TurnRead] | None:
    """A reply that refuses: without each of its last sentences, with the question and alone."""
    if not policy.refusal_cuts or whole < policy.compliance_refusal:
        return None
    return [TurnRead(text, 0, True) for text in prefixes]


def leaning_cut(whole: float, prefixes: Sequence[str], policy: ReadingPolicy) -> list[TurnRead] | None:
    """A reply that leans to refusal: without its last sentence, with the question and alone."""
    if not policy.leaning_cut or not policy.leaning_refusal_at <= whole < policy.compliance_refusal:
        return None
    return [TurnRead(text, 0, True) for text in prefixes[-1:]]


def turn_reads(whole: float, opening: Sequence[float], continuations: Sequence[tuple[int, str]],
               prefixes: Sequence[str], policy: ReadingPolicy) -> list[TurnRead]:
    """What the turn rules read of a reply (read in one pass) whose whole reading refuses with probability
    `whole` and whose first sentence alone with `opening`: continuations first, then cuts."""
    reads = (confident_continuations(whole, continuations, policy)
             or turned_continuations(whole, opening, continuations, policy) or [])
    return reads + (refusal_cuts(whole, prefixes, policy) or leaning_cut(whole, prefixes, policy) or [])


# --- the rules: candidates for the item's score ---------------------------------------------------------------

def counted_readings(parts: Sequence[Scored], policy: ReadingPolicy, cuts: np.ndarray) -> Sequence[Scored]:
    """The views and windows that count: all of them, or with `window_gate_score` set and the text read whole
    (every word piece in one row) under it, the whole readings and the windows reaching `window_alone_score`.

    Args:
        parts: the judged text's scored rows (its views read whole first, then its windows).
        policy: the gate's scores.
        cuts: the read-out's cut-points (latent to score).
    """
    whole = [p for p in parts if p.row.start == 0 and p.row.end == len(p.row.encoding.ids)]
    finite = np.isfinite([p.latent for p in parts]).all()  # a NaN anywhere fails the item
    if policy.window_gate_score > 0 and finite and whole and len(whole) < len(parts):
        if _score(max(p.latent for p in whole), cuts) < policy.window_gate_score:
            return [p for p in parts if p in whole or _score(p.latent, cuts) >= policy.window_alone_score]
    return parts


def riskiest_reading(parts: Sequence[Scored]) -> Candidate:
    """The judged text's riskiest view or window (the first if tied; a NaN wins, and fails the item)."""
    best = parts[int(np.argmax([p.latent for p in parts]))]
    return _candidate(best, "text", span=len(parts) > 1)


def turn_candidate(part: TurnPart, policy: ReadingPolicy, cuts: np.ndarray) -> Candidate | None:
    """A part of a refusing reply counts like a window if it does not refuse; one read alone too counts only if it
    refuses in neither reading and both reach `corroborated_score` (the lower reading counts)."""
    if part.question.refusal >= policy.compliance_refusal:
        return None
    latent = part.question.latent
    if part.alone is not None:
        if part.alone.refusal >= policy.compliance_refusal:
            return None
        latent = min(latent, part.alone.latent)
        if _score(latent, cuts) < policy.corroborated_score:
            return None
    return Candidate(latent, part.question.categories, part.question.row.encoding.ids, part.question.row.span(),
                     "turn")


def complied_request(request: Sequence[Scored], refusal: float | None, policy: ReadingPolicy,
                     cuts: np.ndarray) -> Candidate | None:
    """The riskiest reading of the request when the reply (refusal probability `refusal`) does not refuse a request
    the moderate regime blocks; None otherwise. A non-finite request reading is a NaN candidate (fails closed)."""
    if not policy.compliance or not request or refusal is None or refusal >= policy.compliance_refusal:
        return None
    latents = [r.latent for r in request]
    if not np.isfinite(latents).all():
        return Candidate(float("nan"), request[0].categories, request[0].row.encoding.ids, None, "request")
    best = request[int(np.argmax(latents))]
    if _score(best.latent, cuts) < policy.compliance_request_score:
        return None
    return _candidate(best, "request", span=False)


__all__ = ["DEFAULT_POLICY", "SWITCHES", "Candidate", "ReadingPolicy", "Row", "Scored", "TurnPart", "TurnRead",
           "complied_request", "counted_readings", "riskiest_reading", "turn_candidate", "turn_reads"]
