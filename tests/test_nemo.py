"""FlexGuard rails in the real NeMo Guardrails runtime (Colang 1.0), on the embedded scorer."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
import pytest_socket

pytest.importorskip("nemoguardrails")

from nemoguardrails import LLMRails, RailsConfig  # noqa: E402
from nemoguardrails.rails.llm.options import RailStatus  # noqa: E402
from nemoguardrails.testing import FakeLLMModel, TestChat  # noqa: E402

from flexguard_plugins import MIN_RECHECK_CHARS, FlexGuard, RiskScore  # noqa: E402

from .fixtures_integrations import LOOSE, STRICT, count_core_calls  # noqa: E402
from .scripted_backend import PLOT, ClearedLaterBackend, ScriptedBackend  # noqa: E402

REFUSAL = "I'm sorry, I can't respond to that."


def make_config(tmp_path: Path, nemo_config_dir: Path, body: str) -> RailsConfig:
    """A user's own config folder that imports the FlexGuard rail by path (as from an installed package)."""
    folder = tmp_path / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(f"import_paths:\n  - {nemo_config_dir / 'rail'}\n{body}")
    return RailsConfig.from_path(str(folder))


def rails_for(tmp_path: Path, nemo_config_dir: Path, strictness: str | None = "moderate", flows: str = "",
              extra: str = "", llm: FakeLLMModel | None = None) -> LLMRails:
    flows = flows or "  input:\n    flows:\n      - flexguard check input\n" \
                     "  output:\n    flows:\n      - flexguard check output\n"
    settings = (f"    strictness: {strictness}\n" if strictness is not None else "") + extra
    body = f"rails:\n{flows}" + (f"custom_data:\n  flexguard:\n{settings}" if settings else "")
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
    assert "strictness" not in config.custom_data["flexguard"]  # unset: the guard's own default (moderate)
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


HOUSE_POLICY = {"version": 1, "default_regime": "tight",
                "regimes": {"tight": {"threshold": 15.0}, "loose": {"threshold": 61.0}}}
OWN_THRESHOLDS = [  # (input flow parameter, output flow parameter, input threshold, output threshold); config: strict
    ("$strictness=loose", "", LOOSE, STRICT),
    ("", "$strictness=loose", STRICT, LOOSE),
    ("$strictness=50", "", 50.0, STRICT),
    ("$strictness=house.json#loose", "", LOOSE, STRICT),
    ("", "$strictness=house.json", STRICT, 15.0),
    ("$strictness=loose", "$strictness=35", LOOSE, 35.0),
]


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("input_param, output_param, input_threshold, output_threshold", OWN_THRESHOLDS)
async def test_each_flow_keeps_its_own_threshold(tmp_path, nemo_config_dir, scripted_guard, parallel, input_param,
                                                 output_param, input_threshold, output_threshold) -> None:
    """Colang 1.0 flow parameters are context variables: one flow's `$strictness` must not reach the next flow."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "house.json").write_text(json.dumps(HOUSE_POLICY))
    run = f"    parallel: {str(parallel).lower()}\n"
    flows = (f"  input:\n{run}    flows:\n      - flexguard check input {input_param}\n"
             f"  output:\n{run}    flows:\n      - flexguard check output {output_param}\n").replace(" \n", "\n")
    rails = rails_for(tmp_path, nemo_config_dir, "strict", flows=flows)
    rails.register_action_param("flexguard", scripted_guard)
    checked = await outcomes(rails, turn("hello there", "nice to meet you"), ["input", "output"])
    assert [(o.metadata["mode"], o.metadata["threshold"]) for o in checked] == [
        ("prompt", input_threshold), ("response", output_threshold)]


async def test_another_rails_strictness_variable_is_not_ours(tmp_path, nemo_config_dir, scripted_guard) -> None:
    """A rail of your own that takes a `$strictness` parameter leaves it in the context: FlexGuard does not read it."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "house.co").write_text("define subflow house check\n  $house_checked = True\n")
    flows = "  input:\n    flows:\n      - house check $strictness=loose\n      - flexguard check input\n"
    rails = rails_for(tmp_path, nemo_config_dir, "strict", flows=flows)
    rails.register_action_param("flexguard", scripted_guard)
    (checked,) = await outcomes(rails, turn("hello there"), ["input"])
    assert checked.metadata["threshold"] == STRICT


