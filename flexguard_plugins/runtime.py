"""The runtime under the `FlexGuard` facade: an event-loop thread, an engine, the process-wide registry.

* `LoopThread`: a private event loop in a daemon thread; sync callers hop onto it, no call waits forever.
* `Engine`: one backend with its loop thread and micro-batcher, every batch bounded by `batch_timeout_s`.
  Closing answers every pending call at once: queued items become undecided ("guard closed"), batches
  already running get `CLOSE_GRACE_S` to finish; a call made after close raises `GuardClosedError`.
* The registry: engines keyed by model, backend and backend options, shared and reference-counted, so every
  facade in a process with those options uses one loaded model (`acquire`, `release`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from .backends import Backend
from .batching import MicroBatcher
from .errors import GuardClosedError
from .types import ModerationItem, RiskScore, is_number

T = TypeVar("T")
logger = logging.getLogger(__name__)

DEFAULT_BATCH_TIMEOUT_S = 600.0
"""Longest one backend batch may take before its items fail ("backend did not answer"): generous, so that a
reasoning batch on a slow GPU finishes, but a hung server or engine never holds callers forever. A backend
may set its own `batch_timeout_s` attribute; `FlexGuard(backend, batch_timeout_s=...)` overrides both."""
CLOSE_GRACE_S = 5.0
"""How long closing waits for batches already inside the backend before failing their items."""
_POLL_S = 0.25
"""Sync callers wake this often to notice that the guard's loop is gone."""

_REGISTRY: dict[tuple[Any, ...], Engine] = {}
_REGISTRY_LOCK = threading.Lock()
_BUILD_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}


