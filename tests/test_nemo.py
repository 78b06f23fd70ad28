"""FlexGuard rails in the real NeMo Guardrails runtime (Colang 1.0), on the embedded scorer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
import pytest_socket

pytest.importorskip("nemoguardrails")

from nemoguardrails import LLMRails, RailsConfig  # noqa: E402
from nemoguardrails.rails.llm.options import RailStatus  # noqa: E402
from nemoguardrails.testing import FakeLLMModel, TestChat  # noqa: E402

from flexguard_plugins import FlexGuard  # noqa: E402

from .fixtures_integrations import LOOSE, STRICT  # noqa: E402

REFUSAL = "I'm sorry, I can't respond to that."


def make_config(tmp_path: Path, nemo_config_dir: Path, body: str) -> RailsConfig:
    """A user's own config folder that imports the FlexGuard rail by path (as from an installed package)."""
    folder = tmp_path / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(f"import_paths:\n  - {nemo_config_dir / 'rail'}\n{body}")
    return RailsConfig.from_path(str(folder))


def rails_for(tmp_path: Path, nemo_config_dir: Path, strictness: str = "moderate", flows: str = "",
              extra: str = "", llm: FakeLLMModel | None = None) -> LLMRails:
    flows = flows or "  input:\n    flows:\n      - flexguard check input\n" \
                     "  output:\n    flows:\n      - flexguard check output\n"
    body = f"rails:\n{flows}custom_data:\n  flexguard:\n    strictness: {strictness}\n{extra}"
    return LLMRails(make_config(tmp_path, nemo_config_dir, body), llm=llm)