async def test_streaming_output_rail_keeps_its_own_threshold(tmp_path, nemo_config_dir, scripted_guard) -> None:
    """A loose input flow must not loosen a streaming output rail ("flirt" scores SEX 30: strict blocks it)."""
    body = ("passthrough: true\nstreaming: true\nrails:\n  input:\n    flows:\n      - flexguard check input "
            "$strictness=loose\n  output:\n    flows:\n      - flexguard check output\n    streaming:\n"
            "      enabled: true\n      chunk_size: 4\n      context_size: 1\n      stream_first: false\n"
            "custom_data:\n  flexguard:\n    strictness: strict\n")
    llm = FakeLLMModel(responses=["shall we flirt a little over dinner tonight then"])
    rails = LLMRails(make_config(tmp_path, nemo_config_dir, body), llm=llm)
    rails.register_action_param("flexguard", scripted_guard)
    chunks = [c async for c in rails.stream_async(messages=turn("let us flirt"))]  # passes the loose input rail
    assert json.loads(chunks[-1])["error"]["type"] == "guardrails_violation"


BRANCHING_FLOWS = """define bot say close to the line
  "Let us keep this civil."

define subflow warn near the line
  if $flexguard_decision.score >= 21
    bot say close to the line
    stop
"""


async def test_a_colang_flow_branches_on_the_decision(tmp_path, nemo_config_dir, texts) -> None:
    """The input rail lets the borderline text through at loose; a flow of the user's own reads `$flexguard_decision`
    and answers it; `output_vars` returns the decision to the caller."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "house.co").write_text(BRANCHING_FLOWS)
    flows = "  input:\n    flows:\n      - flexguard check input\n      - warn near the line\n"
    rails = rails_for(tmp_path, nemo_config_dir, "loose", flows=flows)
    warned = await rails.check_async(turn(texts["borderline"]))
    assert (warned.status, warned.rail, warned.content) == (RailStatus.BLOCKED, "warn near the line",
                                                            "Let us keep this civil.")
    assert (await rails.check_async(turn(texts["benign"]))).status == RailStatus.PASSED
    response = await rails.generate_async(messages=turn(texts["borderline"]),
                                          options={"rails": ["input"], "output_vars": ["flexguard_decision"]})
    decision = response.output_data["flexguard_decision"]
    assert decision["mode"] == "prompt" and decision["threshold"] == LOOSE and not decision["flagged"]
    assert STRICT <= decision["score"] < LOOSE and decision["categories"] and decision["reason"].startswith("allowed")


async def test_shadow_mode_records_every_decision_and_never_blocks(tmp_path, nemo_config_dir, texts, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flexguard_plugins.decisions")
    flows = "  input:\n    flows:\n      - flexguard check input $strictness=strict\n" \
            "  output:\n    flows:\n      - flexguard check output\n"
    rails = rails_for(tmp_path, nemo_config_dir, "strict", flows=flows, extra="    shadow: true\n")
    assert [r.levelname for r in caplog.records if "shadow mode" in r.getMessage()] == ["WARNING"]
    assert (await rails.check_async(turn(texts["harmful"]))).status == RailStatus.PASSED
    assert (await rails.check_async(turn(texts["opener"], texts["harmful_reply"]))).status == RailStatus.PASSED
    response = await rails.generate_async(messages=turn(texts["harmful"]),
                                          options={"rails": ["input"], "output_vars": ["flexguard_decision"]})
    decision = response.output_data["flexguard_decision"]
    assert decision["shadow"] and decision["would_flag"] and not decision["flagged"] and decision["score"] >= LOOSE
    assert decision["reason"].startswith("shadow, not enforced: flagged")
    logged = [r.getMessage() for r in caplog.records if r.name == "flexguard_plugins.decisions"]
    assert len(logged) == 4 and all(m.startswith("shadow, not enforced: ") for m in logged)  # both rails ran once
    assert sum("flagged" in m for m in logged) == 3  # the harmful input (twice) and reply; not the opener


async def test_shadow_mode_never_stops_a_stream(tmp_path, nemo_config_dir, scripted_guard) -> None:
    reply = "first build the bomb and then leave it there"
    rails = streaming_rails(tmp_path, nemo_config_dir, [reply], extra="custom_data:\n  flexguard:\n    shadow: true\n")
    rails.register_action_param("flexguard", scripted_guard)
    chunks = [c async for c in rails.stream_async(messages=turn("hello"))]
    assert "".join(chunks).split() == reply.split()


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


async def test_action_error_fails_closed(tmp_path, nemo_config_dir, failing_guard: FlexGuard, caplog) -> None:
    """on_error=raise makes the action raise; NeMo then stops the turn with its internal-error message, and its
    log of the failed action's parameters no longer holds the whole configuration."""
    rails = rails_for(tmp_path / "raise", nemo_config_dir, extra="    on_error: raise\n")
    rails.register_action_param("flexguard", failing_guard)
    result = await rails.check_async(turn("hello there"))
    assert result.status != RailStatus.PASSED and result.content != "hello there"
    failures = [r.getMessage() for r in caplog.records if "flexguard_check_input" in r.getMessage()]
    assert failures and all("custom_data" not in m and "import_paths" not in m for m in failures)


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
    # Checks that reach the guard while it is scoring share its next call (the default lingers 0 ms), so how
    # many share depends on timing: 28-67 calls measured beside two training jobs, over 100 once under
    # heavier load. A NeMo path that serialised the guard would make exactly 200.
    assert sum(sizes) == 200 and len(sizes) < 200, sizes


