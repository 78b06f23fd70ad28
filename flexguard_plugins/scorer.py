"""`FlexGuard`: the facade every wrapper uses. Sync and async, micro-batched, chunked, one model a process."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from .backends import Backend, create_backend
from .batching import MicroBatcher
from .chunking import chunk_spans, tail
from .policy import OnError, Strictness, check_on_error, decide, resolve_strictness
from .types import Decision, ModerationItem, RiskScore

T = TypeVar("T")
ItemLike = ModerationItem | Mapping[str, Any] | str

_REGISTRY: dict[tuple[Any, ...], FlexGuard] = {}
_REGISTRY_LOCK = threading.Lock()


class _LoopThread:
    """A private event loop in a daemon thread: the batcher lives here, sync calls hop onto it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="flexguard-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


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

    Concurrent async callers are gathered into one backend batch (at most `max_batch_size` items):
    a free backend takes what is waiting at once (or after lingering `max_wait_ms`, default 0), and
    whatever arrives while it works goes in the next batch. Text longer than the backend's budget is split into
    overlapping chunks; the riskiest chunk gives the item's score and `span`.
    """

    def __init__(self, backend: Backend, *, strictness: Strictness = "moderate", on_error: OnError = "block",
                 max_batch_size: int | None = None, max_wait_ms: float = 0.0,
                 cascade: FlexGuard | None = None, cascade_margin: float = 10.0) -> None:
        self.backend = backend
        self.cascade = cascade
        """A cheap guard that scores first; only items within `cascade_margin` of the threshold reach `backend`."""
        self.cascade_margin = float(cascade_margin)
        self.strictness = strictness
        resolve_strictness(strictness)
        self.on_error = check_on_error(on_error)
        self.max_batch_size = max_batch_size or backend.max_batch_size
        self.max_wait_ms = max_wait_ms
        self._loop_thread: _LoopThread | None = None
        self._batcher: MicroBatcher[ModerationItem, RiskScore] | None = None
        self._lock = threading.Lock()
        self._registry_key: tuple[Any, ...] | None = None
        self.closed = False

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, backend: str = "auto", **options: Any) -> FlexGuard:
        """The process-wide guard for these load options (created on first use, then shared).

        `model`: a hub id or a local folder (None: the embedded CPU scorer). `backend`: auto,
        transformers, vllm, openai or lite. Facade options: strictness, on_error, max_batch_size,
        max_wait_ms, cascade ("lite": score with the embedded scorer first and send only items within
        cascade_margin points of the active threshold to the model); everything else goes to the
        backend (reasoning, base_url, dtype, …).
        """
        name = _resolve_backend_name(model, backend, options)
        key = (model, name, _freeze(options))
        facade_keys = ("strictness", "on_error", "max_batch_size", "max_wait_ms", "cascade", "cascade_margin")
        facade = {k: options[k] for k in facade_keys if k in options}
        backend_options = {k: v for k, v in options.items() if k not in facade_keys}
        if facade.get("cascade") is not None:
            if facade["cascade"] != "lite":
                raise ValueError(f"cascade must be 'lite' or None, got {facade['cascade']!r}")
            if name == "lite":
                raise ValueError("cascade='lite' needs an LLM model to escalate to")
            facade["cascade"] = cls.load()
        with _REGISTRY_LOCK:
            guard = _REGISTRY.get(key)
            if guard is None or guard.closed:
                guard = cls(create_backend(name, model, **backend_options), **facade)
                guard._registry_key = key
                _REGISTRY[key] = guard
            return guard

    # --- loop plumbing ------------------------------------------------------------------------

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self.closed:
                raise RuntimeError("this FlexGuard is closed")
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            return self._loop_thread

    def _loop_for(self, coro: Coroutine[Any, Any, Any]) -> _LoopThread:
        """The guard's loop; closes `coro` unrun when the guard is closed so nothing leaks."""
        try:
            return self._loop()
        except RuntimeError:
            coro.close()
            raise

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop_for(coro)
        if loop.in_loop():
            coro.close()
            raise RuntimeError("sync FlexGuard call from inside its own event loop; use the async form")
        return loop.submit(coro).result()

    async def _on_guard_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop_for(coro)
        if loop.in_loop():
            return await coro
        return await asyncio.wrap_future(loop.submit(coro))

    def _get_batcher(self) -> MicroBatcher[ModerationItem, RiskScore]:
        if self._batcher is None:
            self._batcher = MicroBatcher(
                self.backend.score_batch,
                on_failure=lambda message: RiskScore.failure(message, scorer=self.backend.name),
                max_batch_size=self.max_batch_size,
                max_wait_s=self.max_wait_ms / 1000,
                max_concurrency=self.backend.max_concurrent_batches,
            )
        return self._batcher

    # --- the scoring path ---------------------------------------------------------------------

    def _chunks(self, item: ModerationItem) -> list[tuple[ModerationItem, tuple[int, int] | None]]:
        budget = self.backend.max_content_tokens
        if budget is None:
            return [(item, None)]
        tokenizer = self.backend.tokenizer
        if item.response is None:
            spans = chunk_spans(item.prompt, budget, tokenizer)
            if len(spans) == 1:
                return [(item, None)]
            return [(ModerationItem(item.prompt[a:b]), (a, b)) for a, b in spans]
        context = tail(item.prompt, max(8, budget // 4), tokenizer)
        spans = chunk_spans(item.response, budget, tokenizer)
        if len(spans) == 1:
            return [(ModerationItem(context, item.response), None)]
        return [(ModerationItem(context, item.response[a:b]), (a, b)) for a, b in spans]

    async def _score_on_loop(self, items: list[ModerationItem], strictness: Strictness) -> list[RiskScore]:
        """Score through the cascade when there is one: the cheap scorer decides what is far from the line."""
        if self.cascade is None:
            return await self._score_with_backend(items)
        thresholds = resolve_strictness(strictness)
        first = await self.cascade.ascore_batch(items)
        escalate = [
            i for i, risk in enumerate(first)
            if not risk.ok or abs(risk.score - thresholds.for_categories(risk.categories)) < self.cascade_margin
        ]
        if escalate:
            second = await self._score_with_backend([items[i] for i in escalate])
            for i, risk in zip(escalate, second, strict=True):
                first[i] = risk
        return first

    async def _score_with_backend(self, items: list[ModerationItem]) -> list[RiskScore]:
        units: list[ModerationItem] = []
        owners: list[tuple[int, tuple[int, int] | None]] = []
        results: list[RiskScore | None] = [None] * len(items)
        for index, item in enumerate(items):
            if not item.prompt.strip() and not (item.response or "").strip():
                results[index] = RiskScore.failure("empty input: nothing to judge", scorer=self.backend.name)
                continue
            if item.response is not None and not item.response.strip():
                results[index] = RiskScore.failure("empty response: nothing to judge", scorer=self.backend.name)
                continue
            for unit, span in self._chunks(item):
                units.append(unit)
                owners.append((index, span))
        scored = await self._get_batcher().submit(units) if units else []
        per_item: dict[int, list[RiskScore]] = {}
        for (index, span), risk in zip(owners, scored, strict=True):
            if not risk.scorer:
                risk = risk.with_(scorer=self.backend.name)
            per_item.setdefault(index, []).append(risk.with_(span=span) if span else risk)
        for index, risks in per_item.items():
            results[index] = _riskiest(risks)
        return [r for r in results if r is not None]

    # --- async API ----------------------------------------------------------------------------

    async def ascore_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        """Scores for `items`, in order. `strictness` matters only to a cascade (which items to escalate)."""
        coerced = _coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return await self._on_guard_loop(self._score_on_loop(coerced, strictness))

    async def ascore(self, prompt: str, response: str | None = None) -> RiskScore:
        return (await self.ascore_batch([ModerationItem.coerce({"prompt": prompt, "response": response})]))[0]

    async def acheck_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                           on_error: OnError | None = None) -> list[Decision]:
        strictness, on_error = self._policy(strictness, on_error)
        risks = await self.ascore_batch(items, strictness)
        return [decide(risk, strictness, on_error) for risk in risks]

    async def acheck(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
                     on_error: OnError | None = None) -> Decision:
        return (await self.acheck_batch([{"prompt": prompt, "response": response}], strictness, on_error))[0]

    # --- sync API -----------------------------------------------------------------------------

    def score_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None) -> list[RiskScore]:
        coerced = _coerce_all(items)
        strictness = self.strictness if strictness is None else strictness
        return self._run_sync(self._score_on_loop(coerced, strictness))

    def score(self, prompt: str, response: str | None = None) -> RiskScore:
        return self.score_batch([{"prompt": prompt, "response": response}])[0]

    def check_batch(self, items: Iterable[ItemLike], strictness: Strictness | None = None,
                    on_error: OnError | None = None) -> list[Decision]:
        strictness, on_error = self._policy(strictness, on_error)
        return [decide(risk, strictness, on_error) for risk in self.score_batch(items, strictness)]

    def check(self, prompt: str, response: str | None = None, strictness: Strictness | None = None,
              on_error: OnError | None = None) -> Decision:
        return self.check_batch([{"prompt": prompt, "response": response}], strictness, on_error)[0]

    def _policy(self, strictness: Strictness | None, on_error: OnError | None) -> tuple[Strictness, OnError]:
        """Validate before scoring, so a bad option fails fast and no model time is spent."""
        strictness = self.strictness if strictness is None else strictness
        resolve_strictness(strictness)
        return strictness, check_on_error(on_error or self.on_error)

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self.closed:
            return
        if self._loop_thread is not None and not self._loop_thread.in_loop():
            await asyncio.wrap_future(self._loop_thread.submit(self._close_on_loop()))
        else:
            await self._close_on_loop()
        self._finish_close()

    def close(self) -> None:
        if self.closed:
            return
        if self._loop_thread is not None:
            self._loop_thread.submit(self._close_on_loop()).result()
        else:
            asyncio.run(self.backend.aclose())
        self._finish_close()

    async def _close_on_loop(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        await self.backend.aclose()

    def _finish_close(self) -> None:
        self.closed = True
        if self._loop_thread is not None:
            self._loop_thread.stop()
        with _REGISTRY_LOCK:
            if self._registry_key is not None and _REGISTRY.get(self._registry_key) is self:
                del _REGISTRY[self._registry_key]

    def __enter__(self) -> FlexGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FlexGuard({self.backend.describe()}, strictness={self.strictness!r}, on_error={self.on_error!r})"


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


def _riskiest(risks: Sequence[RiskScore]) -> RiskScore:
    """An item's verdict from its chunks: any failed chunk makes the item undecided; else the max."""
    failed = [r for r in risks if not r.ok]
    if failed:
        return failed[0]
    return max(risks, key=lambda r: -math.inf if math.isnan(r.score) else r.score)


def shared_guard(guard: FlexGuard | None = None, model: str | None = None, backend: str = "auto",
                 reasoning: bool | None = None, **options: Any) -> FlexGuard:
    """What wrappers call: the guard they were given, or the process-wide one for these options.

    `reasoning` reaches the backend only when a model is set: the embedded scorer has no reasoning mode.
    """
    if guard is not None:
        return guard
    if model is not None and reasoning is not None:
        options["reasoning"] = reasoning
    return FlexGuard.load(model, backend, **options)
