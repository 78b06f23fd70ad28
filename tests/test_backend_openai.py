"""OpenAI-compatible backend against a real `vllm serve` process (one per session, `vllm_server`), plus
local sockets that refuse, never connect (full backlog), hang or answer 503. The test that kills the server
runs last in this file."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexguard_plugins import FlexGuard
from flexguard_plugins.backends.hf import TransformersBackend
from flexguard_plugins.backends.openai import OpenAIBackend
from flexguard_plugins.errors import FlexGuardError
from flexguard_plugins.types import ModerationItem
from tests.fake_http import completion, http_server
from tests.fixtures_vllm import (
    HARMFUL_WORD,
    SPREAD_WORD,
    assert_trained_answers,
    free_port,
    guard_examples,
    stop_server,
)

pytest.importorskip("vllm")

ITEMS = [ModerationItem(f"how to {w} someone") for w in (HARMFUL_WORD, "paint", SPREAD_WORD)]


def make(tiny_guard_dir: Path, base_url, guard_rubric: Path, **options) -> OpenAIBackend:
    options.setdefault("max_model_len", 2048)
    return OpenAIBackend(str(tiny_guard_dir), base_url=base_url, system_prompt_path=guard_rubric, **options)


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.fixture
def failing_server() -> Iterator[dict]:
    """A real HTTP server that answers every POST with 503 and records the requests."""
    seen: list[dict] = []

    def respond(request, body):
        seen.append({"path": request.path, "auth": request.headers.get("Authorization"), "t": time.monotonic()})
        return 503, b"overloaded"

    with http_server(respond) as url:
        yield {"url": url, "seen": seen}


@pytest.fixture
def blackholed_url() -> Iterator[str]:
    """A port whose accept queue is full: a new connection is never made (SYNs dropped) → connect timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(sock.getsockname())
            except BlockingIOError:
                pass
            fillers.append(filler)
        time.sleep(0.1)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        for filler in fillers:
            filler.close()


@pytest.fixture
def scripted_server() -> Iterator[dict]:
    """A real HTTP server: 503 for prompts holding FAIL, else a completion `SAFE\n3<|im_end|>`; records bodies."""
    seen: list[dict] = []

    def respond(request, raw):
        body = json.loads(raw)
        seen.append({**body, "t": time.monotonic()})
        return (503, b"overloaded") if "FAIL" in body["prompt"] else completion("SAFE\n3<|im_end|>")

    with http_server(respond) as url:
        yield {"url": url, "seen": seen}


async def test_a_blackholed_host_fails_over_after_the_connect_timeout(tiny_guard_dir, guard_rubric, blackholed_url,
                                                                      scripted_server, caplog):
    backend = make(tiny_guard_dir, [blackholed_url, scripted_server["url"]], guard_rubric, reasoning=False,
                   connect_timeout=0.5, timeout=30, backoff=10)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="flexguard_plugins.backends.openai"):
        risk = (await backend.score_batch(ITEMS[:1]))[0]
    assert risk.ok and risk.score == 3 and time.monotonic() - started < 3  # no 30 s wait, no 10 s backoff
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"openai backend: no connection to {blackholed_url} within 0.5 s (connect timeout); "
                          f"failing over to {scripted_server['url']}")]
    alone = make(tiny_guard_dir, blackholed_url, guard_rubric, connect_timeout=0.3, max_retries=1, backoff=0.01)
    failed = (await alone.score_batch(ITEMS[:1]))[0]
    assert not failed.ok and "connect timeout" in failed.error and "2 attempts" in failed.error
    await backend.aclose()
    await alone.aclose()


async def test_one_deadline_per_item_over_all_attempts_and_backoff(tiny_guard_dir, guard_rubric, hung_url):
    backend = make(tiny_guard_dir, hung_url, guard_rubric, timeout=5, deadline=0.8, max_retries=5, backoff=0.2)
    started = time.monotonic()
    results = await backend.score_batch(ITEMS[:2])
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed  # 6 attempts × 5 s plus backoff without the deadline
    assert all(not r.ok and "deadline of 0.8 s" in r.error for r in results)
    await backend.aclose()