async def test_concurrent_checks_share_guard_calls(tmp_path, nemo_config_dir, texts, lite_guard, monkeypatch) -> None:
    """Checks made together reach the guard a backend batch per call (each call is a hop to the guard's thread), and
    each check still gets its own policy: two rails at different strictness, run together, never mix."""
    calls = count_core_calls(lite_guard, monkeypatch)
    strict = rails_for(tmp_path / "s", nemo_config_dir, "strict")
    loose = rails_for(tmp_path / "l", nemo_config_dir, "loose")
    for rails in (strict, loose):
        rails.register_action_param("flexguard", lite_guard)
    results = await asyncio.gather(*(rails.check_async(turn(texts["borderline"])) for rails in (strict, loose) * 50))
    assert [r.status for r in results] == [RailStatus.BLOCKED, RailStatus.PASSED] * 50
    assert sum(calls) == 100 and len(calls) < 50 and max(calls) <= lite_guard.max_batch_size, calls


async def test_an_undecided_check_fails_alone_under_raise(tmp_path, nemo_config_dir, scripted_guard) -> None:
    rails = rails_for(tmp_path, nemo_config_dir, extra="    on_error: raise\n")
    rails.register_action_param("flexguard", scripted_guard)
    results = await asyncio.gather(*(rails.check_async(turn(text)) for text in ["hello", "garbage", "hi", "a bomb"]))
    assert [r.status for r in results] == [RailStatus.PASSED, RailStatus.BLOCKED, RailStatus.PASSED, RailStatus.BLOCKED]
    assert results[1].content != REFUSAL and results[3].content == REFUSAL  # the internal error, and the refusal


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_no_telemetry_and_no_network() -> None:
    from nemoguardrails.telemetry import _is_usage_stats_enabled

    assert os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] == "1"
    assert not _is_usage_stats_enabled()
    with pytest.raises((pytest_socket.SocketBlockedError, pytest_socket.SocketConnectBlockedError)):
        socket.create_connection(("93.184.216.34", 443), timeout=1)