def turn(user: str, bot: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": user}]
    return messages + ([{"role": "assistant", "content": bot}] if bot is not None else [])


async def outcomes(rails: LLMRails, messages: list[dict], which: list[str]) -> list:
    """The RailOutcomes the FlexGuard actions returned, read from NeMo's activated-rails log."""
    response = await rails.generate_async(messages=messages, options={"rails": which, "log": {"activated_rails": True}})
    return [a.return_value for r in response.log.activated_rails for a in r.executed_actions
            if a.action_name.startswith("flexguard_")]


def test_shipped_config_loads_from_the_package(nemo_config_dir: Path) -> None:
    config = RailsConfig.from_path(str(nemo_config_dir))
    assert config.rails.input.flows == ["flexguard check input"]
    assert config.rails.output.flows == ["flexguard check output"]
    assert config.custom_data["flexguard"]["strictness"] == "moderate"
    rails = LLMRails(config)
    for name in ("flexguard_check_input", "flexguard_check_output"):
        assert rails.runtime.action_dispatcher.has_registered(name)


async def test_shipped_config_blocks_and_passes(nemo_config_dir: Path, texts: dict) -> None:
    rails = LLMRails(RailsConfig.from_path(str(nemo_config_dir)))
    blocked = await rails.check_async(turn(texts["harmful"]))
    assert blocked.status == RailStatus.BLOCKED and blocked.rail == "flexguard check input"
    assert (await rails.check_async(turn(texts["benign"]))).status == RailStatus.PASSED


@pytest.mark.parametrize("strictness", ["strict", "moderate", "loose"])
async def test_check_async_each_strictness(tmp_path, nemo_config_dir, texts, strictness) -> None:
    rails = rails_for(tmp_path, nemo_config_dir, strictness)
    assert (await rails.check_async(turn(texts["harmful"]))).status == RailStatus.BLOCKED
    assert (await rails.check_async(turn(texts["benign"]))).status == RailStatus.PASSED
    output_blocked = await rails.check_async(turn(texts["opener"], texts["harmful_reply"]))
    assert output_blocked.status == RailStatus.BLOCKED and output_blocked.rail == "flexguard check output"
    assert (await rails.check_async(turn(texts["benign"], texts["benign_reply"]))).status == RailStatus.PASSED


async def test_borderline_blocked_strict_passed_loose(tmp_path, nemo_config_dir, texts) -> None:
    strict = rails_for(tmp_path / "s", nemo_config_dir, "strict")
    loose = rails_for(tmp_path / "l", nemo_config_dir, "loose")
    assert (await strict.check_async(turn(texts["borderline"]))).status == RailStatus.BLOCKED
    assert (await loose.check_async(turn(texts["borderline"]))).status == RailStatus.PASSED
    (blocked,) = await outcomes(strict, turn(texts["borderline"]), ["input"])
    (allowed,) = await outcomes(loose, turn(texts["borderline"]), ["input"])
    assert blocked.is_blocked and not allowed.is_blocked
    assert blocked.metadata["threshold"] == STRICT and allowed.metadata["threshold"] == LOOSE
    assert STRICT <= blocked.metadata["score"] < LOOSE and blocked.metadata["score"] == allowed.metadata["score"]
    assert blocked.metadata["mode"] == "prompt" and blocked.metadata["categories"]


async def test_flow_parameter_overrides_strictness(tmp_path, nemo_config_dir, texts) -> None:
    flows = "  input:\n    flows:\n      - flexguard check input $strictness=strict\n" \
            "  output:\n    flows:\n      - flexguard check output $strictness=30\n"
    rails = rails_for(tmp_path, nemo_config_dir, "loose", flows=flows)
    assert (await rails.check_async(turn(texts["borderline"]))).status == RailStatus.BLOCKED
    (outcome,) = await outcomes(rails, turn(texts["opener"], texts["harmful_reply"]), ["output"])
    assert outcome.is_blocked and outcome.metadata["threshold"] == 30.0 and outcome.metadata["mode"] == "response"


def test_generate_turn_with_fake_main_llm(tmp_path, nemo_config_dir, texts) -> None:
    config = make_config(tmp_path, nemo_config_dir, "passthrough: true\nrails:\n  input:\n    flows:\n"
                         "      - flexguard check input\n  output:\n    flows:\n      - flexguard check output\n")
    chat = TestChat(config, llm_completions=[texts["benign_reply"], texts["harmful_reply"]])
    chat.user(texts["benign"])
    chat.bot(texts["benign_reply"])
    chat.user(texts["opener"])
    chat.bot(REFUSAL)  # the main LLM's harmful answer is stopped by the output rail
    assert chat.llm.inference_count == 2
    result = chat.app.generate(messages=turn(texts["harmful"]))
    assert result["content"] == REFUSAL and chat.llm.inference_count == 2  # input rail: main LLM never called


async def test_streaming_output_rail_ends_stream_on_block(tmp_path, nemo_config_dir, texts) -> None:
    body = ("passthrough: true\nstreaming: true\nrails:\n  output:\n    flows:\n      - flexguard check output\n"
            "    streaming:\n      enabled: true\n      chunk_size: 12\n      context_size: 2\n"
            "      stream_first: false\n")
    llm = FakeLLMModel(responses=[texts["benign_reply"], texts["harmful_reply"]])
    rails = LLMRails(make_config(tmp_path, nemo_config_dir, body), llm=llm)
    chunks = [c async for c in rails.stream_async(messages=turn(texts["benign"]))]
    assert "".join(chunks).split() == texts["benign_reply"].split()
    chunks = [c async for c in rails.stream_async(messages=turn(texts["opener"]))]
    error = json.loads(chunks[-1])["error"]
    assert error["type"] == "guardrails_violation" and error["param"] == "flexguard check output"
    assert "ignition wires" not in "".join(chunks[:-1])  # the stream ended before the end of the reply


async def test_scorer_failure_fails_closed(tmp_path, nemo_config_dir, texts, failing_guard: FlexGuard) -> None:
    rails = rails_for(tmp_path, nemo_config_dir)
    rails.register_action_param("flexguard", failing_guard)
    result = await rails.check_async(turn(texts["benign"]))
    assert result.status == RailStatus.BLOCKED
    (outcome,) = await outcomes(rails, turn(texts["benign"]), ["input"])
    assert outcome.is_blocked and outcome.failed and outcome.metadata["failed"] and "scorer is down" in outcome.reason


async def test_action_error_fails_closed(tmp_path, nemo_config_dir, texts, failing_guard: FlexGuard) -> None:
    """on_error=raise makes the action raise; NeMo then stops the turn with its internal-error message."""
    rails = rails_for(tmp_path / "raise", nemo_config_dir, extra="    on_error: raise\n")
    rails.register_action_param("flexguard", failing_guard)
    result = await rails.check_async(turn(texts["benign"]))
    assert result.status != RailStatus.PASSED and result.content != texts["benign"]
    typo = rails_for(tmp_path / "typo", nemo_config_dir, extra="    strictnes: strict\n")
    assert (await typo.check_async(turn(texts["benign"]))).status != RailStatus.PASSED


async def test_on_error_allow_lets_text_through(tmp_path, nemo_config_dir, texts, failing_guard) -> None:
    rails = rails_for(tmp_path, nemo_config_dir, extra="    on_error: allow\n")
    rails.register_action_param("flexguard", failing_guard)
    assert (await rails.check_async(turn(texts["benign"]))).status == RailStatus.PASSED


async def test_concurrent_checks_share_batches(tmp_path, nemo_config_dir, texts, counting_guard) -> None:
    rails = rails_for(tmp_path, nemo_config_dir)
    rails.register_action_param("flexguard", counting_guard)
    prompts = [texts["benign"], texts["harmful"]] * 100
    results = await asyncio.gather(*(rails.check_async(turn(p)) for p in prompts))
    assert [r.status for r in results] == [RailStatus.PASSED, RailStatus.BLOCKED] * 100
    sizes = counting_guard.backend.batch_sizes
    assert sum(sizes) == 200 and len(sizes) <= 100, sizes  # two or more checks per scorer call on average


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_no_telemetry_and_no_network() -> None:
    from nemoguardrails.telemetry import _is_usage_stats_enabled

    assert os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] == "1"
    assert not _is_usage_stats_enabled()
    with pytest.raises((pytest_socket.SocketBlockedError, pytest_socket.SocketConnectBlockedError)):
        socket.create_connection(("93.184.216.34", 443), timeout=1)
