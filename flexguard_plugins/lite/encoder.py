"""The lite model at inference: the WordPiece tokenizer and an onnxruntime session over the int8 file.

Needs only onnxruntime, tokenizers and numpy; the ONNX files are built once into the cache by
`build.py` (torch is imported only there), and each is checked against the hash recorded when it was built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..text import decode_tags
from .base import WEIGHTS_DIR, load_tokenizer
from .build import build_onnx, read_built
from .inputs import pad


class TokenizerAdapter:
    """A `tokenizers.Tokenizer` behind the small slice of the Hugging Face tokenizer API the facade's
    chunker uses (`tok(text, add_special_tokens=False, return_offsets_mapping=True)`). Tag characters are
    counted as the ASCII they spell, as the scorer reads them (the tokenizer alone would drop them, and a
    100k-character tag text would reach the scorer as one unit)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text: str, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, **_: Any) -> dict[str, Any]:
        encoding = self._tokenizer.encode(decode_tags(text), add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": list(encoding.ids), "attention_mask": list(encoding.attention_mask)}
        if return_offsets_mapping:
            out["offset_mapping"] = list(encoding.offsets)
        return out


UNFUSED = ("SkipLayerNormFusion",)
"""onnxruntime graph fusions left out (measured slower on these models; see `Session`)."""
SMALL_ROW_TOKENS = 32
"""Rows this short batch together whatever their lengths: padding them costs less than another session call (a
reply's request and its first sentence, a few word pieces each)."""


class Session:
    """The merged model in onnxruntime: token rows → (latent z, category probabilities, refusal probability).

    `precision` "int8" (default; static QDQ, so a row's result does not depend on its batch) or "fp32".
    `threads`: intra-op threads (default: the cores, at most 4); `spin=True` keeps idle workers spinning
    (a little lower latency on cores the scorer has to itself, wasted CPU on a shared machine).
    `file`: open this ONNX file instead of the built one (to compare another recipe's file side by side).

    Raises:
        LiteIntegrityError: the base, the adapter or the built file differs from what was measured or built.
    """

    def __init__(self, precision: str = "int8", *, weights: Path = WEIGHTS_DIR, threads: int | None = None,
                 spin: bool = False, directory: Path | None = None, file: Path | None = None) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        import onnxruntime as ort

        paths = build_onnx(weights, directory)
        self.path = Path(file) if file is not None else paths[precision]
        self.cuts = read_built(paths, precision)  # checks the built file against its recorded hash
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # onnxruntime's fused SkipLayerNormalization was the slowest op after the int8 MatMuls here (12 % of the
        # time for 6 of the 13 LayerNorms); plain Add + LayerNormalization is 11.6 % faster per batch and a
        # little closer to fp32 (int8 vs fp32 latent: max |dz| 0.79 instead of 0.93).
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=list(UNFUSED))

    def run(self, rows: Sequence[tuple[list[int], list[int]]], *, batch_rows: int = 64,
            batch_tokens: int = 4096) -> dict[str, np.ndarray]:
        """All rows (order kept), batched by length: sorted, at most `batch_rows` rows and `batch_tokens`
        padded tokens per run, and no row padded to more than twice its length (a reply and its short request
        run as two small batches, not one twice the size) unless the batch is at most `SMALL_ROW_TOKENS` wide,
        so little padding is computed and short rows share one call. Identical rows are
        run once (a row's result does not depend on its neighbours): repeated text ("ha. " 30,000 times) costs
        one window, not 60,000."""
        first_of: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        inverse = np.array([first_of.setdefault((tuple(ids), tuple(types)), len(first_of)) for ids, types in rows],
                           dtype=np.int64)
        if len(first_of) < len(rows):
            unique = [(list(ids), list(types)) for ids, types in first_of]
            return {name: values[inverse] for name, values in self.run(unique, batch_rows=batch_rows,
                                                                       batch_tokens=batch_tokens).items()}
        n = len(rows)
        out = {"latent": np.zeros(n), "categories": np.zeros((n, 7)), "refusal": np.zeros(n)}
        order = np.argsort([len(ids) for ids, _ in rows], kind="stable")
        batches: list[list[int]] = [[]]
        for index in order:  # ascending length: the newest row is the widest of its batch
            width = len(rows[index][0])
            if batches[-1] and ((len(batches[-1]) + 1) * width > batch_tokens or len(batches[-1]) >= batch_rows
                                or width > max(2 * len(rows[batches[-1][0]][0]), SMALL_ROW_TOKENS)):
                batches.append([])
            batches[-1].append(int(index))
        for chunk in batches:
            if not chunk:
                continue
            latent, categories, refusal = self.session.run(None, pad([rows[i] for i in chunk]))
            out["latent"][chunk] = latent.reshape(-1)
            out["categories"][chunk] = categories
            out["refusal"][chunk] = refusal.reshape(-1)
        return out


__all__ = ["SMALL_ROW_TOKENS", "UNFUSED", "Session", "TokenizerAdapter", "load_tokenizer"]