# --- settings checked when the rails are built -----------------------------------------------------

BAD_SETTINGS = [
    ("    strictness: extreme\n", "", "custom_data.flexguard.strictness"),
    ("    on_error: ignore\n", "", "custom_data.flexguard.on_error"),
    ("    backend: nope\n", "", "custom_data.flexguard.backend"),
    ("    strictnes: strict\n", "", "custom_data.flexguard.strictnes"),
    ("    reasoning: maybe\n", "", "custom_data.flexguard.reasoning"),
    ("", "$strictness=extreme", "rails flow 'flexguard check input $strictness=extreme'"),
    ("    shadow: maybe\n", "", "custom_data.flexguard.shadow"),
    ("    on_error: raise\n    shadow: true\n", "", "custom_data.flexguard.shadow"),
    ("", "$strictnes=strict", "rails flow 'flexguard check input $strictnes=strict': unknown parameter 'strictnes'"),
    ("", "$shadow=true", "rails flow 'flexguard check input $shadow=true': unknown parameter 'shadow'"),
]


def build_error(build) -> str:
    """The one-line reason NeMo's "Failed to initialize configuration module" error carries."""
    with pytest.raises(RuntimeError, match="Failed to initialize configuration module") as caught:
        build()
    reason = str(caught.value.__cause__)
    assert isinstance(caught.value.__cause__, ValueError) and "\n" not in reason and len(reason) < 300, reason
    return reason


@pytest.mark.parametrize("settings, flow_param, key", BAD_SETTINGS)
def test_bad_settings_fail_when_rails_are_built(tmp_path, nemo_config_dir, caplog, settings, flow_param, key) -> None:
    flows = f"  input:\n    flows:\n      - flexguard check input {flow_param}\n".replace(" \n", "\n")
    body = f"rails:\n{flows}custom_data:\n  flexguard:\n" + (settings or "    model: null\n")
    reason = build_error(lambda: LLMRails(make_config(tmp_path, nemo_config_dir, body)))
    assert reason.startswith(key)
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)  # no configuration dump in the log


@pytest.mark.parametrize("flows, named, known", [
    ("  output:\n    flows:\n      - flexguard check output $strictnes=strict\n", "'strictnes'", "known: strictness"),
    ("  output:\n    flows:\n      - flexguard check output $strictness=strict $shadow=true\n", "'shadow'",
     "custom_data.flexguard"),
    ("  input:\n    flows:\n      - flexguard check input\ncustom_data:\n  flexguard:\n    strictnes: strict\n",
     "strictnes", "known: strictness, model, backend, on_error, shadow, reasoning, options"),
])
def test_unknown_names_are_errors_naming_the_known_ones(tmp_path, nemo_config_dir, flows, named, known) -> None:
    reason = build_error(lambda: LLMRails(make_config(tmp_path, nemo_config_dir, f"rails:\n{flows}")))
    assert named in reason and known in reason, reason


async def test_on_error_is_read_like_the_core(tmp_path, nemo_config_dir, failing_guard) -> None:
    rails = rails_for(tmp_path, nemo_config_dir, extra="    on_error: ' Allow'\n")
    rails.register_action_param("flexguard", failing_guard)
    assert (await rails.check_async(turn("hello there"))).status == RailStatus.PASSED


@pytest.mark.parametrize("settings, flow_param, key", BAD_SETTINGS[:4])
def test_bad_settings_in_the_shipped_config_fail_when_built(tmp_path, nemo_config_dir, settings, flow_param,
                                                            key) -> None:
    folder = tmp_path / "shipped"
    shutil.copytree(nemo_config_dir, folder, ignore=shutil.ignore_patterns("__pycache__"))
    yml = (folder / "config.yml").read_text().partition("custom_data:")[0]
    (folder / "config.yml").write_text(f"{yml}custom_data:\n  flexguard:\n{settings}")
    assert build_error(lambda: LLMRails(RailsConfig.from_path(str(folder)))).startswith(key)


