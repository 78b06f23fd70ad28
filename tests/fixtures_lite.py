"""The embedded lite scorer, opened once per session (its first use on a machine builds the int8 file)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lite_backend():
    """The shipped head on the int8 encoder in the default cache, shared with FlexGuard.load() users."""
    from flexguard_plugins.lite import LiteBackend

    backend = LiteBackend()
    backend.warmup()
    return backend


@pytest.fixture(scope="session")
def data_root():
    """The public data folder (../shared/data or FLEXGUARD_DATA); tests that need it skip without it."""
    from flexguard_training.sources import DATA_ROOT

    if not DATA_ROOT.is_dir():
        pytest.skip(f"public data folder not found: {DATA_ROOT}")
    return DATA_ROOT
