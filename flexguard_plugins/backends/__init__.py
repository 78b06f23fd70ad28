"""Backends behind one async interface. Heavy libraries are imported only by the backend that needs them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .. import smollm2
from .base import Backend

NAMED_MODELS: Mapping[str, Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    smollm2.MODEL_NAME: smollm2.resolve}
"""Models shipped by name: (backend, options) → the built folder and the options it was measured with."""
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


def backend_option_names(name: str) -> tuple[str, ...] | None:
    """The keyword options backend `name` takes besides the model (None: it takes any)."""
    parameters = inspect.signature(backend_class(name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in parameters if p.name != "model" and p.kind in named)


def create_backend(name: str, model: str | None, **options: Any) -> Backend:
    return backend_class(name)(model, **options)


def resolve_backend_name(model: str | None, backend: str, options: Mapping[str, Any]) -> str:
    """The backend `backend="auto"` means: lite without a model, openai with a `base_url`, vLLM where it is
    installed and a GPU is visible, else transformers. Any other name is returned as given."""
    if backend != "auto":
        return backend
    if model is None:
        return "lite"
    if options.get("base_url"):
        return "openai"
    try:
        import torch
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            return "vllm"
    except ImportError:
        pass
    return "transformers"


def resolve_named_model(model: str | None, backend: str, options: dict[str, Any]
                        ) -> tuple[str | None, dict[str, Any]]:
    """A model shipped by name (`NAMED_MODELS`) → its built folder and the options it was measured with (the
    caller's win); any other model is returned as given."""
    named = NAMED_MODELS.get(model) if model is not None else None
    return (model, options) if named is None else named(backend, options)


__all__ = ["NAMED_MODELS", "Backend", "backend_class", "backend_names", "backend_option_names", "create_backend",
           "resolve_backend_name", "resolve_named_model"]
