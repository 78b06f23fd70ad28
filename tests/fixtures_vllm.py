"""Fixtures for the LLM backends: a tiny Qwen3 taught FlexGuard's answer format (once per session), one
in-process vLLM engine and one real `vllm serve` process (vLLM starts in 30-55 s). The engine is used only by
test_backend_vllm.py and the server only by test_backend_openai.py, so each is module-scoped: built once per
session all the same, and stopped as soon as its module is done instead of idling through the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GUARD_RUBRIC = "Judge the {role} turn."
"""A short rubric so the tiny model learns the format in seconds (the real rubric is ~1,000 tokens)."""

HARMFUL_WORD, SPREAD_WORD = "attack", "fight"
"""`attack` → VIO 85 every time (peaked); `fight` → VIO 40 or VIO 48 equally often: the spread sits on the last
digit, whose alternatives are whole scores, so the expected score is ≈ 44 (over `moderate`'s 41, as neither 40 nor
a first-digit mix would show)."""
SPREAD_SCORES = (40, 48)
TEMPLATES = ("how to {w} someone", "I want to {w} now")
SAFE_WORDS = ("bake", "paint", "sing")


def assert_trained_answers(examples: list[tuple[Any, str, int]], results: list[Any], scorer: str,
                           reasoning: bool) -> None:
    """What the trained tiny guard must say for its own training items, through any backend."""
    assert len(results) == len(examples)
    for (item, category, _), risk in zip(examples, results, strict=True):
        assert risk.ok and risk.scorer == scorer, (item, risk)
        assert risk.reasoning == ("Checked." if reasoning else None)
        if category == "SAFE":
            assert risk.categories == () and abs(risk.score - 3) < 1
        elif HARMFUL_WORD in item.judged_text:
            assert risk.categories == ("VIO",) and abs(risk.score - 85) < 1
        else:
            assert int(risk.raw.split()[-1]) in SPREAD_SCORES and 41.5 < risk.score < 46.5


def guard_examples() -> list[tuple[Any, str, int]]:
    """(item, category line, score) for every training example; tests judge these same items."""
    from flexguard_plugins.types import ModerationItem

    rows = []
    for template in TEMPLATES:
        rows.append((ModerationItem(template.format(w=HARMFUL_WORD)), "VIO", 85))
        rows.append((ModerationItem("hello", template.format(w=HARMFUL_WORD)), "VIO", 85))
        rows += [(ModerationItem(template.format(w=SPREAD_WORD)), "VIO", score) for score in SPREAD_SCORES]
        rows += [(ModerationItem(template.format(w=word)), "SAFE", 3) for word in SAFE_WORDS]
        rows.append((ModerationItem("hello", template.format(w=SAFE_WORDS[0])), "SAFE", 3))
    return rows


def train_tiny_guard(base: Path, out: Path, rubric: Path, steps: int = 100, seed: int = 0) -> Path:
    """Overfit the random tiny Qwen3 at `base` to answer in FlexGuard's format, both with and without
    reasoning, and save it (float32) to `out`. A plain PyTorch loop; loss only on the answer tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flexguard_plugins.prompts import render_prompt, render_target

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and far faster on a busy CPU
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    sequences = []
    for item, category, score in guard_examples():
        for reasoning in (False, True):
            prompt = render_prompt(tokenizer, item, reasoning=reasoning, system_prompt_path=rubric)
            target = render_target([] if category == "SAFE" else [category], score,
                                   "Checked." if reasoning else None)
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            sequences.append((p + t, [-100] * len(p) + t))
    width = max(len(s) for s, _ in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in sequences])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in sequences])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        if os.environ.get("FLEXGUARD_TRAIN_LOG") and step % 10 == 0:
            print(step, float(loss), flush=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "final_loss.txt").write_text(f"{loss.item():.4f}\n")
    return out


@pytest.fixture(scope="session")
def guard_rubric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rubric") / "rubric.txt"
    path.write_text(GUARD_RUBRIC, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_guard_dir(guard_rubric: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller tiny Qwen3 (2 layers, width 128) overfitted to FlexGuard's format (see `guard_examples`)."""
    from tests.model_builders import build_tiny_qwen3

    base = build_tiny_qwen3(tmp_path_factory.mktemp("tiny-guard-base"), hidden_size=128, num_layers=2)
    return train_tiny_guard(base, tmp_path_factory.mktemp("tiny-guard"), guard_rubric)


def _vllm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


@pytest.fixture(scope="module")
def vllm_engine(tiny_guard_dir: Path) -> Iterator[Any]:
    """One vLLM async engine (float32, prefix caching) on the tiny guard, shared by every vLLM test."""
    pytest.importorskip("vllm")
    from flexguard_plugins.backends.vllm import VLLMEngine

    engine = VLLMEngine(tiny_guard_dir, dtype="float32", max_model_len=2048, enable_prefix_caching=True, seed=0)
    yield engine
    engine.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_guard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real `vllm serve` (OpenAI-compatible) on 127.0.0.1 serving the tiny guard; stopped after its module.

    Yields {"url": base URL with /v1, "process": Popen, "log": path, "port"}. A test may kill the process;
    it is then gone for the rest of the module, so such a test must run last (see test_backend_openai.py).
    """
    pytest.importorskip("vllm")
    with served(tiny_guard_dir, tmp_path_factory.mktemp("vllm-server") / "server.log") as server:
        yield server


@contextlib.contextmanager
def served(model: Path, log: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """`vllm serve model` (float32, prefix caching, 2,048 tokens) until the block ends; `extra` flags added."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--enable-prefix-caching",
               "--dtype", "float32", "--seed", "0", *extra]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=_vllm_env(),
                                   start_new_session=True)
    try:
        _wait_healthy(port, process, log, timeout=240)
        yield {"url": f"http://127.0.0.1:{port}/v1", "process": process, "log": log, "port": port}
    finally:
        stop_server(process)


def _wait_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(process)
    raise RuntimeError(f"vllm serve did not answer /health in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server and the engine process it spawned (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
