"""Backends behind one async interface. Heavy libraries are imported only by the backend that needs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .base import Backend

_BACKENDS: dict[str, str] = {
    "transformers": "flexguard_plugins.backends.hf:TransformersBackend",
    "vllm": "flexguard_plugins.backends.vllm:VLLMBackend",
    "openai": "flexguard_plugins.backends.openai:OpenAIBackend",
    "lite": "flexguard_plugins.lite:LiteBackend",
}


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def backend_class(name: str) -> Callable[..., Backend]:
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(_BACKENDS)}")
    module, _, attr = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(name: str, model: str | None, **options: Any) -> Backend:
    return backend_class(name)(model, **options)


__all__ = ["Backend", "backend_class", "backend_names", "create_backend"]
