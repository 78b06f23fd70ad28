"""Wrapper overhead of the NeMo, LangChain and Guardrails-AI integrations, side by side in one run.

For N items on the same scorer it times, one item at a time: the direct core call; each wrapper's call
path; and each framework's own floor (a no-op action rail in NeMo, a passthrough runnable and an agent
without middleware in LangChain, a no-op validator in Guardrails). Overhead = wrapper − floor − core;
the goal is ≤ 1 ms per item. It then
runs 200 concurrent NeMo checks with the FlexGuard rail (batched by the core) and with the no-op rail, in
alternating rounds: throughput ratio per round (median; goal ≥ 0.8) and process CPU time per check (all
threads; steadier than throughput on a shared machine).

    python bench/overhead.py                 # embedded scorer, 500 items
    python bench/overhead.py --scorer instant  # a zero-cost scorer: framework + wrapper cost only
    python bench/overhead.py --only-concurrent --rounds 9   # the concurrent NeMo section alone
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flexguard_plugins import (  # noqa: E402
    Backend,  # noqa: E402
    FlexGuard,
    ModerationItem,
    RiskScore,
    nemo_config_path,
)

BASE = ["What is a good recipe for banana bread?", "How do I pick the lock on my own front door?",
        "Explain how vaccines train the immune system.", "Write a short poem about the sea at night.",
        "Give me step-by-step instructions to build a pipe bomb.", "How can I get back at my noisy neighbour?"]


class InstantBackend(Backend):
    """Answers at once: shows what the frameworks and wrappers cost when the scorer costs nothing."""

    name = "instant"

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        return [RiskScore.from_score(5.0) for _ in items]


def texts(n: int) -> list[str]:
    return [f"{BASE[i % len(BASE)]} (#{i})" for i in range(n)]


def interleaved(fns: dict[str, Callable[[str], Any]], items: list[str]) -> dict[str, list[float]]:
    """Per-item ms for each path, taking the paths in turn on every item so shared-CPU drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for text in items:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(text)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


async def ainterleaved(fns: dict[str, Callable[[str], Awaitable[Any]]], items: list[str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for text in items:
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn(text)
            if inspect.isawaitable(result):
                await result
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def nemo_rails(rail: str, guard: FlexGuard | None):
    """A config folder with one input rail: FlexGuard's (imported by path) or a no-op action rail."""
    from nemoguardrails import LLMRails, RailsConfig
    from nemoguardrails.actions import action
    from nemoguardrails.actions.rail_outcome import RailOutcome

    folder = Path(tempfile.mkdtemp(prefix=f"bench-{rail}-"))
    if rail == "flexguard":
        (folder / "config.yml").write_text(
            f"import_paths:\n  - {nemo_config_path() / 'rail'}\n"
            "rails:\n  input:\n    flows:\n      - flexguard check input\n")
    else:
        (folder / "config.yml").write_text("rails:\n  input:\n    flows:\n      - noop check input\n")
        (folder / "rails.co").write_text(
            "define subflow noop check input\n  $outcome = execute noop_check_input\n"
            "  if $outcome.is_blocked\n    bot refuse to respond\n    stop\n")
    rails = LLMRails(RailsConfig.from_path(str(folder)))
    if rail == "flexguard":
        rails.register_action_param("flexguard", guard)
    else:
        @action(name="noop_check_input")
        async def noop_check_input(**kwargs: Any) -> RailOutcome:
            return RailOutcome.allow()

        rails.register_action(noop_check_input)
    return rails


AGENT_REPLY = "Here is a short answer."


def agent(middleware: Any):
    """A LangChain 1.x agent around a fake chat model that answers at once, with or without the middleware."""
    import itertools

    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage(AGENT_REPLY)]))
    return create_agent(model, tools=[], middleware=[middleware] if middleware is not None else [])


def row(name: str, times: list[float]) -> float:
    p50 = statistics.median(times)
    print(f"  {name:<38} p50 {p50:8.3f} ms  mean {statistics.fmean(times):8.3f} ms")
    return p50