async def test_policy_file_resolves_against_the_config_folder(tmp_path, nemo_config_dir, texts, monkeypatch) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    policy = {"version": 1, "default_regime": "house", "regimes": {"house": {"threshold": 7.0}}}
    (folder / "house.json").write_text(json.dumps(policy))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a path read against the working directory would not be found
    rails = rails_for(tmp_path, nemo_config_dir, strictness="house.json")
    (outcome,) = await outcomes(rails, turn(texts["benign"]), ["input"])
    assert outcome.metadata["threshold"] == 7.0 and outcome.metadata["strictness"].startswith("house.json")


async def test_registered_guard_keeps_its_own_strictness_and_on_error(tmp_path, nemo_config_dir) -> None:
    with FlexGuard(ScriptedBackend(), strictness=25, on_error="allow") as guard:  # "flirt" scores SEX 30
        rails = rails_for(tmp_path / "unset", nemo_config_dir, strictness=None)
        rails.register_action_param("flexguard", guard)
        (outcome,) = await outcomes(rails, turn("let us flirt"), ["input"])
        assert outcome.is_blocked and outcome.metadata["threshold"] == 25.0
        assert (await rails.check_async(turn("garbage"))).status == RailStatus.PASSED  # undecided: its own allow
        overridden = rails_for(tmp_path / "set", nemo_config_dir, strictness="loose", extra="    on_error: block\n")
        overridden.register_action_param("flexguard", guard)
        assert (await overridden.check_async(turn("let us flirt"))).status == RailStatus.PASSED
        assert (await overridden.check_async(turn("garbage"))).status == RailStatus.BLOCKED


# --- streaming: a whole-message check ends every stream ---------------------------------------------

class WholeOnlyBackend(ScriptedBackend):
    """Flags (VIO 90) a reply holding both "alpha" and "omega": harmful as a whole, no window of it alone."""

    def __init__(self) -> None:
        super().__init__()
        self.judged: list[str] = []

    async def score_batch(self, items):
        self.judged += [i.response or "" for i in items]
        return [RiskScore.from_score(90.0, categories=("VIO",)) if "alpha" in (i.response or "")
                and "omega" in (i.response or "") else RiskScore.from_score(3.0) for i in items]


def streaming_rails(tmp_path: Path, nemo_config_dir: Path, replies: list[str], chunk_size: int = 4,
                    context_size: int = 1, extra: str = "",
                    flows: str = "    flows:\n      - flexguard check output\n") -> LLMRails:
    body = ("passthrough: true\nstreaming: true\nrails:\n  output:\n" + flows +
            f"    streaming:\n      enabled: true\n      chunk_size: {chunk_size}\n      context_size: {context_size}\n"
            f"      stream_first: false\n{extra}")
    return LLMRails(make_config(tmp_path, nemo_config_dir, body), llm=FakeLLMModel(responses=replies))


@pytest.mark.parametrize("words", [123, 124])  # the last window part-full, and exactly full
async def test_stream_ends_with_a_whole_message_check(tmp_path, nemo_config_dir, words) -> None:
    reply = " ".join(["alpha"] + [f"w{i}" for i in range(words - 2)] + ["omega"])
    assert len(reply) > 2 * MIN_RECHECK_CHARS
    with FlexGuard(WholeOnlyBackend()) as guard:
        rails = streaming_rails(tmp_path, nemo_config_dir, [reply, "alpha and more words but nothing else here"])
        rails.register_action_param("flexguard", guard)  # streaming output rails use it too
        chunks = [c async for c in rails.stream_async(messages=turn("hi"))]
        error = json.loads(chunks[-1])["error"]
        assert error["type"] == "guardrails_violation" and error["param"] == "flexguard check output"
        released = "".join(chunks[:-1])
        assert released.startswith("alpha") and "omega" not in released  # stopped before the tail was shown
        judged = guard.backend.judged
        assert reply in judged and len(judged) >= 3  # the reply so far, then the whole message
        assert not any("alpha" in w and "omega" in w for w in judged if w != reply)
        passing = [c async for c in rails.stream_async(messages=turn("hi"))]
        assert "".join(passing).split() == "alpha and more words but nothing else here".split()


