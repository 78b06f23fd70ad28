"""The embedded lite scorer, opened once per session (its first use on a machine builds the int8 file)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lite_backend():
    """The shipped model on the int8 file in the default cache, shared with FlexGuard.load() users."""
    from flexguard_plugins.lite import LiteBackend

    backend = LiteBackend()
    backend.warmup()
    return backend


@pytest.fixture(scope="session")
def lite_facade(lite_backend):
    """`FlexGuard.load()` as a user gets it: the facade (chunking, batching) over the embedded scorer."""
    from flexguard_plugins import FlexGuard

    guard = FlexGuard.load()
    assert guard.backend.name == "lite"
    return guard


@pytest.fixture(scope="session")
def must_catch_cases():
    """The hand-written must-catch suite (tests/must_catch): the lite tests take their texts from it."""
    from tests.must_catch.suite import load_cases

    return load_cases()


@pytest.fixture(scope="session")
def data_root():
    """The public data folder (../shared/data or FLEXGUARD_DATA); tests that need it skip without it."""
    from flexguard_training.sources import DATA_ROOT

    if not DATA_ROOT.is_dir():
        pytest.skip(f"public data folder not found: {DATA_ROOT}")
    return DATA_ROOT
