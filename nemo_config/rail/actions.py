"""NeMo Guardrails actions for FlexGuard. One helper serves both rails; all scoring lives in flexguard_plugins.

Settings come from `custom_data.flexguard` (strictness, model, backend, on_error, shadow, reasoning, options),
checked when the rails are built (`config.py`); a flow may override strictness
(`flexguard check input $strictness=strict`). Flow parameters arrive as strings; the core reads numeric
strings and names. A guard registered with `rails.register_action_param("flexguard", guard)` replaces the
one built from the settings and keeps its own strictness, on_error and shadow unless the config sets them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from flexguard_nemo.rail.settings import RAIL_FLOWS, anchored, config_folder, flow_name, flow_strictness, read_settings
from nemoguardrails.actions import action
from nemoguardrails.actions.actions import ActionResult
from nemoguardrails.actions.rail_outcome import RailOutcome

from flexguard_plugins import Decision, FlexGuard, ModerationItem, ashared_guard

TRIGGERED = {"prompt": "triggered_input_rail", "response": "triggered_output_rail"}
"""The context variable in which NeMo (Colang 1.0) names the input or output rail it is running, parameters included."""


def _flow_value(value: Any) -> Any:
    """A flow parameter the flow did not set arrives as its literal name (`$strictness`): treat it as unset."""
    return None if isinstance(value, str) and (value.startswith("$") or not value.strip()) else value


def own_strictness(mode: str, passed: Any, config: Any, context: Mapping[str, Any] | None,
                   events: Sequence[Mapping[str, Any]] | None) -> Any:
    """This flow's own `$strictness`, or None. Colang 1.0 keeps flow parameters as context variables that outlive
    their flow, so the value passed may be an earlier flow's: read it from the rail NeMo says is running (sequential
    and streaming rails) or from the event that started this flow (parallel rails), as NeMo's self-check rails do."""
    if getattr(config, "colang_version", "1.0") != "1.0":
        return _flow_value(passed)  # Colang 2.x flow parameters are the flow's own
    flow = RAIL_FLOWS[mode == "response"]
    triggered = (context or {}).get(TRIGGERED[mode])
    if isinstance(triggered, str) and flow_name(triggered) == flow:
        return flow_strictness(triggered)
    for event in reversed(events or ()):
        if event.get("type") == "start_flow" and event.get("flow_id") == flow:
            return _flow_value((event.get("params") or {}).get("strictness"))
    return _flow_value(passed)  # called from a flow of your own: `do flexguard check input $strictness=...`


def outcome(decision: Decision, mode: str) -> RailOutcome:
    """A FlexGuard decision as NeMo's verdict; `metadata` is `Decision.to_dict()` plus the mode."""
    metadata = {**decision.to_dict(), "mode": mode}
    if not decision.flagged:
        return RailOutcome.allow(reason=decision.reason, metadata=metadata)
    if decision.failed:
        return RailOutcome.failure(reason=decision.reason, metadata=metadata)
    return RailOutcome.block(reason=decision.reason, metadata=metadata)


_GUARDS: dict[str, FlexGuard] = {}
"""One handle on the process-wide guard per distinct load settings, kept for the life of the process."""


async def rail_guard(settings: Mapping[str, Any], registered: FlexGuard | None) -> FlexGuard:
    """The registered guard, or the shared one for these settings (a cold load runs off the event loop)."""
    if registered is not None:
        return registered
    load = {"model": settings.get("model"), "backend": settings.get("backend", "auto"),
            "reasoning": settings.get("reasoning"), **dict(settings.get("options") or {})}
    key = repr(sorted(load.items(), key=lambda kv: kv[0]))
    guard = _GUARDS.get(key)
    if guard is None or guard.closed:
        guard = _GUARDS[key] = await ashared_guard(None, **load)
    return guard


def flow_result(verdict: RailOutcome, config: Any, events: Sequence[Any] | None) -> RailOutcome | ActionResult:
    """What the action returns. Run from a flow (NeMo passes `events`), the decision also goes into the context as
    `$flexguard_decision`, and in Colang 1.0 the flow's `$strictness` is cleared (it would outlive the flow); NeMo's
    streaming output rails call the action directly and read a bare RailOutcome."""
    if events is None:
        return verdict
    updates: dict[str, Any] = {"flexguard_decision": dict(verdict.metadata)}
    if getattr(config, "colang_version", "1.0") == "1.0":
        updates["strictness"] = None
    return ActionResult(return_value=verdict, context_updates=updates)


