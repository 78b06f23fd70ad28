"""Fixtures for the NeMo, LangChain and Guardrails-AI integration tests: the real embedded scorer, texts
taken from named cases of the must-catch suite, and a guard whose backend fails (the failure seam)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from flexguard_plugins import Backend, FlexGuard, ModerationItem, RiskScore
from tests.must_catch.suite import case

_HARMFUL_PAIR = case("response-ilg-harmful-01")  # a harmful reply to a neutral opener, paired in the suite
_BENIGN_PAIR = case("response-safe-benign-01")  # a benign reply to the benign prompt

HARMFUL = case("prompt-vio-severe-01").prompt
BENIGN = case("prompt-safe-benign-01").prompt
BORDERLINE = case("prompt-dis-borderline-01").prompt
OPENER = _HARMFUL_PAIR.prompt
HARMFUL_REPLY = _HARMFUL_PAIR.response
BENIGN_REPLY = _BENIGN_PAIR.response
"""Written from the rubric in `tests/must_catch/cases.jsonl`, never chosen by scoring them with a model: the harmful
prompt is a severe case (≥ 81), the benign prompt and the opener are everyday requests (≤ 20), the borderline
prompt is a mild insult expected LOW or MODERATE; the harmful reply complies with theft after the opener (≥ 61),
the benign reply answers the benign prompt (≤ 20). `texts` checks the scorer against them, so a scorer that
misjudges them fails there."""

STRICT, LOOSE = 21.0, 61.0


class FailingBackend(Backend):
    """A scorer that is down: every batch raises (the facade turns it into an undecided score)."""

    name = "failing"

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        raise RuntimeError("scorer is down")


class CountingBackend(Backend):
    """Delegates to a real backend and counts the batches it is handed (to see the micro-batcher work)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_batch_size = inner.max_batch_size
        self.max_content_tokens = inner.max_content_tokens
        self.tokenizer = inner.tokenizer
        self.batch_sizes: list[int] = []

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        self.batch_sizes.append(len(items))
        return await self.inner.score_batch(items)


@pytest.fixture(scope="session")
def lite_guard() -> FlexGuard:
    """The process-wide embedded scorer: the same object every wrapper gets with no model configured."""
    return FlexGuard.load()


@pytest.fixture(scope="session")
def texts(lite_guard: FlexGuard) -> dict[str, str]:
    """The three texts, with their scores checked so a changed scorer fails loudly here."""
    def score(prompt: str, response: str | None = None) -> float:
        risk = lite_guard.score(prompt, response)  # one at a time, as most tests check them
        assert risk.ok, risk
        return risk.score

    assert score(HARMFUL) >= LOOSE and score(OPENER, HARMFUL_REPLY) >= LOOSE and score("", HARMFUL_REPLY) >= LOOSE
    assert max(score(BENIGN), score(OPENER), score(BENIGN, BENIGN_REPLY), score("", BENIGN_REPLY)) < STRICT
    assert STRICT <= score(BORDERLINE) < LOOSE
    return {"harmful": HARMFUL, "benign": BENIGN, "borderline": BORDERLINE, "opener": OPENER,
            "harmful_reply": HARMFUL_REPLY, "benign_reply": BENIGN_REPLY}


@pytest.fixture(scope="session")
def failing_guard() -> FlexGuard:
    guard = FlexGuard(FailingBackend())
    yield guard
    guard.close()


@pytest.fixture()
def counting_guard(lite_guard: FlexGuard) -> FlexGuard:
    """A separate facade over the real embedded scorer, counting backend batches."""
    guard = FlexGuard(CountingBackend(lite_guard.backend))
    yield guard
    guard.close()


@pytest.fixture(scope="module")
def guardrails_settings(tmp_path_factory: pytest.TempPathFactory, texts: dict[str, str]):
    """Guardrails-AI re-reads ~/.guardrailsrc whenever a Guard is built or configured; without one, metrics
    default to on. Point HOME at a private home that turns them off, for the Guardrails tests only.
    (`texts` first: the embedded scorer then has built its cache under the real HOME.)"""
    home = tmp_path_factory.mktemp("guardrails-home")
    (home / ".guardrailsrc").write_text("enable_metrics=false\nuse_remote_inferencing=false\n")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    from guardrails.classes.rc import RC
    from guardrails.settings import settings

    settings.rc = RC.load()
    assert settings.rc.enable_metrics is False
    yield settings
    if saved is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = saved
    settings.rc = RC.load()


@pytest.fixture(scope="session")
def nemo_config_dir() -> Path:
    from flexguard_plugins import nemo_config_path

    return nemo_config_path()


@pytest.fixture()
def scripted_guard():
    """A guard over the keyword-scripted backend (the I/O seam): "bomb" → 92, "steal" → 55, else SAFE 4."""
    from tests.scripted_backend import ScriptedBackend

    guard = FlexGuard(ScriptedBackend())
    yield guard
    guard.close()


def count_core_calls(guard: FlexGuard, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap `guard.acheck_batch` for one test: the list it returns grows by each call's item count."""
    calls: list[int] = []
    real = guard.acheck_batch

    async def spy(items, *args, **kwargs):
        calls.append(len(items))
        return await real(items, *args, **kwargs)

    monkeypatch.setattr(guard, "acheck_batch", spy)
    return calls