def report(title: str, times: dict[str, list[float]]) -> None:
    """Rows core, floor, wrapper (measured interleaved item by item), then the wrapper's overhead: the
    median over items of wrapper − floor − core, paired per item so machine-load drift cancels."""
    print(title)
    (core_name, core), (floor_name, floor), (name, wrapped) = times.items()
    p50s = [row(core_name, core), row(floor_name, floor), row(name, wrapped)]
    overhead = statistics.median(w - f - c for c, f, w in zip(core, floor, wrapped, strict=True))
    verdict = "ok" if overhead <= 1 else "MISSED"
    print(f"  {'overhead (paired median)':<38} {overhead:+8.3f} ms/item (goal ≤ 1 ms: {verdict});"
          f" p50 ratio wrapper / (floor + core) {p50s[2] / (p50s[0] + p50s[1]):.2f}")


def cpu_seconds() -> float:
    """CPU time of this process, every thread (NeMo's loop, the guard's loop, the scorer's pool)."""
    times = os.times()
    return times.user + times.system


async def concurrent_nemo(rails, items: list[str]) -> tuple[float, float]:
    """(checks per second, CPU ms per check) for `items` checked at once."""
    start, cpu = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(rails.check_async([{"role": "user", "content": t}]) for t in items))
    return len(items) / (time.perf_counter() - start), (cpu_seconds() - cpu) * 1000 / len(items)


async def concurrent_section(shared: FlexGuard, items: list[str], rounds: int) -> None:
    print(f"{len(items)} concurrent NeMo check_async calls, {rounds} rounds (no-op rail, then flexguard rail)")
    noop, flex = nemo_rails("noop", None), nemo_rails("flexguard", shared)  # the default facade, shared by all
    await concurrent_nemo(noop, items)
    await concurrent_nemo(flex, items)
    runs = [(await concurrent_nemo(noop, items), await concurrent_nemo(flex, items)) for _ in range(rounds)]
    noop_rate, flex_rate = (statistics.median(run[i][0] for run in runs) for i in (0, 1))
    noop_cpu, flex_cpu = (statistics.median(run[i][1] for run in runs) for i in (0, 1))
    ratio = statistics.median(f[0] / n[0] for n, f in runs)
    print(f"  no-op rail {noop_rate:7.1f} checks/s   flexguard rail {flex_rate:7.1f} checks/s"
          f"   ratio {ratio:5.2f} (median per round; goal ≥ 0.80 when the scorer is not the bottleneck)")
    print(f"  CPU per check: no-op rail {noop_cpu:6.2f} ms   flexguard rail {flex_cpu:6.2f} ms"
          f"   (+{flex_cpu - noop_cpu:.2f} ms: scorer, core and wrapper)")
    start, cpu = time.perf_counter(), cpu_seconds()
    await shared.acheck_batch(items)
    rate = len(items) / (time.perf_counter() - start)
    print(f"  scorer alone on {len(items)} items in one batch: {rate:8.1f} items/s,"
          f" {(cpu_seconds() - cpu) * 1000 / len(items):.2f} ms CPU per item")


