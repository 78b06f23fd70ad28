"""`FlexGuard`: the facade every wrapper uses. Sync and async, micro-batched, chunked, one backend a process.

Lifecycle rules (what wrappers rely on):

* `FlexGuard.load(...)` returns a new light *handle* each call. Handles with the same model, backend and
  backend options share one backend, event-loop thread and micro-batcher (the registry), whatever their
  facade defaults (strictness, on_error, max_batch_size, max_wait_ms, max_input_chars, cascade).
* `close()`/`aclose()` on a loaded handle releases that handle only; the backend closes when its last
  handle is closed. `with FlexGuard.load() as guard:` therefore never breaks another wrapper's guard.
* `FlexGuard(backend, ...)` built directly owns its backend: closing it closes the backend.
* Closing the backend answers every pending call at once: queued items become undecided ("guard closed")
  and follow on_error; batches already running get `CLOSE_GRACE_S` to finish. A call made after close
  raises RuntimeError. No call waits forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from numbers import Integral, Real
from typing import Any, TypeVar

from .backends import Backend, create_backend
from .batching import MicroBatcher
from .chunking import Render, chunk_spans, tail
from .policy import OnError, Strictness, Thresholds, check_on_error, check_shadow, decide, resolve_strictness
from .prompts import forgery_tokens, neutralize_mapped
from .text import fold, is_blank
from .types import Decision, ModerationItem, RiskScore, merge_peaks

T = TypeVar("T")
logger = logging.getLogger(__name__)
decision_log = logging.getLogger("flexguard_plugins.decisions")
"""Every Decision the facade makes, one INFO line each (score, threshold, categories, reason; never the text)."""
ItemLike = ModerationItem | Mapping[str, Any] | str

DEFAULT_MAX_INPUT_CHARS = 100_000
"""Longest judged text (characters) a facade scores by default (~25k tokens); longer is undecided."""
CHUNKS_PER_BATCH = 2
"""At most this many chunks of one long text ride in one backend batch: a short check arriving meanwhile
waits for about two chunk-scorings, not for the whole text (chunks are large, so this costs little)."""
DEFAULT_BATCH_TIMEOUT_S = 600.0
"""Longest one backend batch may take before its items fail ("backend did not answer"): generous, so that a
reasoning batch on a slow GPU finishes, but a hung server or engine never holds callers forever. A backend
may set its own `batch_timeout_s` attribute; `FlexGuard(backend, batch_timeout_s=...)` overrides both."""
CLOSE_GRACE_S = 5.0
"""How long closing waits for batches already inside the backend before failing their items."""
_POLL_S = 0.25
"""Sync callers wake this often to notice that the guard's loop is gone."""
FACADE_OPTIONS = ("strictness", "on_error", "shadow", "max_batch_size", "max_wait_ms", "max_input_chars", "cascade",
                  "cascade_margin")
"""`load` options that shape a facade; every other option goes to the backend (and keys the registry)."""

_REGISTRY: dict[tuple[Any, ...], _Engine] = {}
_REGISTRY_LOCK = threading.Lock()
_BUILD_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}


class _LoopThread:
    """A private event loop in a daemon thread: the batcher lives here, sync calls hop onto it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="flexguard-loop", daemon=True)
        self._outstanding: set[Future[Any]] = set()
        self._guard = threading.Lock()
        self._thread.start()

    def _run(self) -> None:
        self.loop.run_forever()
        # Stopped. Tasks still pending (a batch that outlived the close) are cancelled and finished here,
        # so they answer their callers and are not torn down later by the garbage collector.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=CLOSE_GRACE_S))

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._guard:
            self._outstanding.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._guard:
            self._outstanding.discard(future)

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the loop; whatever was still submitted to it fails with a clear error instead of hanging."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop():
            self._thread.join(timeout=5)
        with self._guard:
            left = list(self._outstanding)
        for future in left:
            try:
                future.set_exception(RuntimeError("FlexGuard closed while this call was pending"))
            except concurrent.futures.InvalidStateError:
                pass


def _wait(future: Future[T], loop_thread: _LoopThread) -> T:
    """`future.result()` with a way out: if the guard's loop dies, raise instead of waiting forever."""
    while True:
        try:
            return future.result(timeout=_POLL_S)
        except concurrent.futures.TimeoutError:
            if not loop_thread.alive:
                future.cancel()
                raise RuntimeError("FlexGuard closed while this call was waiting") from None


