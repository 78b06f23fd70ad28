"""Token layout of the lite cross-encoder, shared by training and inference (one place, so they match).

Prompt mode: `[CLS] prompt [SEP]`, token types 0. Response mode: `[CLS] prompt-tail [SEP] reply [SEP]`,
types 0 then 1: the last `PROMPT_TAIL_TOKENS` of the prompt give the reply its context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROMPT_TAIL_TOKENS = 48
"""Prompt tokens kept as context in response mode (the end of the prompt: the latest request)."""
TRAIN_MAX_TOKENS = 128
"""Sequence length while training (inference windows are shorter: see the backend)."""


def assemble(judged: Sequence[int], context: Sequence[int] | None, *, cls: int, sep: int,
             max_tokens: int) -> tuple[list[int], list[int]]:
    """(input_ids, token_type_ids) for word-piece ids without specials; the judged text is cut at the end
    to fit `max_tokens`, the context keeps its last `PROMPT_TAIL_TOKENS`."""
    if context is None:
        body = list(judged[:max_tokens - 2])
        return [cls, *body, sep], [0] * (len(body) + 2)
    tail = list(context[-PROMPT_TAIL_TOKENS:]) if PROMPT_TAIL_TOKENS else []
    room = max(1, max_tokens - len(tail) - 3)
    reply = list(judged[:room])
    ids = [cls, *tail, sep, *reply, sep]
    return ids, [0] * (len(tail) + 2) + [1] * (len(reply) + 1)


def pad(rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
    """Right-pad a batch to its longest row: input_ids, attention_mask, token_type_ids (int64)."""
    width = max(len(ids) for ids, _ in rows)
    out = {name: np.zeros((len(rows), width), dtype=np.int64)
           for name in ("input_ids", "attention_mask", "token_type_ids")}
    for i, (ids, types) in enumerate(rows):
        out["input_ids"][i, :len(ids)] = ids
        out["attention_mask"][i, :len(ids)] = 1
        out["token_type_ids"][i, :len(types)] = types
    return out