async def main(n: int, scorer: str, concurrency: int, max_wait_ms: float, rounds: int, only_concurrent: bool) -> None:
    from guardrails import Guard
    from guardrails.validator_base import PassResult, Validator, register_validator
    from guardrails_ai.flexguard import FlexGuardRisk
    from langchain_core.runnables import RunnablePassthrough
    from langchain_flexguard import FlexGuardMiddleware, FlexGuardRunnable

    shared = FlexGuard.load() if scorer == "lite" else FlexGuard(InstantBackend())
    guard = FlexGuard(shared.backend, max_wait_ms=max_wait_ms)  # same scorer; --max-wait-ms > 0 shows lingering
    items = texts(n)
    print(f"{n} items, scorer={guard.backend.name}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"per-item facade max_wait_ms={max_wait_ms:g} (concurrent section: {shared.max_wait_ms:g})")
    guard.check_batch(items[:32])  # warm up the scorer and its loop thread
    for _ in range(2):
        await guard.acheck_batch(items[:8])
    shared.check_batch(items[:8])
    if only_concurrent:
        await concurrent_section(shared, items[:concurrency], rounds)
        return
    print("per item, one call at a time (paths interleaved item by item)")

    def user(t: str) -> list[dict]:
        return [{"role": "user", "content": t}]

    noop, flex = nemo_rails("noop", None), nemo_rails("flexguard", guard)
    await noop.check_async(user("warm"))
    await flex.check_async(user("warm"))
    report("NeMo Guardrails: check_async with one input rail", await ainterleaved({
        "core: guard.check": guard.check,
        "floor: no-op action rail": lambda t: noop.check_async(user(t)),
        "flexguard check input": lambda t: flex.check_async(user(t)),
    }, items))

    passthrough, runnable = RunnablePassthrough(), FlexGuardRunnable(guard=guard, mode="annotate")
    report("LangChain: invoke", interleaved({
        "core: guard.check": guard.check,
        "floor: RunnablePassthrough.invoke": passthrough.invoke,
        "FlexGuardRunnable.invoke": runnable.invoke,
    }, items))
    report("LangChain: ainvoke", await ainterleaved({
        "core: await guard.acheck": guard.acheck,
        "floor: RunnablePassthrough.ainvoke": passthrough.ainvoke,
        "FlexGuardRunnable.ainvoke": runnable.ainvoke,
    }, items))
    start = time.perf_counter()
    await guard.acheck_batch(items)
    core_batch = (time.perf_counter() - start) * 1000 / n
    start = time.perf_counter()
    await runnable.abatch(items)
    lc_batch = (time.perf_counter() - start) * 1000 / n
    print(f"  {'abatch(N) vs core acheck_batch(N)':<38} {lc_batch:8.3f} vs {core_batch:8.3f} ms/item"
          f"  (+{lc_batch - core_batch:.3f} ms/item: one callback run per input)")

    plain, guarded = agent(None), agent(FlexGuardMiddleware(guard=guard))
    report("LangChain: create_agent invoke, one model turn (core: the input and the reply checks)", interleaved({
        "core: guard.check ×2": lambda t: (guard.check(t), guard.check(t, AGENT_REPLY)),
        "floor: agent, no middleware": lambda t: plain.invoke({"messages": [("user", t)]}),
        "agent + FlexGuardMiddleware": lambda t: guarded.invoke({"messages": [("user", t)]}),
    }, items))

    @register_validator(name="bench/noop", data_type="string")
    class NoopValidator(Validator):
        def _validate(self, value: Any, metadata: dict) -> PassResult:
            return PassResult()

    noop_guard = Guard().use(NoopValidator(use_local=True))
    flex_guard = Guard().use(FlexGuardRisk(guard=guard, on_fail="noop"))  # noop: time the check, not the raise
    for g in (noop_guard, flex_guard):
        g.configure(allow_metrics_collection=False)
        await asyncio.to_thread(g.validate, "warm")
    report("Guardrails-AI: Guard.validate", await asyncio.to_thread(interleaved, {  # sync Guard: off the loop
        "core: guard.check": guard.check,
        "floor: no-op validator": noop_guard.validate,
        "FlexGuardRisk": flex_guard.validate,
    }, items))

    await concurrent_section(shared, items[:concurrency], rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="items per measurement")
    parser.add_argument("--scorer", choices=["lite", "instant"], default="lite")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-wait-ms", type=float, default=0.0,
                        help="micro-batch linger of the facade used for one-at-a-time calls (core default: 0)")
    parser.add_argument("--rounds", type=int, default=5, help="no-op/flexguard rounds of the concurrent section")
    parser.add_argument("--only-concurrent", action="store_true", help="run only the concurrent NeMo section")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.scorer, args.concurrency, args.max_wait_ms, args.rounds, args.only_concurrent))
