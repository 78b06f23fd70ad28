"""Gather concurrent callers into batches: bounded size and wait, fair between callers, failures kept per item."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import BatchTimeoutError

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Ticket(Generic[T, R]):
    """One `submit` call: its waiting items, and how the caller wants them batched."""

    waiting: deque[tuple[T, asyncio.Future[R]]]
    max_batch_size: int
    deadline: float
    """Loop time after which this caller stops lingering for company."""
    share: int | None = None
    """At most this many of its items in one batch (a long text's chunks leave room for other callers)."""
    taken: int = 0
    futures: list[asyncio.Future[R]] = field(default_factory=list)


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent `submit` calls and runs them through `run_batch` together.

    A batch starts as soon as a slot is free (after lingering up to `max_wait_s` for company, when
    that is set); callers that arrive while every slot is busy ride the next batch, so an idle guard
    answers one caller at once and a loaded one batches up to `max_batch_size`. Up to
    `max_concurrency` batches run at once. A batch holds at most the smallest `max_batch_size` of the
    callers in it (each caller's own limit, default the batcher's).

    Fair: a batch takes items round-robin from the callers waiting, so a caller with one item rides the
    next batch even behind a caller with hundreds of chunks (head-of-line blocking is one batch, not one
    request). Isolating: when `run_batch` raises (or miscounts), the batch is split in halves and retried
    until the items that cause it are alone; only they get `on_failure(message)`. At most
    `retry_budget(n)` extra calls are spent on one batch (a dead server fails every half), after which
    what is left fails with the error. Must be used from a single event loop.

    Bounded: a `run_batch` call that takes longer than `batch_timeout_s` (None: no bound) is cancelled and
    its items fail together (`BatchTimeoutError` in their message), without splitting (a hung backend would
    hang every half too); a backend must let itself be cancelled (one that swallows the CancelledError is
    not bounded). Whatever `run_batch` raises, BaseExceptions included (a stray CancelledError,
    KeyboardInterrupt or SystemExit from backend code), fails only that batch's items: the batcher's loop
    keeps serving the others. Only the batcher's own cancellation (`aclose`) propagates, and its items are
    answered then too.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R]]], *,
                 on_failure: Callable[[str], R], max_batch_size: int = 64, max_wait_s: float = 0.0,
                 max_concurrency: int = 1, batch_timeout_s: float | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be ≥ 1")
        if batch_timeout_s is not None and not batch_timeout_s > 0:
            raise ValueError("batch_timeout_s must be > 0 or None")
        self.batch_timeout_s = batch_timeout_s
        self._run_batch = run_batch
        self._on_failure = on_failure
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tickets: deque[_Ticket[T, R]] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], list[asyncio.Future[R]]] = {}
        self.batches_run = 0
        self.closed = False

    async def submit(self, items: Sequence[T], *, max_batch_size: int | None = None,
                     max_wait_s: float | None = None, share: int | None = None) -> list[R]:
        """Results for `items`, in order. The limits apply to the batches this caller's items ride in;
        `share` caps how many of these items one batch takes (so others are never stuck behind them).
        After `aclose` (a call accepted just before the close reaches here late) every item fails at once."""
        if self.closed:
            return [self._on_failure("guard closed before this item was scored") for _ in items]
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        wait = self.max_wait_s if max_wait_s is None else max_wait_s
        ticket = _Ticket(deque(zip(items, futures, strict=True)), max_batch_size or self.max_batch_size,
                         loop.time() + wait, share, futures=futures)
        self._tickets.append(ticket)
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return list(await asyncio.gather(*futures))

    def _queued(self) -> int:
        return sum(len(t.waiting) for t in self._tickets)

    def _limit(self) -> int:
        return min(t.max_batch_size for t in self._tickets)

    async def _linger(self) -> None:
        """Wait for company until the batch is full or the most impatient waiting caller's deadline."""
        loop = asyncio.get_running_loop()
        while self._tickets and self._queued() < self._limit():
            remaining = min(t.deadline for t in self._tickets) - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        """Up to the batch limit, one item per waiting caller in turn (round-robin)."""
        batch: list[tuple[T, asyncio.Future[R]]] = []
        limit: float = math.inf
        used_share: list[_Ticket[T, R]] = []
        for ticket in self._tickets:
            ticket.taken = 0
        while self._tickets and len(batch) < limit:
            ticket = self._tickets.popleft()
            if len(batch) >= ticket.max_batch_size:
                self._tickets.appendleft(ticket)
                break
            limit = min(limit, ticket.max_batch_size)
            pair = ticket.waiting.popleft()
            if not pair[1].done():  # a cancelled caller's items are skipped
                batch.append(pair)
                ticket.taken += 1
            if ticket.waiting:
                full = ticket.share is not None and ticket.taken >= ticket.share
                (used_share if full else self._tickets).append(ticket)
        self._tickets.extend(used_share)
        return batch

    async def _work(self) -> None:
        while self._tickets and not self.closed:
            await asyncio.sleep(0)  # callers of this loop iteration join the batch
            await self._linger()
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch or self.closed:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running[task] = [future for _, future in batch]
            task.add_done_callback(lambda t: self._running.pop(t, None))

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            self.batches_run += 1
            budget = [retry_budget(len(batch))]
            await self._run_isolating(batch, budget)
        finally:
            self._slots.release()
            for _, future in batch:  # however this ended, no caller is left waiting
                if not future.done():
                    future.set_result(self._on_failure("batch cancelled before this item was scored"))

    async def _attempt(self, items: list[T]) -> list[R]:
        """One `run_batch` call, within `batch_timeout_s`.

        Run in this task (no inner task, unlike `wait_for` before 3.12): a KeyboardInterrupt raised by the
        backend in an inner task would escape the event loop and kill the guard's loop thread."""
        if self.batch_timeout_s is None:
            return await self._run_batch(items)
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self.batch_timeout_s, expire)
        try:
            return await self._run_batch(items)
        except asyncio.CancelledError:
            if not expired:
                raise
            raise BatchTimeoutError(f"backend did not answer within batch_timeout_s={self.batch_timeout_s:g} s"
                                    ) from None
        finally:
            timer.cancel()
            if expired and hasattr(task, "uncancel"):  # 3.11+: that cancellation was ours and is over
                task.uncancel()

    async def _run_isolating(self, batch: list[tuple[T, asyncio.Future[R]]], budget: list[int]) -> None:
        try:
            results = await self._attempt([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} items")
        except BaseException as error:  # noqa: BLE001 - every item must get an answer (class docstring)
            if isinstance(error, asyncio.CancelledError) and _being_cancelled():
                raise
            timed_out = isinstance(error, BatchTimeoutError)
            if len(batch) > 1 and budget[0] >= 2 and not timed_out:
                logger.warning("a backend batch of %d items failed (%s); splitting it to isolate the failing items",
                               len(batch), type(error).__name__)
                budget[0] -= 2
                half = len(batch) // 2
                await self._run_isolating(batch[:half], budget)
                await self._run_isolating(batch[half:], budget)
                return
            if timed_out:
                logger.warning("a backend batch of %d items did not answer within batch_timeout_s=%g s; "
                               "its items are undecided", len(batch), self.batch_timeout_s)
            else:
                logger.warning("the backend failed on %d items (%s); they are undecided", len(batch),
                               type(error).__name__)
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            results = [self._on_failure(message) for _ in batch]
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self, grace_s: float = 5.0, message: str = "guard closed before this item was scored") -> None:
        """Stop taking work. Queued items get `on_failure(message)` at once; batches already running get
        `grace_s` to finish, then are cancelled and their items fail too. Nothing is left waiting."""
        self.closed = True
        queued = 0
        while self._tickets:
            for _, future in self._tickets.popleft().waiting:
                if not future.done():
                    queued += 1
                    future.set_result(self._on_failure(message))
        self._wakeup.set()
        # not the batch we are closing from (backend code closing its own guard): it would wait for itself
        running = {task: futures for task, futures in self._running.items() if task is not asyncio.current_task()}
        if queued or running:
            logger.warning("guard closing with %d queued items (now undecided) and %d batches running", queued,
                           len(running))
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            if late:
                logger.warning("%d batches still running after %g s are cancelled; their items are undecided",
                               len(late), grace_s)
            for task in late:
                task.cancel()
            for futures in running.values():
                for future in futures:
                    if not future.done():
                        future.set_result(self._on_failure(f"{message} (still running after {grace_s:g} s)"))
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()


def _being_cancelled() -> bool:
    """The current task was cancelled from outside (not merely handed a CancelledError by the code it awaited).
    Python 3.10 cannot tell (no `Task.cancelling`): every CancelledError counts, and the batch's items fail
    unsplit (`_run` still answers them)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def retry_budget(size: int) -> int:
    """Extra backend calls allowed to isolate the culprits of one failed batch: enough for two culprits."""
    return 0 if size <= 1 else 4 * math.ceil(math.log2(size)) + 2
