"""NeMo Guardrails actions for FlexGuard. One helper serves both rails; all scoring lives in flexguard_plugins.

Settings come from `custom_data.flexguard` (strictness, model, backend, on_error, reasoning, options),
checked when the rails are built (`config.py`); a flow may override strictness
(`flexguard check input $strictness=strict`). Flow parameters arrive as strings; the core reads numeric
strings and names. A guard registered with `rails.register_action_param("flexguard", guard)` replaces the
one built from the settings and keeps its own strictness and on_error unless the config sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flexguard_nemo.rail.settings import anchored, config_folder, read_settings
from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome

from flexguard_plugins import Decision, FlexGuard, ModerationItem, ashared_guard


def _flow_value(value: Any) -> Any:
    """A flow parameter the flow did not set arrives as its literal name (`$strictness`): treat it as unset."""
    return None if isinstance(value, str) and (value.startswith("$") or not value.strip()) else value


def outcome(decision: Decision, mode: str) -> RailOutcome:
    """A FlexGuard decision as NeMo's verdict; score, threshold and categories ride in `metadata`."""
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


async def check(mode: str, config: Any, context: Mapping[str, Any] | None, strictness: Any = None,
                guard: FlexGuard | None = None, response: str | None = None) -> RailOutcome:
    """Judge the user message (prompt mode) or the bot message with the user message as context (response
    mode; `response` replaces the bot message, for the whole-message check at the end of a stream)."""
    settings = read_settings(config)
    chosen = _flow_value(strictness)
    chosen = settings.get("strictness") if chosen is None else anchored(chosen, config_folder(config))
    context = context or {}
    user = context.get("user_message") or ""
    if mode == "prompt":
        item = ModerationItem.coerce(user)
    else:
        item = ModerationItem.coerce({"prompt": user, "response": response or context.get("bot_message") or ""})
    decision = (await (await rail_guard(settings, guard)).acheck_batch([item], chosen, settings.get("on_error")))[0]
    return outcome(decision, mode)


@action(name="flexguard_check_input")
async def flexguard_check_input(config: Any = None, context: dict | None = None, strictness: Any = None,
                                flexguard: FlexGuard | None = None, **kwargs: Any) -> RailOutcome:
    return await check("prompt", config, context, strictness, flexguard)


@action(name="flexguard_check_output")
async def flexguard_check_output(config: Any = None, context: dict | None = None, strictness: Any = None,
                                 flexguard: FlexGuard | None = None, **kwargs: Any) -> RailOutcome:
    return await check("response", config, context, strictness, flexguard)