_WAITING: dict[tuple[Any, ...], tuple[Any, list[tuple[ModerationItem, asyncio.Future[Decision]]]]] = {}
_SENDING: set[asyncio.Task[None]] = set()


async def acheck_one(guard: FlexGuard, item: ModerationItem, strictness: Any, on_error: str | None,
                 shadow: bool | None) -> Decision:
    """`guard.acheck` for one item. The checks rails make in one turn of the event loop with the same policy share
    guard calls, one backend batch each (`guard.max_batch_size`): each call is a hop to the guard's thread, which
    concurrent rails contend for, and the first batch's turns finish while the next is scored. Under
    on_error="raise" each check goes alone: an undecided item fails only itself."""
    if (on_error or guard.on_error) == "raise":
        return (await guard.acheck_batch([item], strictness, on_error, shadow))[0]
    loop = asyncio.get_running_loop()
    key = (loop, guard, repr(strictness), on_error, shadow)
    if key not in _WAITING:
        _WAITING[key] = (strictness, [])
        loop.call_soon(_send, key)
    future: asyncio.Future[Decision] = loop.create_future()
    _WAITING[key][1].append((item, future))
    return await future


def _send(key: tuple[Any, ...]) -> None:
    strictness, waiting = _WAITING.pop(key)
    _, guard, _, on_error, shadow = key
    for start in range(0, len(waiting), guard.max_batch_size):
        group = waiting[start:start + guard.max_batch_size]
        task = asyncio.ensure_future(_check_group(guard, group, strictness, on_error, shadow))
        _SENDING.add(task)
        task.add_done_callback(_SENDING.discard)


async def _check_group(guard: FlexGuard, group: list[tuple[ModerationItem, asyncio.Future[Decision]]],
                       strictness: Any, on_error: str | None, shadow: bool | None) -> None:
    """Each waiting check gets its decision, or the error it would have got alone (a closed guard)."""
    try:
        decisions = await guard.acheck_batch([item for item, _ in group], strictness, on_error, shadow)
    except asyncio.CancelledError:
        for _, future in group:
            future.cancel()
        raise
    except Exception as error:  # noqa: BLE001 - handed to every check in the group
        for _, future in group:
            if not future.done():
                future.set_exception(error)
        return
    for (_, future), decision in zip(group, decisions, strict=True):
        if not future.done():
            future.set_result(decision)


async def check(mode: str, config: Any, context: Mapping[str, Any] | None, strictness: Any = None,
                guard: FlexGuard | None = None, response: str | None = None,
                settings: Mapping[str, Any] | None = None) -> RailOutcome:
    """Judge the user message (prompt mode) or the bot message with the user message as context (response
    mode; `response` replaces the bot message, for the whole-message check at the end of a stream).
    `strictness` is the flow's own (`own_strictness`); `settings` the checked `custom_data.flexguard`."""
    settings = read_settings(config) if settings is None else settings
    chosen = settings.get("strictness") if strictness is None else anchored(strictness, config_folder(config))
    context = context or {}
    user = context.get("user_message") or ""
    if mode == "prompt":
        item = ModerationItem.coerce(user)
    else:
        item = ModerationItem.coerce({"prompt": user, "response": response or context.get("bot_message") or ""})
    decision = await acheck_one(await rail_guard(settings, guard), item, chosen, settings.get("on_error"),
                                settings.get("shadow"))
    return outcome(decision, mode)


@action(name="flexguard_check_input")
async def flexguard_check_input(config: Any = None, context: dict | None = None, events: list | None = None,
                                strictness: Any = None, flexguard: FlexGuard | None = None,
                                **kwargs: Any) -> RailOutcome | ActionResult:
    strictness = own_strictness("prompt", strictness, config, context, events)
    return flow_result(await check("prompt", config, context, strictness, flexguard), config, events)


@action(name="flexguard_check_output")
async def flexguard_check_output(config: Any = None, context: dict | None = None, events: list | None = None,
                                 strictness: Any = None, flexguard: FlexGuard | None = None,
                                 **kwargs: Any) -> RailOutcome | ActionResult:
    strictness = own_strictness("response", strictness, config, context, events)
    return flow_result(await check("response", config, context, strictness, flexguard), config, events)