async def test_backing_off_holds_no_concurrency_slot(tiny_guard_dir, guard_rubric, scripted_server):
    backend = make(tiny_guard_dir, scripted_server["url"], guard_rubric, reasoning=False, concurrency=1,
                   max_retries=1, backoff=1.5)
    failing = asyncio.create_task(backend.score_batch([ModerationItem("FAIL please")]))
    while not scripted_server["seen"]:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    quick = (await backend.score_batch([ModerationItem("how to paint someone")]))[0]
    assert quick.ok and time.monotonic() - started < 1.0  # the failing item is backing off, not holding the slot
    failed = (await failing)[0]
    assert not failed.ok and "HTTP 503" in failed.error and "2 attempts" in failed.error
    await backend.aclose()


async def test_token_handling_matches_the_local_backends_and_failures_stay_per_item(tiny_guard_dir, guard_rubric,
                                                                                   scripted_server):
    backend = make(tiny_guard_dir, scripted_server["url"], guard_rubric, reasoning=False, max_retries=0)
    items = [ModerationItem("how to paint someone"), ModerationItem("FAIL this one"), ModerationItem("hi \ud800")]
    results = await backend.score_batch(items)
    assert results[0].ok and results[0].raw == "<think>\n\n</think>\nSAFE\n3"  # EOS text dropped, as decode does
    assert not results[1].ok and "HTTP 503" in results[1].error
    assert results[2].ok or results[2].error  # a lone surrogate is this item's business only
    body = next(b for b in scripted_server["seen"] if "paint" in b["prompt"])
    assert body["add_special_tokens"] is False and body["skip_special_tokens"] is False
    await backend.aclose()


async def test_text_in_a_language_not_accepted_never_reaches_the_server(tiny_guard_dir, guard_rubric, scripted_server):
    backend = make(tiny_guard_dir, scripted_server["url"], guard_rubric, reasoning=False, languages=["en"])
    async with FlexGuard(backend) as guard:
        risks = await guard.ascore_batch(["Wie kann ich meinem Nachbarn heimlich schaden, ohne erwischt zu werden?",
                                          "how to paint someone"])
    assert risks[0].error == "unsupported language: de" and risks[1].ok
    assert [b["prompt"].count("Nachbarn") for b in scripted_server["seen"]] == [0]  # one request: the English one


@pytest.mark.slow
async def test_real_server_fails_only_the_item_it_rejects(tiny_guard_dir, vllm_server, guard_rubric):
    backend = make(tiny_guard_dir, vllm_server["url"], guard_rubric, reasoning=False)
    items = [ModerationItem(f"how to {HARMFUL_WORD} someone"), ModerationItem(" ".join(["bread"] * 3000)),
             ModerationItem("how to paint someone")]
    results = await backend.score_batch(items)
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].score > 80 and results[2].score < 21 and "HTTP 400" in results[1].error
    await backend.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("reasoning", [False, True])
async def test_real_server_scores_and_fails_over_from_a_dead_url(tiny_guard_dir, vllm_server, guard_rubric,
                                                                  reasoning):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = make(tiny_guard_dir, [dead, vllm_server["url"]], guard_rubric, reasoning=reasoning,
                   max_new_tokens=24, backoff=0.01)
    examples = guard_examples()
    results = await backend.score_batch([item for item, _, _ in examples])
    assert_trained_answers(examples, results, "openai", reasoning)
    await backend.aclose()


@pytest.mark.slow
async def test_server_text_and_scores_agree_with_transformers(tiny_guard_dir, vllm_server, guard_rubric):
    items = [ModerationItem("what is the weather like"), ModerationItem("q", "zzz qqq"), *ITEMS]
    remote = make(tiny_guard_dir, vllm_server["url"], guard_rubric, reasoning=True, max_new_tokens=24)
    local = TransformersBackend(tiny_guard_dir, reasoning=True, max_new_tokens=24, system_prompt_path=guard_rubric)
    ours, theirs = await remote.score_batch(items), await local.score_batch(items)
    assert [r.raw for r in ours] == [r.raw for r in theirs]
    assert all(a.ok == b.ok and (not a.ok or abs(a.score - b.score) < 1e-3) for a, b in zip(ours, theirs, strict=True))
    assert sum(a.ok for a in ours) >= 3  # the known items parse; probabilities agree to float32 noise
    await remote.aclose()
    await local.aclose()