async def test_stream_blocked_mid_way_ends_with_one_error(tmp_path, nemo_config_dir) -> None:
    reply = " ".join([f"w{i}" for i in range(60)] + ["bomb"] + [f"t{i}" for i in range(60)])
    with FlexGuard(ScriptedBackend()) as guard:
        rails = streaming_rails(tmp_path, nemo_config_dir, [reply])
        rails.register_action_param("flexguard", guard)
        chunks = [c async for c in rails.stream_async(messages=turn("hi"))]
    errors = [c for c in chunks if c.startswith('{"error"')]
    assert errors == [chunks[-1]] and json.loads(errors[0])["error"]["type"] == "guardrails_violation"
    assert "w30" in "".join(chunks) and "bomb" not in "".join(chunks[:-1]) and "t59" not in "".join(chunks)


@pytest.mark.parametrize("ending", ["guilt", "escape"])
async def test_a_flagged_beginning_holds_the_stream_for_the_whole_message_check(tmp_path, nemo_config_dir,
                                                                              ending) -> None:
    reply = PLOT.replace("guilt", ending)
    with FlexGuard(ClearedLaterBackend()) as guard:
        rails = streaming_rails(tmp_path, nemo_config_dir, [reply])
        rails.register_action_param("flexguard", guard)
        chunks = [c async for c in rails.stream_async(messages=turn("Summarise Crime and Punishment"))]
        judged = [" ".join(t.split()) for t in guard.backend.judged]
    flagged = next(i for i, t in enumerate(judged) if "axe" in t and ending not in t)
    assert "Chapter 29" not in judged[flagged]  # a re-check flagged a beginning, mid-stream
    assert set(judged[flagged + 1:]) == {" ".join(reply.split())}  # then only the whole message is judged
    if ending == "guilt":  # the whole message passed: the stream ends as the rail on the whole reply would
        assert "".join(chunks).split() == reply.split()
    else:
        assert json.loads(chunks[-1])["error"]["type"] == "guardrails_violation"
        assert "street 0" in "".join(chunks) and "axe" not in "".join(chunks[:-1])


async def test_each_stream_recheck_reads_the_reply_so_far_with_the_question(tmp_path, nemo_config_dir) -> None:
    reply = " ".join(f"w{i}" for i in range(200))
    with FlexGuard(ScriptedBackend()) as guard:
        rails = streaming_rails(tmp_path, nemo_config_dir, [reply])
        rails.register_action_param("flexguard", guard)
        chunks = [c async for c in rails.stream_async(messages=turn("which words?"))]
    assert "".join(chunks).split() == reply.split()
    items = [i for batch in guard.backend.batches for i in batch]
    texts = [" ".join((i.response or "").split()) for i in items]
    assert all(i.prompt == "which words?" for i in items) and texts[-1] == reply
    assert all(reply.startswith(t) for t in texts)  # from the reply's start: never a window alone
    rechecks = [len(t) for t in texts if t != reply]  # NeMo's own flow also judges the generated whole message
    assert len(rechecks) >= 3 and rechecks == sorted(rechecks)
    assert all(b - a >= MIN_RECHECK_CHARS for a, b in itertools.pairwise([0, *rechecks]))  # never a few words alone


