"""`custom_data.flexguard` checked once, when the rails are built: a bad value fails `LLMRails(...)` with one
line naming the key, instead of every request answering "internal error"."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from nemoguardrails.utils import _get_flow_params, _normalize_flow_id

from flexguard_plugins import backend_names, check_on_error, check_shadow, resolve_strictness

SETTINGS_KEY = "flexguard"
SETTINGS = ("strictness", "model", "backend", "on_error", "shadow", "reasoning", "options")
RAIL_FLOWS = ("flexguard check input", "flexguard check output")
FLOW_PARAMS = ("strictness",)
"""What a flow may set. `shadow` is config-level only: no flow may switch enforcement off."""
_FLOW_PARAM = re.compile(r"\$(\w+)\s*=\s*(\"[^\"]*\"|'[^']*'|\S+)")


def config_folder(config: Any) -> str | None:
    """The user's config folder (the first one, when NeMo joined several)."""
    path = getattr(config, "config_path", None)
    return path.split(",")[0].strip() or None if path else None


def anchored(strictness: Any, folder: str | None) -> Any:
    """A relative policy-file path (`policy.json`, `policy.json#strict`) read from the config folder, not the cwd."""
    if not isinstance(strictness, str) or folder is None:
        return strictness
    path, hash_, regime = strictness.strip().partition("#")
    if not path.endswith(".json") or os.path.isabs(path):
        return strictness
    return os.path.join(folder, path) + hash_ + regime


def _check(key: str, check: Any, value: Any) -> None:
    try:
        check(value)
    except (TypeError, ValueError) as error:
        where = ".".join(("custom_data", SETTINGS_KEY, key) if key else ("custom_data", SETTINGS_KEY))
        raise ValueError(f"{where}: {error}".replace("\n", " ")) from None


def _check_bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"must be true, false or null, got {value!r}")


def _check_backend(value: Any) -> None:
    if value not in ("auto", *backend_names()):
        raise ValueError(f"unknown backend {value!r}; choose from auto, {', '.join(backend_names())}")


def _check_mapping(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, got {type(value).__name__}")


def read_settings(config: Any) -> dict[str, Any]:
    """The checked settings, with a policy-file strictness anchored to the config folder. Only keys the config
    sets are returned, so a guard passed with `register_action_param` keeps its own defaults for the rest."""
    custom = getattr(config, "custom_data", None) or {}
    settings = custom.get(SETTINGS_KEY)
    if settings is None:
        return {}
    _check("", _check_mapping, settings)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"custom_data.{SETTINGS_KEY}.{unknown[0]}: unknown key; known: {', '.join(SETTINGS)}")
    settings = {key: value for key, value in settings.items() if value is not None}
    if "strictness" in settings:
        settings["strictness"] = anchored(settings["strictness"], config_folder(config))
        _check("strictness", resolve_strictness, settings["strictness"])
    if "on_error" in settings:
        _check("on_error", check_on_error, settings["on_error"])
        settings["on_error"] = check_on_error(settings["on_error"])
    if "shadow" in settings:
        _check("shadow", lambda value: check_shadow(value, settings.get("on_error", "block")), settings["shadow"])
    if "backend" in settings:
        _check("backend", _check_backend, settings["backend"])
    if "reasoning" in settings:
        _check("reasoning", _check_bool, settings["reasoning"])
    if "options" in settings:
        _check("options", _check_mapping, settings["options"])
    return settings


def flow_name(flow_id: str) -> str:
    """A flow in `rails.*.flows` without its parameters."""
    return _normalize_flow_id(flow_id)


def flow_params(flow_id: str) -> dict[str, Any]:
    """The parameters NeMo gives a flow in `rails.*.flows` (`name $a=1` or `name(a=1)`), and every further `$b=2`,
    which NeMo drops silently: written, it must be checked."""
    try:
        params = _get_flow_params(flow_id)
    except ValueError:
        raise ValueError(f"rails flow {flow_id!r}: cannot read its parameters (write `$strictness=VALUE`)") from None
    return {**{name: value.strip("\"'") for name, value in _FLOW_PARAM.findall(flow_id)}, **params}


def flow_strictness(flow_id: str) -> str | None:
    """`$strictness=...` written after a FlexGuard flow in `rails.*.flows`, or None."""
    return flow_params(flow_id).get("strictness")


def check_flows(config: Any) -> None:
    """Every parameter given to a FlexGuard flow in config.yml is known and valid (checked at build time too)."""
    rails = getattr(config, "rails", None)
    flows = [*getattr(rails.input, "flows", []), *getattr(rails.output, "flows", [])] if rails else []
    for flow_id in flows:
        if flow_name(flow_id) not in RAIL_FLOWS:
            continue
        params = flow_params(flow_id)
        unknown = sorted(set(params) - set(FLOW_PARAMS))
        if unknown:
            raise ValueError(f"rails flow {flow_id!r}: unknown parameter {unknown[0]!r}; known: "
                             f"{', '.join(FLOW_PARAMS)} (shadow and the other settings go in custom_data.flexguard)")
        if params.get("strictness") is not None:
            try:
                resolve_strictness(anchored(params["strictness"], config_folder(config)))
            except (TypeError, ValueError) as error:
                raise ValueError(f"rails flow {flow_id!r}: {error}".replace("\n", " ")) from None