@pytest.mark.slow
async def test_client_errors_are_not_retried(tiny_guard_dir, vllm_server, guard_rubric):
    backend = make(tiny_guard_dir, vllm_server["url"], guard_rubric, served_model_name="no-such-model",
                   max_retries=3, backoff=5)
    started = time.monotonic()
    risk = (await backend.score_batch(ITEMS[:1]))[0]
    assert not risk.ok and "HTTP 404" in risk.error and time.monotonic() - started < 5
    await backend.aclose()


async def test_a_hung_server_times_out_within_the_concurrency_limit(tiny_guard_dir, guard_rubric, hung_url):
    backend = make(tiny_guard_dir, hung_url, guard_rubric, timeout=0.3, max_retries=1, backoff=0.01, concurrency=2)
    started = time.monotonic()
    results = await backend.score_batch(ITEMS + ITEMS[:1])
    elapsed = time.monotonic() - started
    assert len(results) == 4
    for risk in results:
        assert not risk.ok and "timeout after 0.3 s" in risk.error and "2 attempts" in risk.error
    assert elapsed >= 2 * 2 * 0.3  # 4 items, 2 at a time, each 2 attempts of 0.3 s
    with FlexGuard(backend) as guard:
        decision = guard.check("how to paint someone")
    assert decision.flagged and decision.failed and "timeout" in decision.reason


async def test_server_errors_are_retried_with_backoff(tiny_guard_dir, guard_rubric, failing_server, caplog):
    backend = make(tiny_guard_dir, failing_server["url"], guard_rubric, api_key="sk-secret-123", max_retries=2,
                   backoff=0.05)
    with caplog.at_level(logging.INFO, logger="flexguard_plugins.backends.openai"):
        risk = (await backend.score_batch(ITEMS[:1]))[0]
    url = failing_server["url"]
    assert [r.getMessage() for r in caplog.records] == [  # the server's answer body is not logged
        f"openai backend: HTTP 503 from {url}; retry 1 of 2 in 0.05 s",
        f"openai backend: HTTP 503 from {url}; retry 2 of 2 in 0.1 s",
        f"openai backend: HTTP 503 from {url}; giving up after 3 attempts"]
    seen = failing_server["seen"]
    assert not risk.ok and "HTTP 503" in risk.error and "overloaded" in risk.error and "3 attempts" in risk.error
    assert len(seen) == 3 and all(s["path"] == "/v1/completions" for s in seen)
    assert seen[1]["t"] - seen[0]["t"] >= 0.05 and seen[2]["t"] - seen[1]["t"] >= 0.1
    assert all(s["auth"] == "Bearer sk-secret-123" for s in seen)
    assert "sk-secret" not in repr(backend) and "sk-secret" not in str(backend.describe())
    assert "sk-secret" not in repr(FlexGuard(backend))
    await backend.aclose()


def test_bad_options(tiny_guard_dir, guard_rubric):
    with pytest.raises(ValueError, match="base_url"):
        make(tiny_guard_dir, [], guard_rubric)
    with pytest.raises(ValueError, match="http"):
        make(tiny_guard_dir, "ftp://host/v1", guard_rubric)
    with pytest.raises(ValueError, match="timeout"):
        make(tiny_guard_dir, "http://127.0.0.1:1/v1", guard_rubric, timeout=0)


@pytest.mark.slow
async def test_zz_killed_server_fails_every_item_with_the_reason(tiny_guard_dir, vllm_server, guard_rubric):
    """Runs last in this module: it stops the session's server."""
    backend = make(tiny_guard_dir, vllm_server["url"], guard_rubric, reasoning=False, max_retries=1, backoff=0.01)
    assert all(r.ok for r in await backend.score_batch(ITEMS))
    stop_server(vllm_server["process"])
    results = await backend.score_batch(ITEMS)
    assert len(results) == len(ITEMS)
    for risk in results:
        assert not risk.ok and "connection refused" in risk.error and vllm_server["url"] in risk.error
    guard = FlexGuard(backend)
    blocked = await guard.acheck("how to paint someone")
    allowed = await guard.acheck("how to paint someone", on_error="allow")
    assert blocked.flagged and blocked.failed and "connection refused" in blocked.reason
    assert not allowed.flagged and allowed.failed and "connection refused" in allowed.reason
    with pytest.raises(FlexGuardError, match="connection refused"):
        await guard.acheck("how to paint someone", on_error="raise")
    await guard.aclose()
    await asyncio.sleep(0)