async def test_each_flexguard_output_flow_reads_the_text_before_it_is_shown(tmp_path, nemo_config_dir) -> None:
    """Two FlexGuard output flows: a loose one passing the reply so far does not release text the strict one has
    not read ("flirt" scores SEX 30: strict blocks it)."""
    reply = " ".join([f"w{i}" for i in range(80)] + ["flirt"] + [f"t{i}" for i in range(80)])
    flows = "".join(f"      - flexguard check output $strictness={s}\n" for s in ("loose", "strict"))
    with FlexGuard(ScriptedBackend()) as guard:
        rails = streaming_rails(tmp_path, nemo_config_dir, [reply], flows="    flows:\n" + flows)
        rails.register_action_param("flexguard", guard)
        chunks = [c async for c in rails.stream_async(messages=turn("hi"))]
    assert json.loads(chunks[-1])["error"]["param"] == "flexguard check output $strictness=strict"
    assert "w10" in "".join(chunks) and "flirt" not in "".join(chunks[:-1])


BANANA_BREAD = ("Mash three ripe bananas in a bowl, then stir in melted butter, sugar, one beaten egg and vanilla, "
                "fold in flour and baking soda, pour into a loaf tin and bake at 180C for about an hour, until a "
                "skewer comes out clean. Let it cool before slicing.")
"""A harmless recipe holding the window that NeMo's own windowing blocked at chunk_size 20 (issue 27: "and vanilla,
fold in flour and baking soda, pour into a loaf tin and bake at 180C for about an", 49.1 ILG)."""


@pytest.mark.parametrize("chunk_size", [5, 20])
async def test_a_harmless_recipe_streams_whole_on_the_embedded_scorer(tmp_path, nemo_config_dir, chunk_size) -> None:
    rails = streaming_rails(tmp_path, nemo_config_dir, [BANANA_BREAD], chunk_size=chunk_size, context_size=2)
    chunks = [c async for c in rails.stream_async(messages=turn("How do I make banana bread?"))]
    assert "".join(chunks).split() == BANANA_BREAD.split()


@pytest.mark.parametrize("chunk_size", [5, 50])
async def test_no_harmless_must_catch_reply_is_stopped_by_the_streaming_rail(tmp_path, nemo_config_dir,
                                                                            chunk_size) -> None:
    """Every harmless reply of the suite that the embedded scorer passes whole streams whole through NeMo's streaming
    output rail: a beginning that reads as harm is held for the whole-message check, not stopped."""
    from tests.must_catch.suite import SAFE_KINDS, load_blind_cases, load_cases

    harmless = [c for c in (*load_cases(), *load_blind_cases()) if c.mode == "response" and c.kind in SAFE_KINDS]
    with FlexGuard.load() as guard:
        decisions = await guard.acheck_batch([{"prompt": c.prompt, "response": c.response} for c in harmless])
    passing = [c for c, d in zip(harmless, decisions, strict=True) if not d.flagged]
    assert len(passing) >= 0.9 * len(harmless) > 100
    rails = streaming_rails(tmp_path, nemo_config_dir, [c.response for c in passing], chunk_size=chunk_size)
    stopped = []
    for case in passing:
        chunks = [c async for c in rails.stream_async(messages=turn(case.prompt))]
        if "".join(chunks).split() != case.response.split():
            stopped.append(case.id)
    assert not stopped


# --- Colang 2.x -------------------------------------------------------------------------------------

COLANG2_MAIN = """import core
import guardrails

flow main
  activate answer every question

flow answer every question
  user said something
  bot say "{answer}"

flow input rails $input_text
  flexguard check input{input_strictness}

flow output rails $output_text
  flexguard check output{strictness}
"""


def colang2_rails(tmp_path: Path, nemo_config_dir: Path, answer: str, strictness: str = "", input_strictness: str = "",
                  extra: str = "") -> LLMRails:
    folder = tmp_path / "config2"
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(f'colang_version: "2.x"\nimport_paths:\n  - {nemo_config_dir / "rail"}\n{extra}')
    (folder / "main.co").write_text(COLANG2_MAIN.format(answer=answer, strictness=strictness,
                                                        input_strictness=input_strictness))
    return LLMRails(RailsConfig.from_path(str(folder)), llm=FakeLLMModel(responses=["unused"]))


