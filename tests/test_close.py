"""Closing under load answers every pending call; shared backends are reference-counted and built once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import flexguard_plugins.scorer as scorer
from flexguard_plugins import FlexGuard, GuardClosedError, shared_guard
from flexguard_plugins.runtime import registered_engines
from flexguard_plugins.scorer import ashared_guard
from tests.scripted_backend import ScriptedBackend


async def test_aclose_with_hundreds_of_queued_checks_answers_them_all(caplog):
    guard = FlexGuard(ScriptedBackend(delay_s=0.3, max_batch_size=16))
    tasks = [asyncio.create_task(guard.acheck("bomb" if i % 2 else f"hello {i}")) for i in range(400)]
    await asyncio.sleep(0.05)  # the first batch of 16 is inside the backend, 384 are queued
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="flexguard_plugins"):
        await asyncio.wait_for(guard.aclose(), 10)
    assert any(r.getMessage().startswith("guard closing with ") and "queued items (now undecided)" in r.getMessage()
               for r in caplog.records)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert time.perf_counter() - started < 3
    assert not [r for r in results if isinstance(r, BaseException)]
    undecided = [d for d in results if d.failed]
    scored = sum(len(batch) for batch in guard.backend.batches)  # 16 unless a loaded machine was slow to close
    assert len(guard.backend.batches) <= 3 and len(undecided) >= 400 - scored
    assert all(d.flagged and "closed" in d.reason for d in undecided)
    assert all(d.score == 92 for i, d in enumerate(results) if not d.failed and i % 2)
    with pytest.raises(GuardClosedError, match="closed"):
        await guard.acheck("x")
    assert issubclass(GuardClosedError, RuntimeError)  # code written against the old RuntimeError still works


def test_close_with_threads_inside_check_releases_them():
    guard = FlexGuard(ScriptedBackend(delay_s=0.3, max_batch_size=1))
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(guard.check("bomb"))
        except Exception as error:  # noqa: BLE001 - recorded and checked below
            results.append(error)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    guard.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a thread is still blocked in check()"
    assert len(results) == 8 and all(getattr(r, "flagged", False) for r in results)  # fail closed (block)
    assert sum(r.failed for r in results) >= 6


def test_with_block_on_a_shared_guard_releases_only_its_handle(lite_guard):
    """The real embedded scorer: every load shares one backend; closing one handle leaves the others working."""
    strict = FlexGuard.load(strictness="strict")
    assert strict.backend is lite_guard.backend and strict is not lite_guard
    assert shared_guard(None, on_error="allow").backend is lite_guard.backend
    with FlexGuard.load(on_error="allow") as temporary:
        assert temporary.backend is lite_guard.backend
        assert temporary.score("How do I bake bread?").ok
    assert temporary.closed and not lite_guard.closed
    assert lite_guard.score("How do I bake bread?").ok and strict.score("Hello there").ok
    strict.close()
    assert lite_guard.score("Hello again").ok


def _slow_create(created: list[str], delay_s: float):
    def create(name, model, **options):
        created.append(model)
        time.sleep(delay_s)
        return ScriptedBackend(model, **options)

    return create


def _close_scripted() -> None:
    for engine in registered_engines():
        if isinstance(engine.backend, ScriptedBackend):
            engine.close()  # and it leaves the registry


def test_concurrent_first_loads_build_once_and_other_keys_do_not_wait(monkeypatch):
    created: list[str] = []
    monkeypatch.setattr(scorer, "create_backend", _slow_create(created, 0.5))
    guards: list[FlexGuard] = []
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda m=m: guards.append(FlexGuard.load(m, backend="transformers")))
               for m in ["a/model"] * 6 + ["b/model"] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.perf_counter() - started
    try:
        assert sorted(created) == ["a/model", "b/model"], "one build per key"
        assert len({id(g.backend) for g in guards}) == 2 and len(guards) == 8
        assert elapsed < 0.9, f"builds of different keys ran one after the other ({elapsed:.2f} s)"
    finally:
        _close_scripted()


async def test_aload_builds_off_the_event_loop(monkeypatch):
    created: list[str] = []
    monkeypatch.setattr(scorer, "create_backend", _slow_create(created, 0.5))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        guard = await FlexGuard.aload("c/model", backend="transformers", strictness="loose")
        other = await ashared_guard(None, model="c/model", backend="transformers")
        assert ticks >= 5, "the event loop was blocked during the load"
        assert guard.backend is other.backend and created == ["c/model"]
        assert (await guard.acheck("steal")).allowed and (await other.acheck("steal")).flagged
    finally:
        task.cancel()
        _close_scripted()


def test_a_cascading_guard_releases_its_cascade_handle(monkeypatch):
    monkeypatch.setattr(scorer, "create_backend", lambda name, model, **o: ScriptedBackend(model, **o))
    try:
        guard = FlexGuard.load("d/model", backend="transformers", cascade="lite", cascade_margin=15)
        cheap = guard.cascade  # a handle on the shared embedded-scorer key (scripted here unless already loaded)
        other = FlexGuard.load()
        assert cheap.backend is other.backend and not cheap.closed
        assert all(r.ok for r in guard.score_batch(["bomb", "steal", "hello"]))
        guard.close()
        assert cheap.closed and guard.backend.closed
        assert other.score("hello").ok, "the cascade's release left the other handle working"
        other.close()
        with pytest.raises(ValueError, match="cascade"):
            FlexGuard.load("d/model", backend="transformers", cascade="other")
    finally:
        _close_scripted()
