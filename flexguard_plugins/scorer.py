"""`FlexGuard`: the facade every wrapper uses. Sync and async, micro-batched, chunked, one backend a process.

The facade holds a handle's options and the scoring path (validation, chunking, cascade, policy); the
runtime under it (`runtime`: loop thread, engine, batcher, registry, timeouts) does the waiting.

Lifecycle rules (what wrappers rely on):

* `FlexGuard.load(...)` returns a new light *handle* each call. Handles with the same model, backend and
  backend options share one backend, event-loop thread and micro-batcher (the registry), whatever their
  facade defaults (strictness, on_error, shadow, max_batch_size, max_wait_ms, max_input_chars, cascade).
* `close()`/`aclose()` on a loaded handle releases that handle only; the backend closes when its last
  handle is closed. `with FlexGuard.load() as guard:` therefore never breaks another wrapper's guard.
* `FlexGuard(backend, ...)` built directly owns its backend: closing it closes the backend.
* Closing the backend answers every pending call at once: queued items become undecided ("guard closed")
  and follow on_error; batches already running get `CLOSE_GRACE_S` to finish. A call made after close
  raises `GuardClosedError` (a `RuntimeError`). No call waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .backends import Backend, backend_option_names, create_backend, resolve_backend_name, resolve_named_model
from .chunking import placed, renderer, riskiest, split_item
from .errors import GuardClosedError
from .policy import (
    OnError,
    Strictness,
    Thresholds,
    check_on_error,
    check_shadow,
    decide,
    near_a_line,
    resolve_strictness,
)
from .runtime import Engine, acquire, registry_key, release
from .text import fold, is_blank
from .types import Decision, ModerationItem, RiskScore, is_count, is_number

logger = logging.getLogger(__name__)
decision_log = logging.getLogger("flexguard_plugins.decisions")
"""Every Decision the facade makes, one INFO line each (score, threshold, categories, reason; never the text)."""
ItemLike = ModerationItem | Mapping[str, Any] | str

DEFAULT_MAX_INPUT_CHARS = 100_000
"""Longest judged text (characters) a facade scores by default (~25k tokens); longer is undecided."""
CHUNKS_PER_BATCH = 2
"""At most this many chunks of one long text ride in one backend batch: a short check arriving meanwhile
waits for about two chunk-scorings, not for the whole text (chunks are large, so this costs little)."""
FACADE_OPTIONS = ("strictness", "on_error", "shadow", "max_batch_size", "max_wait_ms", "max_input_chars", "cascade",
                  "cascade_margin")
"""The options of `FlexGuard.load` that shape a handle; the others go to the backend (and key the registry)."""


def checked_backend(model: str | None, backend: str, options: Mapping[str, Any]) -> str:
    """The backend `FlexGuard.load(model, backend, **options)` would build; facade options may be among `options`.

    Raises:
        TypeError: an option neither the facade nor that backend takes (the error names both lists).
    """
    name = resolve_backend_name(model, backend, options)
    known = backend_option_names(name)
    unknown = sorted(set(options) - set(FACADE_OPTIONS) - set(known)) if known is not None else []
    if unknown:
        raise TypeError(f"FlexGuard.load: unknown option {', '.join(map(repr, unknown))}; facade options: "
                        f"{', '.join(FACADE_OPTIONS)}; {name} backend options: {', '.join(known or ())}")
    return name


class FlexGuard:
    """Score and judge text with FlexGuard. Build with `FlexGuard.load(...)`.

    Concurrent callers are gathered into one backend batch (at most `max_batch_size` items): a free
    backend takes what is waiting at once (or after lingering `max_wait_ms`, default 0), fairly, one item
    per waiting caller in turn, so a short check is not stuck behind a long text's chunks. Text longer
    than the backend's budget (counted on what the model sees) is split into overlapping chunks; the
    riskiest chunk gives the item's score and `span` (in the judged text).

    Undecided items (they follow `on_error`: block, allow or raise), each by itself, never its neighbours:
      * empty input: the judged text is blank after normalisation (`text.is_blank`), reason "empty input";
      * input too long: the judged text has more than `max_input_chars` characters, as given or once folded
        (NFKC can turn one character into 18), reason "input too long"; in response mode only the prompt's
        end is kept as context;
      * the backend could not score it (a failing item is isolated by splitting its batch), did not answer
        within `batch_timeout_s` (the batch's items fail together), raised anything at all (BaseExceptions
        included), or answered something that is not a usable score (`RiskScore.checked`);
      * part of a chunked text could not be scored and the rest stays below the threshold (a chunk at or
        above the threshold flags the item whatever the other chunks did).
    Lone surrogates are replaced, NULs dropped and runs of combining marks made stream-safe at the door
    (`ModerationItem.coerce`). See the module docstring for sharing and closing.

    Args:
        backend: what scores (`flexguard_plugins.backends`); this guard owns it and closes it.
        strictness: the default policy of `check` calls (`policy.resolve_strictness` forms).
        on_error: what an undecided item becomes: "block", "allow" or "raise" (`UndecidedError`).
        shadow: record every decision and flag none (`Decision.would_flag` holds the verdict).
        max_batch_size: most items in one backend batch (None: the backend's).
        max_wait_ms: how long a free backend lingers for company before a batch starts.
        max_input_chars: longest judged text scored (None: no limit).
        cascade: a cheap guard that scores first; only items within `cascade_margin` of a line reach `backend`.
        cascade_margin: score points around a line within which the cascade escalates.
        batch_timeout_s: bound on one backend batch (None: the backend's attribute, else 600 s).

    Raises:
        ValueError: a bad option value, naming it.

    Example:
        >>> from flexguard_plugins import FlexGuard
        >>> with FlexGuard.load(strictness="strict") as guard:  # the embedded CPU scorer
        ...     guard.check("How do I bake bread?").flagged
        False
    """

    def __init__(self, backend: Backend, *, strictness: Strictness = "moderate", on_error: OnError = "block",
                 shadow: bool = False, max_batch_size: int | None = None, max_wait_ms: float = 0.0,
                 max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
                 cascade: FlexGuard | None = None, cascade_margin: float = 10.0,
                 batch_timeout_s: float | None = None) -> None:
        self._init(Engine(backend, batch_timeout_s=batch_timeout_s), strictness, on_error, shadow, max_batch_size,
                   max_wait_ms, max_input_chars, cascade, cascade_margin)

    def _init(self, engine: Engine, strictness: Strictness, on_error: OnError, shadow: bool,
              max_batch_size: int | None, max_wait_ms: float, max_input_chars: int | None,
              cascade: FlexGuard | None, cascade_margin: float) -> None:
        resolve_strictness(strictness)
        if max_batch_size is not None and (not is_count(max_batch_size) or max_batch_size < 1):
            raise ValueError(f"max_batch_size must be an integer ≥ 1, got {max_batch_size!r}")
        if max_input_chars is not None and (not is_count(max_input_chars) or max_input_chars < 1):
            raise ValueError(f"max_input_chars must be an integer ≥ 1 or None, got {max_input_chars!r}")
        # an infinite linger waits for a full batch forever; a NaN margin would never escalate
        if not is_number(max_wait_ms) or not 0 <= max_wait_ms < math.inf:
            raise ValueError(f"max_wait_ms must be a finite number ≥ 0, got {max_wait_ms!r}")
        if not is_number(cascade_margin) or not 0 <= cascade_margin < math.inf:
            raise ValueError(f"cascade_margin must be a finite number ≥ 0, got {cascade_margin!r}")
        self._engine = engine
        self.strictness = strictness
        self.on_error = check_on_error(on_error)
        self.shadow = check_shadow(shadow, self.on_error)
        """Shadow mode: every Decision is recorded (`flexguard_plugins.decisions`) and none flags."""
        if self.shadow:
            logger.warning("FlexGuard in shadow mode: decisions are recorded, nothing is blocked")
        self.max_batch_size = max_batch_size or engine.backend.max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_input_chars = max_input_chars
        self.cascade = cascade
        self.cascade_margin = float(cascade_margin)
        self._owns_cascade = False
        self.closed = False

    @property
    def backend(self) -> Backend:
        return self._engine.backend

    @property
    def batch_timeout_s(self) -> float:
        """Seconds one backend batch may take before its items fail (shared by every handle on the backend)."""
        return self._engine.batch_timeout_s

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, backend: str = "auto", *, strictness: Strictness = "moderate",
             on_error: OnError = "block", shadow: bool = False, max_batch_size: int | None = None,
             max_wait_ms: float = 0.0, max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
             cascade: str | None = None, cascade_margin: float = 10.0, **backend_options: Any) -> FlexGuard:
        """A handle on the process-wide backend for these backend options (built on first use, then shared).

        Concurrent first loads of one key build it once; from async code use `aload`, which builds off the
        event loop. The facade options are those of `FlexGuard(...)`, except:

        Args:
            model: a hub id, a local folder, "flexguard-smollm2" (the small model trained here, built at first
                use with the options it was measured with) or None (the embedded CPU scorer).
            backend: auto, transformers, vllm, openai or lite (`backends.resolve_backend_name` reads auto).
            cascade: "lite": score with the embedded scorer first and send only items within `cascade_margin`
                points of the active threshold to the model.
            **backend_options: go to the backend only (reasoning, base_url, dtype, …) and select which shared
                backend the handle uses.

        Raises:
            TypeError: an option neither the facade nor this backend takes (the error names both lists).
            ValueError: a bad option value or backend name.
        """
        model, backend_options = resolve_named_model(model, backend, backend_options)
        name = checked_backend(model, backend, backend_options)
        if cascade is not None and cascade != "lite":
            raise ValueError(f"cascade must be 'lite' or None, got {cascade!r}")
        if cascade is not None and name == "lite":
            raise ValueError("cascade='lite' needs an LLM model to escalate to")
        engine = acquire(registry_key(model, name, backend_options),
                         lambda: create_backend(name, model, **backend_options))
        guard, cheap = cls.__new__(cls), None
        try:
            cheap = cls.load() if cascade is not None else None
            guard._init(engine, strictness, on_error, shadow, max_batch_size, max_wait_ms, max_input_chars, cheap,
                        cascade_margin)
        except BaseException:
            if cheap is not None:
                cheap.close()
            if release(engine):
                engine.close()
            raise
        guard._owns_cascade = cheap is not None
        return guard

    @classmethod
    async def aload(cls, model: str | None = None, backend: str = "auto", **options: Any) -> FlexGuard:
        """`load` (same arguments) for async code: a cold load (seconds to minutes) runs in a worker thread."""
        return await asyncio.to_thread(cls.load, model, backend, **options)

    # --- the scoring path ---------------------------------------------------------------------

    def _unjudgeable(self, item: ModerationItem) -> str | None:
        """Why `item` cannot be judged at all, or None."""
        judged = item.judged_text
        bounds = (("max_input_chars={:,}", self.max_input_chars),
                  ("max_judged_chars={:,} (the longest text the model was measured on)", self.backend.max_judged_chars))
        for bound, limit in ((bound.format(limit), limit) for bound, limit in bounds if limit is not None):
            if len(judged) > limit:
                return f"input too long: {len(judged):,} characters > {bound}; not judged"
            if not judged.isascii() and len(fold(judged)) > limit:
                # what a scorer reads is the folded text: "\ufdfa" is one character but 18 once folded
                return f"input too long: {len(fold(judged)):,} characters once normalised > {bound}; not judged"
        if is_blank(judged):
            return "empty input: nothing to judge" + ("" if item.response is None else " (the response is empty)")
        return self.backend.unreadable(item)

    async def _score_on_loop(self, items: list[ModerationItem], strictness: Strictness) -> list[RiskScore]:
        """Score through the cascade when there is one: the cheap scorer decides what is far from the line."""
        if self.cascade is None:
            return await self._score_with_backend(items)
        thresholds = resolve_strictness(strictness)  # a check passes it resolved: then this returns it as is
        first = await self.cascade.ascore_batch(items, thresholds)
        escalate = [i for i, risk in enumerate(first) if not risk.ok or risk.partial_error is not None
                    or near_a_line(risk, thresholds, self.cascade_margin)]
        if escalate:
            second = await self._score_with_backend([items[i] for i in escalate])
            for i, risk in zip(escalate, second, strict=True):
                first[i] = risk
        return first

    async def _score_with_backend(self, items: list[ModerationItem]) -> list[RiskScore]:
        backend = self.backend
        render = renderer(backend.tokenizer)
        whole: list[tuple[int, ModerationItem]] = []
        chunked: list[list[tuple[int, ModerationItem, int | None]]] = []
        results: list[RiskScore | None] = [None] * len(items)
        for index, item in enumerate(items):
            problem = self._unjudgeable(item)
            if problem is not None:
                results[index] = RiskScore.failure(problem, scorer=backend.name)
                continue
            units = split_item(item, backend.max_content_tokens, backend.tokenizer, render=render,
                               max_context_tokens=backend.max_context_tokens, max_input_chars=self.max_input_chars,
                               full_last=backend.full_last_chunk)
            if len(units) == 1:
                whole.append((index, units[0][0]))
            else:
                chunked.append([(index, unit, start) for unit, start in units])
        # Whole items go as one submission; each long text as its own, a few chunks per batch (fairness).
        batcher, wait_s = self._engine.batcher(), self.max_wait_ms / 1000
        submissions = [batcher.submit([unit for _, unit in whole], max_batch_size=self.max_batch_size,
                                      max_wait_s=wait_s)]
        submissions += [batcher.submit([unit for _, unit, _ in parts], max_batch_size=self.max_batch_size,
                                       max_wait_s=wait_s, share=CHUNKS_PER_BATCH) for parts in chunked]
        answers = await asyncio.gather(*submissions)
        owners = [(index, unit, None) for index, unit in whole] + [part for parts in chunked for part in parts]
        per_item: dict[int, list[RiskScore]] = {}
        for (index, unit, start), risk in zip(owners, [r for answer in answers for r in answer], strict=True):
            risk = risk if risk.scorer else risk.with_(scorer=backend.name)
            per_item.setdefault(index, []).append(placed(risk, unit, start))
        for index, risks in per_item.items():
            results[index] = riskiest(risks)
        return [r for r in results if r is not None]

    # --- async API ----------------------------------------------------------------------------

    def _live(self) -> None:
        if self.closed:
            raise GuardClosedError("this FlexGuard is closed")

    async def ascore_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        """Scores for `items`, in order. `strictness` matters only to a cascade (which items to escalate)."""
        self._live()
        coerced = ModerationItem.coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return await self._engine.run_async(self._score_on_loop(coerced, strictness))

    async def ascore(self, prompt: str, response: str | None = None) -> RiskScore:
        return (await self.ascore_batch([ModerationItem.coerce({"prompt": prompt, "response": response})]))[0]

    async def acheck_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                           on_error: OnError | None = None, shadow: bool | None = None) -> list[Decision]:
        thresholds, on_error, shadow = self._policy(strictness, on_error, shadow)
        risks = await self.ascore_batch(items, thresholds)
        return [_recorded(decide(risk, thresholds, on_error, shadow=shadow)) for risk in risks]

    async def acheck(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
                     on_error: OnError | None = None, shadow: bool | None = None) -> Decision:
        item = {"prompt": prompt, "response": response}
        return (await self.acheck_batch([item], strictness, on_error, shadow))[0]

    # --- sync API -----------------------------------------------------------------------------

    def score_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        self._live()
        coerced = ModerationItem.coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return self._engine.run_sync(self._score_on_loop(coerced, strictness))

    def score(self, prompt: str, response: str | None = None) -> RiskScore:
        return self.score_batch([{"prompt": prompt, "response": response}])[0]

    def check_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                    on_error: OnError | None = None, shadow: bool | None = None) -> list[Decision]:
        thresholds, on_error, shadow = self._policy(strictness, on_error, shadow)
        risks = self.score_batch(items, thresholds)
        return [_recorded(decide(risk, thresholds, on_error, shadow=shadow)) for risk in risks]

    def check(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
              on_error: OnError | None = None, shadow: bool | None = None) -> Decision:
        return self.check_batch([{"prompt": prompt, "response": response}], strictness, on_error, shadow)[0]

    def _policy(self, strictness: Strictness | None, on_error: OnError | None,
                shadow: bool | None) -> tuple[Thresholds, OnError, bool]:
        """The call's policy, resolved once and validated before scoring (a bad option costs no model time)."""
        thresholds = resolve_strictness(self.strictness if strictness is None else strictness)
        on_error = check_on_error(self.on_error if on_error is None else on_error)
        return thresholds, on_error, check_shadow(self.shadow if shadow is None else shadow, on_error)

    # --- lifecycle ----------------------------------------------------------------------------

    def _release(self) -> Engine | None:
        """Mark this handle closed; the engine to close when this was its last user."""
        if self.closed:
            return None
        self.closed = True
        return self._engine if release(self._engine) else None

    async def aclose(self) -> None:
        """Release this handle (and its cascade); the backend closes with its last handle."""
        engine = self._release()
        if engine is not None:
            await engine.aclose()
        if self._owns_cascade and self.cascade is not None:
            await self.cascade.aclose()

    def close(self) -> None:
        """Release this handle (and its cascade); the backend closes with its last handle."""
        engine = self._release()
        if engine is not None:
            engine.close()
        if self._owns_cascade and self.cascade is not None:
            self.cascade.close()

    def __enter__(self) -> FlexGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> FlexGuard:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FlexGuard({self.backend.describe()}, strictness={self.strictness!r}, on_error={self.on_error!r})"


def _recorded(decision: Decision) -> Decision:
    decision_log.info("%s", decision.reason)
    return decision


def shared_guard(guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                 reasoning: bool | None = None, **options: Any) -> FlexGuard:
    """What wrappers call: the guard they were given, or a handle on the process-wide one for these options
    (`options` as `FlexGuard.load` takes them). `reasoning` reaches the backend only when a model is set: the
    embedded scorer has no reasoning mode."""
    if guard is not None:
        return guard
    if model is not None and reasoning is not None:
        options["reasoning"] = reasoning
    return FlexGuard.load(model, backend, **options)


async def ashared_guard(guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                        reasoning: bool | None = None, **options: Any) -> FlexGuard:
    """`shared_guard` for async code (a NeMo action): a cold load runs off the event loop."""
    if guard is not None:
        return guard
    return await asyncio.to_thread(shared_guard, None, model, backend, reasoning, **options)