class _Engine:
    """One backend with its event-loop thread and micro-batcher, shared by every facade over it."""

    def __init__(self, backend: Backend, key: tuple[Any, ...] | None = None,
                 batch_timeout_s: float | None = None) -> None:
        self.backend = backend
        self.key = key
        self.batch_timeout_s = (getattr(backend, "batch_timeout_s", DEFAULT_BATCH_TIMEOUT_S)
                                if batch_timeout_s is None else batch_timeout_s)
        if not _is_number(self.batch_timeout_s) or not self.batch_timeout_s > 0:
            raise ValueError(f"batch_timeout_s must be a number > 0, got {self.batch_timeout_s!r}")
        self.users = 1
        self.closed = False
        self._loop_thread: _LoopThread | None = None
        self._batcher: MicroBatcher[ModerationItem, RiskScore] | None = None
        self._lock = threading.Lock()
        self._closing: asyncio.Task[None] | None = None

    def loop_for(self, coro: Coroutine[Any, Any, Any]) -> _LoopThread:
        """The engine's loop (started on first use); closes `coro` unrun when the engine is closed."""
        with self._lock:
            if not self.closed and self._loop_thread is None:
                self._loop_thread = _LoopThread()
            if self.closed or self._loop_thread is None:
                coro.close()
                raise RuntimeError("this FlexGuard is closed")
            return self._loop_thread

    def batcher(self) -> MicroBatcher[ModerationItem, RiskScore]:
        """Created on the engine's loop, on first use."""
        if self._batcher is None:
            self._batcher = MicroBatcher(
                self._score_batch,
                on_failure=lambda message: RiskScore.failure(message, scorer=self.backend.name),
                max_batch_size=self.backend.max_batch_size,
                max_concurrency=self.backend.max_concurrent_batches,
                batch_timeout_s=self.batch_timeout_s,
            )
        return self._batcher

    async def _score_batch(self, items: list[ModerationItem]) -> list[RiskScore]:
        """The backend's answers, each one checked: None or a NaN score with ok=True fails that item."""
        return [RiskScore.checked(result, self.backend.name) for result in await self.backend.score_batch(items)]

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop_for(coro)
        if loop.in_loop():
            coro.close()
            raise RuntimeError("sync FlexGuard call from inside its own event loop; use the async form")
        return _wait(loop.submit(coro), loop)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop_for(coro)
        if loop.in_loop():
            return await coro
        return await asyncio.wrap_future(loop.submit(coro))

    def _begin_close(self) -> _LoopThread | None:
        """Mark closed; the loop the caller must wait on, or None when there is nothing to wait for
        (already closed, or called from the loop itself, where the close is scheduled instead)."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()  # to run the backend's aclose
            loop = self._loop_thread
        if loop.in_loop():
            self._close_later(loop)
            return None
        return loop

    async def _close_on_loop(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose(CLOSE_GRACE_S)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:  # callers whose items were just answered finish their coroutines before the loop stops
            await asyncio.wait(others, timeout=1.0)
        try:
            await asyncio.wait_for(self.backend.aclose(), CLOSE_GRACE_S)
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - closing must not fail the caller
            pass

    def _close_later(self, loop: _LoopThread) -> None:
        """Closing from code on the engine's own loop (a backend closing its guard mid-batch): waiting there
        would wait for ourselves, so the close runs as its own task and ends once that batch has returned."""
        self._closing = loop.loop.create_task(self._close_on_loop())
        self._closing.add_done_callback(lambda _: loop.stop())

    def close(self) -> None:
        loop = self._begin_close()
        if loop is None:
            return
        try:
            loop.submit(self._close_on_loop()).result(timeout=3 * CLOSE_GRACE_S)
        except (Exception, concurrent.futures.TimeoutError):  # noqa: BLE001
            pass
        loop.stop()

    async def aclose(self) -> None:
        loop = self._begin_close()
        if loop is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(loop.submit(self._close_on_loop())), 3 * CLOSE_GRACE_S)
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001
            pass
        await asyncio.to_thread(loop.stop)


def _release(engine: _Engine) -> bool:
    """Drop one user of `engine`; True when it was the last (the caller then closes it)."""
    with _REGISTRY_LOCK:
        engine.users -= 1
        if engine.users > 0:
            return False
        if engine.key is not None and _REGISTRY.get(engine.key) is engine:
            del _REGISTRY[engine.key]
        return True


def _resolve_backend_name(model: str | None, backend: str, options: Mapping[str, Any]) -> str:
    if backend != "auto":
        return backend
    if model is None:
        return "lite"
    if options.get("base_url"):
        return "openai"
    try:
        import torch
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            return "vllm"
    except ImportError:
        pass
    return "transformers"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


class FlexGuard:
    """Score and judge text with FlexGuard. Build with `FlexGuard.load(...)`.

    Concurrent callers are gathered into one backend batch (at most `max_batch_size` items): a free
    backend takes what is waiting at once (or after lingering `max_wait_ms`, default 0), fairly, one item
    per waiting caller in turn, so a short check is not stuck behind a long text's chunks. Text longer
    than the backend's budget (counted on what the model sees) is split into overlapping chunks; the
    riskiest chunk gives the item's score and `span` (in the judged text).

    Undecided items (they follow `on_error`: block, allow or raise), each by itself, never its neighbours:
      * empty input: the judged text is blank after normalisation (white space, zero-width/format
        characters, NULs only; `text.is_blank`), reason "empty input";
      * input too long: the judged text has more than `max_input_chars` characters (default 100,000;
        None for no limit), as given or once folded (NFKC can turn one character into 18), reason "input
        too long"; in response mode only the prompt's end is kept as context;
      * the backend could not score it (a failing item is isolated by splitting its batch), did not answer
        within `batch_timeout_s` (default `DEFAULT_BATCH_TIMEOUT_S`, 600 s; the batch's items fail together),
        raised anything at all (BaseExceptions included), or answered something that is not a usable score
        (None, NaN or out of range with ok=True: `RiskScore.checked`);
      * part of a chunked text could not be scored and the rest stays below the threshold (a chunk at or
        above the threshold flags the item whatever the other chunks did).
    Lone surrogates are replaced, NULs dropped and runs of combining marks made stream-safe at the door
    (`ModerationItem.coerce`).
    See the module docstring for sharing and closing.
    """

    def __init__(self, backend: Backend, *, strictness: Strictness = "moderate", on_error: OnError = "block",
                 shadow: bool = False, max_batch_size: int | None = None, max_wait_ms: float = 0.0,
                 max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
                 cascade: FlexGuard | None = None, cascade_margin: float = 10.0,
                 batch_timeout_s: float | None = None) -> None:
        engine = _Engine(backend, batch_timeout_s=batch_timeout_s)
        self._init(engine, strictness=strictness, on_error=on_error, shadow=shadow, max_batch_size=max_batch_size,
                   max_wait_ms=max_wait_ms, max_input_chars=max_input_chars, cascade=cascade,
                   cascade_margin=cascade_margin)

    def _init(self, engine: _Engine, *, strictness: Strictness = "moderate", on_error: OnError = "block",
              shadow: bool = False, max_batch_size: int | None = None, max_wait_ms: float = 0.0,
              max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
              cascade: FlexGuard | None = None, cascade_margin: float = 10.0) -> None:
        resolve_strictness(strictness)
        if max_batch_size is not None and (not _is_count(max_batch_size) or max_batch_size < 1):
            raise ValueError(f"max_batch_size must be an integer ≥ 1, got {max_batch_size!r}")
        if max_input_chars is not None and (not _is_count(max_input_chars) or max_input_chars < 1):
            raise ValueError(f"max_input_chars must be an integer ≥ 1 or None, got {max_input_chars!r}")
        # an infinite linger waits for a full batch forever; a NaN margin would never escalate
        if not _is_number(max_wait_ms) or not 0 <= max_wait_ms < math.inf:
            raise ValueError(f"max_wait_ms must be a finite number ≥ 0, got {max_wait_ms!r}")
        if not _is_number(cascade_margin) or not 0 <= cascade_margin < math.inf:
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
        """A cheap guard that scores first; only items within `cascade_margin` of the threshold reach `backend`."""
        self.cascade_margin = float(cascade_margin)
        self._owns_cascade = False
        self.closed = False

    @property
    def backend(self) -> Backend:
        return self._engine.backend

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, backend: str = "auto", **options: Any) -> FlexGuard:
        """A handle on the process-wide backend for these backend options (built on first use, then shared).

        `model`: a hub id or a local folder (None: the embedded CPU scorer). `backend`: auto,
        transformers, vllm, openai or lite. Facade options (`FACADE_OPTIONS`): strictness, on_error,
        max_batch_size, max_wait_ms, max_input_chars, cascade ("lite": score with the embedded scorer first
        and send only items within cascade_margin points of the active threshold to the model),
        cascade_margin. Everything else goes to the backend (reasoning, base_url, dtype, …) and selects
        which shared backend the handle uses. Concurrent first loads of one key build it once; from async
        code use `aload`, which builds off the event loop.
        """
        name = _resolve_backend_name(model, backend, options)
        facade = {k: options[k] for k in FACADE_OPTIONS if k in options}
        backend_options = {k: v for k, v in options.items() if k not in FACADE_OPTIONS}
        cascade = facade.get("cascade")
        if cascade is not None and cascade != "lite":
            raise ValueError(f"cascade must be 'lite' or None, got {cascade!r}")
        if cascade is not None and name == "lite":
            raise ValueError("cascade='lite' needs an LLM model to escalate to")
        engine = _acquire((model, name, _freeze(backend_options)),
                          lambda: create_backend(name, model, **backend_options))
        guard = cls.__new__(cls)
        try:
            if cascade is not None:
                facade["cascade"] = cls.load()
            guard._init(engine, **facade)
        except BaseException:
            if isinstance(facade.get("cascade"), FlexGuard):
                facade["cascade"].close()
            if _release(engine):
                engine.close()
            raise
        guard._owns_cascade = cascade is not None
        return guard

    @classmethod
    async def aload(cls, model: str | None = None, backend: str = "auto", **options: Any) -> FlexGuard:
        """`load` for async code: a cold load (seconds to minutes) runs in a worker thread, not on the loop."""
        return await asyncio.to_thread(cls.load, model, backend, **options)

    # --- the scoring path ---------------------------------------------------------------------

    def _render(self) -> Render | None:
        """What the backend does to judged text before the model sees it (LLM backends neutralise it)."""
        tokenizer = self.backend.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return None
        tokens = forgery_tokens(tokenizer)
        return lambda text: neutralize_mapped(text, tokens)

    def _unjudgeable(self, item: ModerationItem) -> str | None:
        """Why `item` cannot be judged at all, or None."""
        judged, limit = item.judged_text, self.max_input_chars
        if limit is not None and len(judged) > limit:
            return f"input too long: {len(judged):,} characters > max_input_chars={limit:,}; not judged"
        if limit is not None and not judged.isascii() and len(fold(judged)) > limit:
            # what a scorer reads is the folded text: "\ufdfa" is one character but 18 once folded
            return (f"input too long: {len(fold(judged)):,} characters once normalised > "
                    f"max_input_chars={limit:,}; not judged")
        if is_blank(judged):
            return "empty input: nothing to judge" + ("" if item.response is None else " (the response is empty)")
        return None

    def _chunks(self, item: ModerationItem, render: Render | None) -> list[tuple[ModerationItem, int | None]]:
        """The units to score for `item`, each with where its judged text starts (None: not chunked)."""
        budget = self.backend.max_content_tokens
        prompt = item.prompt
        if item.response is not None and self.max_input_chars is not None:
            prompt = prompt[-self.max_input_chars:]  # context: only its end matters
        if budget is None:
            return [(ModerationItem(prompt, item.response), None)]
        tokenizer = self.backend.tokenizer
        if item.response is None:
            spans = chunk_spans(prompt, budget, tokenizer, render=render)
            if len(spans) == 1:
                return [(item, None)]
            return [(ModerationItem(prompt[a:b]), a) for a, b in spans]
        context = tail(prompt, self.backend.max_context_tokens or max(8, budget // 4), tokenizer, render=render)
        spans = chunk_spans(item.response, budget, tokenizer, render=render)
        if len(spans) == 1:
            return [(ModerationItem(context, item.response), None)]
        return [(ModerationItem(context, item.response[a:b]), a) for a, b in spans]

    async def _score_on_loop(self, items: list[ModerationItem], strictness: Strictness) -> list[RiskScore]:
        """Score through the cascade when there is one: the cheap scorer decides what is far from the line."""
        if self.cascade is None:
            return await self._score_with_backend(items)
        thresholds = resolve_strictness(strictness)
        first = await self.cascade.ascore_batch(items)
        escalate = [
            i for i, risk in enumerate(first)
            if not risk.ok or risk.partial_error is not None
            or _near_a_line(risk, thresholds, self.cascade_margin)
        ]
        if escalate:
            second = await self._score_with_backend([items[i] for i in escalate])
            for i, risk in zip(escalate, second, strict=True):
                first[i] = risk
        return first

    async def _score_with_backend(self, items: list[ModerationItem]) -> list[RiskScore]:
        name = self.backend.name
        render = self._render()
        whole: list[tuple[int, ModerationItem]] = []
        chunked: list[list[tuple[int, ModerationItem, int | None]]] = []
        results: list[RiskScore | None] = [None] * len(items)
        for index, item in enumerate(items):
            problem = self._unjudgeable(item)
            if problem is not None:
                results[index] = RiskScore.failure(problem, scorer=name)
                continue
            chunks = self._chunks(item, render)
            if len(chunks) == 1:
                whole.append((index, chunks[0][0]))
            else:
                chunked.append([(index, unit, start) for unit, start in chunks])
        # Whole items go as one submission; each long text as its own, a few chunks per batch (fairness).
        batcher, wait_s = self._engine.batcher(), self.max_wait_ms / 1000
        submissions = [batcher.submit([unit for _, unit in whole], max_batch_size=self.max_batch_size,
                                      max_wait_s=wait_s)]
        submissions += [batcher.submit([unit for _, unit, _ in parts], max_batch_size=self.max_batch_size,
                                       max_wait_s=wait_s, share=CHUNKS_PER_BATCH) for parts in chunked]
        answers = await asyncio.gather(*submissions)
        owners = [(index, unit, None) for index, unit in whole] + [part for parts in chunked for part in parts]
        scored = [risk for answer in answers for risk in answer]
        per_item: dict[int, list[RiskScore]] = {}
        for (index, unit, start), risk in zip(owners, scored, strict=True):
            if not risk.scorer:
                risk = risk.with_(scorer=name)
            if start is not None:  # a backend's own span is relative to the unit it was given
                local = risk.span or (0, len(unit.judged_text))
                risk = risk.with_(span=(start + local[0], start + local[1]))
            per_item.setdefault(index, []).append(risk)
        for index, risks in per_item.items():
            results[index] = _riskiest(risks)
        return [r for r in results if r is not None]

    # --- async API ----------------------------------------------------------------------------

    def _live(self) -> None:
        if self.closed:
            raise RuntimeError("this FlexGuard is closed")

    async def ascore_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        """Scores for `items`, in order. `strictness` matters only to a cascade (which items to escalate)."""
        self._live()
        coerced = _coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return await self._engine.run_async(self._score_on_loop(coerced, strictness))

    async def ascore(self, prompt: str, response: str | None = None) -> RiskScore:
        return (await self.ascore_batch([ModerationItem.coerce({"prompt": prompt, "response": response})]))[0]

    async def acheck_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                           on_error: OnError | None = None, shadow: bool | None = None) -> list[Decision]:
        strictness, on_error, shadow = self._policy(strictness, on_error, shadow)
        risks = await self.ascore_batch(items, strictness)
        return [_recorded(decide(risk, strictness, on_error, shadow=shadow)) for risk in risks]

    async def acheck(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
                     on_error: OnError | None = None, shadow: bool | None = None) -> Decision:
        item = {"prompt": prompt, "response": response}
        return (await self.acheck_batch([item], strictness, on_error, shadow))[0]

    # --- sync API -----------------------------------------------------------------------------

    def score_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        self._live()
        coerced = _coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return self._engine.run_sync(self._score_on_loop(coerced, strictness))

    def score(self, prompt: str, response: str | None = None) -> RiskScore:
        return self.score_batch([{"prompt": prompt, "response": response}])[0]

    def check_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                    on_error: OnError | None = None, shadow: bool | None = None) -> list[Decision]:
        strictness, on_error, shadow = self._policy(strictness, on_error, shadow)
        risks = self.score_batch(items, strictness)
        return [_recorded(decide(risk, strictness, on_error, shadow=shadow)) for risk in risks]

    def check(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
              on_error: OnError | None = None, shadow: bool | None = None) -> Decision:
        return self.check_batch([{"prompt": prompt, "response": response}], strictness, on_error, shadow)[0]

    def _policy(self, strictness: Strictness | None, on_error: OnError | None,
                shadow: bool | None) -> tuple[Strictness, OnError, bool]:
        """Validate before scoring, so a bad option fails fast and no model time is spent."""
        strictness = self.strictness if strictness is None else strictness
        resolve_strictness(strictness)
        on_error = check_on_error(self.on_error if on_error is None else on_error)
        return strictness, on_error, check_shadow(self.shadow if shadow is None else shadow, on_error)

    # --- lifecycle ----------------------------------------------------------------------------

    def _release(self) -> _Engine | None:
        """Mark this handle closed; the engine to close when this was its last user."""
        if self.closed:
            return None
        self.closed = True
        return self._engine if _release(self._engine) else None

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


def _acquire(key: tuple[Any, ...], build: Any) -> _Engine:
    """The registered engine for `key`, one more user; built once (under a per-key lock) when missing."""
    with _REGISTRY_LOCK:
        lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _REGISTRY_LOCK:
            engine = _REGISTRY.get(key)
            if engine is not None and not engine.closed:
                engine.users += 1
                return engine
        engine = _Engine(build(), key)  # outside the registry lock: other keys load meanwhile
        with _REGISTRY_LOCK:
            _REGISTRY[key] = engine
        return engine


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _coerce_all(items: Iterable[ItemLike]) -> list[ModerationItem]:
    """Validate every item before any is scored; the error names the bad one."""
    if isinstance(items, (str, bytes, Mapping, ModerationItem)):
        raise TypeError("batch calls take a list of items; use score()/check() for one item")
    coerced = []
    for index, value in enumerate(items):
        try:
            coerced.append(ModerationItem.coerce(value))
        except (TypeError, ValueError) as error:
            raise type(error)(f"item {index}: {error}") from None
    return coerced


def _near_a_line(risk: RiskScore, thresholds: Thresholds, margin: float) -> bool:
    """Whether a cheap score is too close to a line that may apply to call it: its categories' threshold, each
    part's own category line (`RiskScore.peaks`; only a per-category one can matter, since no part outscores the
    whole) and, when it names no category, every per-category threshold. Without per-category lines this is the
    distance of the score to its threshold."""
    pairs = [(risk.score, thresholds.for_categories(risk.categories))]
    pairs += [(score, thresholds.per_category[code]) for code, score in risk.peaks if code in thresholds.per_category]
    if not risk.categories:
        pairs += [(risk.score, line) for line in thresholds.per_category.values()]
    return any(abs(score - line) < margin for score, line in pairs)


def _riskiest(risks: Sequence[RiskScore]) -> RiskScore:
    """An item's score from its chunks: the riskiest chunk that was scored. When some chunks failed the
    result says so (`partial_error`): `decide` flags it if the scored part reaches the threshold and treats
    it as undecided otherwise. With no chunk scored, the first failure."""
    scored = [r for r in risks if r.ok]  # ok scores are finite and 0-100 (`RiskScore.checked`)
    failed = [r for r in risks if not r.ok]
    if not scored:
        return failed[0]
    riskiest = max(scored, key=lambda r: r.score)
    parts = [part for r in scored for part in ([(s, (c,)) for c, s in r.peaks] or [(r.score, r.categories)])]
    riskiest = riskiest.with_(peaks=merge_peaks(riskiest, parts))
    if failed:
        riskiest = riskiest.with_(partial_error=f"{len(failed)} of {len(risks)} chunks failed: {failed[0].error}")
    return riskiest


def shared_guard(guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                 reasoning: bool | None = None, **options: Any) -> FlexGuard:
    """What wrappers call: the guard they were given, or a handle on the process-wide one for these options.

    `reasoning` reaches the backend only when a model is set: the embedded scorer has no reasoning mode.
    """
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