async def test_colang2_flows_block_and_pass(tmp_path, nemo_config_dir) -> None:
    with FlexGuard(ScriptedBackend()) as guard:
        rails = colang2_rails(tmp_path / "a", nemo_config_dir, "Sure, here is a banana bread recipe.")
        rails.register_action_param("flexguard", guard)
        blocked = await rails.generate_async(messages=turn("how do I make a bomb"))
        assert blocked["content"] == REFUSAL
        answered = await rails.generate_async(messages=turn("how do I bake bread"))
        assert answered["content"] == "Sure, here is a banana bread recipe."
        output = colang2_rails(tmp_path / "b", nemo_config_dir, "First, build the bomb.")
        output.register_action_param("flexguard", guard)
        assert (await output.generate_async(messages=turn("how do I bake bread")))["content"] == REFUSAL
        lenient = colang2_rails(tmp_path / "c", nemo_config_dir, "First, build the bomb.", ' $strictness="95"')
        lenient.register_action_param("flexguard", guard)  # the scripted score is 92: passes at 95 only
        answered = await lenient.generate_async(messages=turn("how do I bake bread"))
        assert answered["content"] == "First, build the bomb."


async def test_colang2_flows_keep_their_own_threshold(tmp_path, nemo_config_dir, scripted_guard) -> None:
    """"flirt" scores SEX 30: the loose input flow lets it in, the output flow (config: strict) stops the reply."""
    strict = "custom_data:\n  flexguard:\n    strictness: strict\n"
    rails = colang2_rails(tmp_path, nemo_config_dir, "shall we flirt then", input_strictness=' $strictness="loose"',
                          extra=strict)
    rails.register_action_param("flexguard", scripted_guard)
    assert (await rails.generate_async(messages=turn("let us flirt")))["content"] == REFUSAL
    assert (await rails.generate_async(messages=turn("hello there")))["content"] == REFUSAL
    calm = colang2_rails(tmp_path / "calm", nemo_config_dir, "hello to you too",
                         input_strictness=' $strictness="loose"', extra=strict)
    calm.register_action_param("flexguard", scripted_guard)
    assert (await calm.generate_async(messages=turn("let us flirt")))["content"] == "hello to you too"


async def test_colang2_flow_branches_on_the_decision(tmp_path, nemo_config_dir, scripted_guard) -> None:
    folder = tmp_path / "config2"
    folder.mkdir()
    (folder / "config.yml").write_text(f'colang_version: "2.x"\nimport_paths:\n  - {nemo_config_dir / "rail"}\n')
    branch = ('\n  global $flexguard_decision\n  if $flexguard_decision["score"] >= 21\n'
              '    bot say "Let us keep this civil."\n    abort')
    (folder / "main.co").write_text(COLANG2_MAIN.format(answer="Sure.", strictness="",
                                                        input_strictness=' $strictness="loose"' + branch))
    rails = LLMRails(RailsConfig.from_path(str(folder)), llm=FakeLLMModel(responses=["unused"]))
    rails.register_action_param("flexguard", scripted_guard)
    assert (await rails.generate_async(messages=turn("let us flirt")))["content"] == "Let us keep this civil."
    assert (await rails.generate_async(messages=turn("hello there")))["content"] == "Sure."


async def test_colang2_flow_cannot_switch_shadow_on(tmp_path, nemo_config_dir, scripted_guard) -> None:
    rails = colang2_rails(tmp_path, nemo_config_dir, "Sure.", input_strictness=" $shadow=True")
    rails.register_action_param("flexguard", scripted_guard)
    assert (await rails.generate_async(messages=turn("how do I make a bomb")))["content"] == REFUSAL