class LoopThread:
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

    def wait(self, future: Future[T]) -> T:
        """`future.result()` with a way out: if this loop dies, raise instead of waiting forever."""
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except concurrent.futures.TimeoutError:
                if not self.alive:
                    future.cancel()
                    raise GuardClosedError("FlexGuard closed while this call was waiting") from None

    def stop(self) -> None:
        """Stop the loop; whatever was still submitted to it fails with a clear error instead of hanging."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop():
            self._thread.join(timeout=5)
        with self._guard:
            left = list(self._outstanding)
        if left:
            logger.warning("guard loop stopped with %d calls still pending; they fail as closed", len(left))
        for future in left:
            try:
                future.set_exception(GuardClosedError("FlexGuard closed while this call was pending"))
            except concurrent.futures.InvalidStateError:
                pass


class Engine:
    """One backend with its event-loop thread and micro-batcher, shared by every facade over it.

    Args:
        backend: what scores the batches; the engine closes it when it closes.
        key: its registry key (None: not registered, owned by one facade).
        batch_timeout_s: bound on one backend batch; None takes the backend's `batch_timeout_s` attribute,
            else `DEFAULT_BATCH_TIMEOUT_S`.

    Raises:
        ValueError: `batch_timeout_s` is not a number > 0.
    """

    def __init__(self, backend: Backend, key: tuple[Any, ...] | None = None,
                 batch_timeout_s: float | None = None) -> None:
        self.backend = backend
        self.key = key
        self.batch_timeout_s = (getattr(backend, "batch_timeout_s", DEFAULT_BATCH_TIMEOUT_S)
                                if batch_timeout_s is None else batch_timeout_s)
        if not is_number(self.batch_timeout_s) or not self.batch_timeout_s > 0:
            raise ValueError(f"batch_timeout_s must be a number > 0, got {self.batch_timeout_s!r}")
        self.users = 1
        self.closed = False
        self._loop_thread: LoopThread | None = None
        self._batcher: MicroBatcher[ModerationItem, RiskScore] | None = None
        self._lock = threading.Lock()
        self._closing: asyncio.Task[None] | None = None

    def _loop_for(self, coro: Coroutine[Any, Any, Any]) -> LoopThread:
        """The engine's loop (started on first use); closes `coro` unrun when the engine is closed."""
        with self._lock:
            if not self.closed and self._loop_thread is None:
                self._loop_thread = LoopThread()
            if self.closed or self._loop_thread is None:
                coro.close()
                raise GuardClosedError("this FlexGuard is closed")
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
        """Run `coro` on the engine's loop and wait for it from this (non-loop) thread."""
        loop = self._loop_for(coro)
        if loop.in_loop():
            coro.close()
            raise RuntimeError("sync FlexGuard call from inside its own event loop; use the async form")
        return loop.wait(loop.submit(coro))

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on the engine's loop, from any event loop."""
        loop = self._loop_for(coro)
        if loop.in_loop():
            return await coro
        return await asyncio.wrap_future(loop.submit(coro))

    def _begin_close(self) -> LoopThread | None:
        """Mark closed; the loop the caller must wait on, or None when there is nothing to wait for
        (already closed, or called from the loop itself, where the close is scheduled instead)."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            if self._loop_thread is None:
                self._loop_thread = LoopThread()  # to run the backend's aclose
            loop = self._loop_thread
        _unregister(self)
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
        except (Exception, asyncio.TimeoutError) as error:  # noqa: BLE001 - closing must not fail the caller
            logger.warning("backend %s did not close cleanly (%s)", self.backend.name, type(error).__name__)

    def _close_later(self, loop: LoopThread) -> None:
        """Closing from code on the engine's own loop (a backend closing its guard mid-batch): waiting there
        would wait for ourselves, so the close runs as its own task and ends once that batch has returned."""
        self._closing = loop.loop.create_task(self._close_on_loop())
        self._closing.add_done_callback(lambda _: loop.stop())

    def close(self) -> None:
        """Answer every pending call, close the backend and stop the loop (idempotent)."""
        loop = self._begin_close()
        if loop is None:
            return
        try:
            loop.submit(self._close_on_loop()).result(timeout=3 * CLOSE_GRACE_S)
        except (Exception, concurrent.futures.TimeoutError) as error:  # noqa: BLE001
            logger.warning("closing the guard took too long or failed (%s)", type(error).__name__)
        loop.stop()

    async def aclose(self) -> None:
        """`close` for async code: waits without blocking the caller's loop."""
        loop = self._begin_close()
        if loop is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(loop.submit(self._close_on_loop())), 3 * CLOSE_GRACE_S)
        except (Exception, asyncio.TimeoutError) as error:  # noqa: BLE001
            logger.warning("closing the guard took too long or failed (%s)", type(error).__name__)
        await asyncio.to_thread(loop.stop)


# --- the process-wide registry ----------------------------------------------------------------------

def registry_key(model: str | None, backend: str, options: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two loads share one engine: model, backend name and backend options (hashable)."""
    return (model, backend, _freeze(options))


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


def acquire(key: tuple[Any, ...], build: Callable[[], Backend]) -> Engine:
    """The registered engine for `key`, one more user; built once (under a per-key lock) when missing."""
    with _REGISTRY_LOCK:
        lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _REGISTRY_LOCK:
            engine = _REGISTRY.get(key)
            if engine is not None and not engine.closed:
                engine.users += 1
                return engine
        engine = Engine(build(), key)  # outside the registry lock: other keys load meanwhile
        with _REGISTRY_LOCK:
            _REGISTRY[key] = engine
        return engine


def release(engine: Engine) -> bool:
    """Drop one user of `engine`; True when it was the last (the caller then closes it)."""
    with _REGISTRY_LOCK:
        engine.users -= 1
        if engine.users > 0:
            return False
    _unregister(engine)
    return True


def _unregister(engine: Engine) -> None:
    """A closed or unused engine leaves the registry, so the next load of its key builds a fresh one."""
    with _REGISTRY_LOCK:
        if engine.key is not None and _REGISTRY.get(engine.key) is engine:
            del _REGISTRY[engine.key]


def registered_engines() -> list[Engine]:
    """The engines the registry holds now (for diagnostics and tests)."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())
