"""Gather concurrent callers into batches: bounded size, bounded wait, results in caller order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent `submit` calls and runs them through `run_batch` together.

    A batch starts as soon as a slot is free (after lingering up to `max_wait_s` for company, when
    that is set); callers that arrive while every slot is busy ride the next batch, so an idle guard
    answers one caller at once and a loaded one batches up to `max_batch_size`. Up to
    `max_concurrency` batches run at once. `run_batch` must return one result per
    item; if it raises or miscounts, every item of that batch gets `on_failure(message)`.
    Must be used from a single event loop.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R]]], *,
                 on_failure: Callable[[str], R], max_batch_size: int = 64, max_wait_s: float = 0.0,
                 max_concurrency: int = 1) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be ≥ 1")
        self._run_batch = run_batch
        self._on_failure = on_failure
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches_run = 0

    async def submit(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return list(await asyncio.gather(*futures))

    async def _work(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # callers of this loop iteration join the batch
            if len(self._queue) < self.max_batch_size and self.max_wait_s > 0:
                deadline = asyncio.get_running_loop().time() + self.max_wait_s
                while len(self._queue) < self.max_batch_size:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
            await self._slots.acquire()
            batch, self._queue = self._queue[: self.max_batch_size], self._queue[self.max_batch_size:]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            self.batches_run += 1
            try:
                results = await self._run_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} items")
            except Exception as error:  # noqa: BLE001 - every item must get an answer
                message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                results = [self._on_failure(message) for _ in batch]
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        for task in list(self._running):
            await asyncio.gather(task, return_exceptions=True)
