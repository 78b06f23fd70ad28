"""The rows that read one item under a `ReadingPolicy`: the first pass (`Plan`), and the parts of a refusing reply
the turn rules ask for (`TurnPlan`).

Rows are matched to their scores by identity (`Scored.row`), never by position in a shared list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from ..chunking import tail
from ..language import CONTEXT_CHARS_PER_TOKEN
from ..text import folded_view, undo_leet
from ..types import ModerationItem
from .encoder import TokenizerAdapter
from .inputs import PROMPT_TAIL_TOKENS, assemble
from .readings import ReadingPolicy, Row, Scored, TurnPart, TurnRead
from .turn import continuations
from .windows import views, windows

UNIT_TOKENS = 256
"""Word pieces of judged text per call; the facade splits longer text into overlapping units of this size."""
CONTEXT_CHARACTERS = 4000
"""Characters of the prompt's end tokenized as a reply's context (the model keeps its last `PROMPT_TAIL_TOKENS`)."""


@dataclass(frozen=True, eq=False)
class Plan:
    """The first pass's rows of one item, by role: the judged text (`parts`), in response mode the request (the
    prompt's end read as a prompt) and the reply's first sentence alone (`opening`, its refusal only); and what the
    turn rules may read next: the reply from each later sentence on (`continuations`: offset, text) and the reply
    cut before each of its last `turn_sentences` sentences (`prefixes`)."""

    parts: tuple[Row, ...]
    context: tuple[int, ...] | None = None
    request: tuple[Row, ...] = ()
    opening: tuple[Row, ...] = ()
    continuations: tuple[tuple[int, str], ...] = ()
    prefixes: tuple[str, ...] = ()

    @property
    def response(self) -> bool:
        return self.context is not None

    @property
    def rows(self) -> list[Row]:
        return [*self.parts, *self.request, *self.opening]

    def split(self, scored: Sequence[Scored]) -> tuple[tuple[Scored, ...], tuple[Scored, ...], tuple[Scored, ...]]:
        """(parts, request, opening) as scored."""
        by_row = {s.row: s for s in scored}
        return tuple(by_row[r] for r in self.parts), tuple(by_row[r] for r in self.request), tuple(
            by_row[r] for r in self.opening)


@dataclass(frozen=True, eq=False)
class TurnPlan:
    """The second pass's rows of one item: per part of a refusing reply, its rows with the question and alone."""

    pairs: tuple[tuple[Row, Row | None], ...]
    rows: tuple[Row, ...]
    """Every row, each part's rows with the question before its rows alone."""

    def split(self, scored: Sequence[Scored]) -> list[TurnPart]:
        by_row = {s.row: s for s in scored}
        return [TurnPart(by_row[q], by_row[a] if a is not None else None) for q, a in self.pairs]


class Reader:
    """Turns text into rows under a policy: every view, whole and (if long) in sentence windows.

    Args:
        tokenizer: the base model's word-piece tokenizer.
        policy: the reading rules' knobs and switches.
    """

    def __init__(self, tokenizer: Tokenizer, policy: ReadingPolicy) -> None:
        self.tokenizer = tokenizer
        self.adapter = TokenizerAdapter(tokenizer)
        self.policy = policy
        self.cls = tokenizer.token_to_id("[CLS]")
        self.sep = tokenizer.token_to_id("[SEP]")

    def read(self, text: str, context: Sequence[int] | None, shift: int = 0) -> tuple[Row, ...]:
        """The rows that read `text` (as a reply to `context` if given; `shift`: where it starts in the judged
        text)."""
        policy = self.policy
        limit = UNIT_TOKENS + policy.single_pass_tokens  # a unit from the facade fits; a direct caller's text is cut
        kept = len(context[-PROMPT_TAIL_TOKENS:]) if context else 0
        rows = []
        for view in views(text, visible=policy.visible_view, leet=policy.leet_view):
            encoding = self.tokenizer.encode(view.text, add_special_tokens=False)
            spans = (windows(encoding, view.text, window=policy.window_tokens, single_pass=policy.single_pass_tokens)
                     if policy.sentence_windows else [(0, len(encoding.ids))])
            for start, end in spans:
                end = min(end, start + limit)  # the row records what it read
                ids = encoding.ids[start:end]
                inputs = assemble(ids, context, cls=self.cls, sep=self.sep, max_tokens=len(ids) + 3 + kept)
                rows.append(Row(inputs, view, encoding, start, end, shift))
        return tuple(rows)

    def request_text(self, prompt: str) -> str:
        """The prompt's end a reply answers: its last `request_tokens` word pieces."""
        return tail(prompt[-CONTEXT_CHARS_PER_TOKEN * self.policy.request_tokens:], self.policy.request_tokens,
                    self.adapter)

    def plan(self, item: ModerationItem) -> Plan:
        """The first pass's rows for `item`."""
        policy = self.policy
        if item.response is None:
            return Plan(self.read(item.judged_text, None))
        # the context is read as in training: folded, leet undone (not `views`' second reading)
        context = tuple(self.tokenizer.encode(undo_leet(folded_view(item.prompt)[0])[-CONTEXT_CHARACTERS:],
                                              add_special_tokens=False).ids)
        parts = self.read(item.judged_text, context)
        request = self.read(self.request_text(item.prompt), None) if context and policy.compliance else ()
        if not policy.reads_turns or max(len(r.encoding.ids) for r in parts) > policy.single_pass_tokens:
            return Plan(parts, context, request)
        fold = parts[0].view  # `views` reads the fold view first, whole
        # every sentence start (a short reply has at most a few hundred), so the prefixes end near its end
        starts = continuations(item.judged_text, None, (fold.text, fold.starts))
        if not starts:
            return Plan(parts, context, request)
        opening = self.read(item.judged_text[:starts[0][0]], context) if policy.turned_refusal else ()
        prefixes = tuple(item.judged_text[:offset] for offset, _ in starts[-policy.turn_sentences:])
        return Plan(parts, context, request, opening, tuple(starts), prefixes)

    def turn(self, plan: Plan, reads: Sequence[TurnRead]) -> TurnPlan | None:
        """The rows that read `reads`, parts of `plan`'s reply: with the question, and alone where asked."""
        pairs: list[tuple[Row, Row | None]] = []
        rows: list[Row] = []
        for read in reads:
            question = self.read(read.text, plan.context, read.shift)
            alone = self.read(read.text, [], read.shift) if read.alone else ()
            pairs += zip(question, alone or (None,) * len(question), strict=True)
            rows += [*question, *alone]
        return TurnPlan(tuple(pairs), tuple(rows)) if pairs else None
