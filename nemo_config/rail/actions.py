"""NeMo Guardrails actions for FlexGuard. One helper serves both rails; all scoring lives in flexguard_plugins.

Settings come from `custom_data.flexguard` (strictness, model, backend, on_error, reasoning, options); a
flow may override strictness (`flexguard check input $strictness=strict`). Flow parameters arrive as
strings; the core reads numeric strings and names. A guard registered with
`rails.register_action_param("flexguard", guard)` replaces the one built from the settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome

from flexguard_plugins import Decision, FlexGuard, resolve_strictness, shared_guard

SETTINGS_KEY = "flexguard"
SETTINGS = ("strictness", "model", "backend", "on_error", "reasoning", "options")


def _settings(config: Any) -> dict[str, Any]:
    """`custom_data.flexguard` of the rails config, checked: a typo fails loudly instead of being ignored."""
    custom = getattr(config, "custom_data", None) or {}
    settings = custom.get(SETTINGS_KEY) or {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"custom_data.{SETTINGS_KEY} must be a mapping, got {type(settings).__name__}")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"custom_data.{SETTINGS_KEY}: unknown keys {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    return dict(settings)


def _guard(settings: Mapping[str, Any], registered: FlexGuard | None) -> FlexGuard:
    options = dict(settings.get("options") or {})
    model = settings.get("model")
    if model is not None and settings.get("reasoning") is not None:
        options["reasoning"] = settings["reasoning"]  # the embedded scorer has no reasoning mode
    return shared_guard(registered, model=model, backend=settings.get("backend", "auto"), **options)


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


async def check(mode: str, config: Any, context: Mapping[str, Any] | None, strictness: Any = None,
                guard: FlexGuard | None = None) -> RailOutcome:
    """Judge the user message (prompt mode) or the bot message with the user message as context (response mode)."""
    settings = _settings(config)
    chosen = _flow_value(strictness)
    chosen = settings.get("strictness", "moderate") if chosen is None else chosen
    resolve_strictness(chosen)
    context = context or {}
    user = context.get("user_message") or ""
    item = {"prompt": user} if mode == "prompt" else {"prompt": user, "response": context.get("bot_message") or ""}
    decision = (await _guard(settings, guard).acheck_batch([item], chosen, settings.get("on_error", "block")))[0]
    return outcome(decision, mode)


@action(name="flexguard_check_input")
async def flexguard_check_input(config: Any = None, context: dict | None = None, strictness: Any = None,
                                flexguard: FlexGuard | None = None, **kwargs: Any) -> RailOutcome:
    return await check("prompt", config, context, strictness, flexguard)


@action(name="flexguard_check_output")
async def flexguard_check_output(config: Any = None, context: dict | None = None, strictness: Any = None,
                                 flexguard: FlexGuard | None = None, **kwargs: Any) -> RailOutcome:
    return await check("response", config, context, strictness, flexguard)
