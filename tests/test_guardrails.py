"""The `flexguard/risk_score` validator in real Guardrails-AI `Guard`s and `AsyncGuard`s, on the embedded scorer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("guardrails")

from flexguard_plugins import FlexGuard  # noqa: E402

from .fake_http import completion, http_server  # noqa: E402
from .fixtures_integrations import LOOSE, STRICT, count_core_calls  # noqa: E402
from .scripted_backend import answer_for  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[1] / "guardrails_hub" / "manifest.json"


@pytest.fixture(scope="module")
def gr(guardrails_settings):
    """Guardrails imported only after its settings were loaded with metrics off."""
    import guardrails
    from guardrails_ai.flexguard import FlexGuardRisk

    return guardrails, FlexGuardRisk


def make_guard(gr, cls_name: str = "Guard", **options):
    guardrails, FlexGuardRisk = gr
    guard = getattr(guardrails, cls_name)().use(FlexGuardRisk(**options))
    guard.configure(allow_metrics_collection=False)
    return guard


def last_result(guard):
    return guard.history.last.iterations.last.validator_logs[0].validation_result


def test_registered_and_importable(gr) -> None:
    from guardrails.validator_base import get_validator_class

    assert get_validator_class("flexguard/risk_score") is gr[1]
    validator = gr[1](strictness="strict", on_fail="noop")
    assert validator.use_local is True and validator.get_args()["strictness"] == "strict"


def test_on_fail_exception(gr, texts) -> None:
    guard = make_guard(gr, on_fail="exception")
    with pytest.raises(gr[0].errors.ValidationError, match="flagged"):
        guard.validate(texts["harmful"])
    result = last_result(guard)
    assert result.outcome == "fail" and result.metadata["score"] >= LOOSE and result.metadata["categories"]
    assert result.metadata["threshold"] == 41.0
    assert guard.validate(texts["benign"]).validation_passed


@pytest.mark.parametrize("on_fail, expected",
                         [("noop", "same"), ("filter", None), ("refrain", None), ("fix", "refusal")])
def test_on_fail_actions(gr, texts, on_fail, expected) -> None:
    guard = make_guard(gr, on_fail=on_fail)
    outcome = guard.validate(texts["harmful"])
    want = {"same": texts["harmful"], "refusal": "I'm sorry, but I can't help with that.", None: None}[expected]
    assert outcome.validated_output == want
    assert outcome.validation_passed is (on_fail == "fix")  # a fixed value counts as passing
    result = last_result(guard)
    assert result.outcome == "fail" and result.error_spans[0].start == 0
    assert result.error_spans[0].end == len(texts["harmful"])
    assert result.fix_value == "I'm sorry, but I can't help with that."
    benign = guard.validate(texts["benign"])
    assert benign.validation_passed and benign.validated_output == texts["benign"]
    assert last_result(guard).metadata["score"] < STRICT


def test_strictness_moves_the_borderline(gr, texts) -> None:
    assert not make_guard(gr, strictness="strict", on_fail="noop").validate(texts["borderline"]).validation_passed
    assert make_guard(gr, strictness="loose", on_fail="noop").validate(texts["borderline"]).validation_passed
    per_category = make_guard(gr, strictness={"default": "loose"}, on_fail="noop")
    assert per_category.validate(texts["borderline"]).validation_passed
    with pytest.raises(ValueError):
        gr[1](strictness="lenient")
    with pytest.raises(ValueError):
        gr[1](mode="both")
    with pytest.raises(ValueError):
        gr[1](on_error="ignore")


def test_unknown_option_is_an_error_naming_the_known_ones(gr) -> None:
    with pytest.raises(ValueError, match=r"unknown option 'strictnes'; known: strictness, mode, .*shadow") as caught:
        gr[1](strictnes="strict")
    assert "use_local" in str(caught.value)


def test_on_error_is_read_like_the_core(gr, failing_guard: FlexGuard) -> None:
    validator = gr[1](on_error=" Allow", guard=failing_guard, on_fail="noop")
    assert validator.on_error == "allow" and validator.get_args()["on_error"] == "allow"
    guard = gr[0].Guard().use(validator)
    guard.configure(allow_metrics_collection=False)
    assert guard.validate("hello there").validation_passed


def test_shadow_mode_always_passes_with_the_verdict_in_metadata(gr, texts, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flexguard_plugins.decisions")
    guard = make_guard(gr, strictness="strict", shadow=True, on_fail="exception")
    outcome = guard.validate(texts["harmful"])
    assert outcome.validation_passed and outcome.validated_output == texts["harmful"]
    result = last_result(guard)
    assert result.outcome == "pass" and result.metadata["would_flag"] and result.metadata["shadow"]
    assert not result.metadata["flagged"] and result.metadata["score"] >= LOOSE
    logged = [r.getMessage() for r in caplog.records if r.name == "flexguard_plugins.decisions"]
    assert logged and logged[-1].startswith("shadow, not enforced: flagged")
    assert gr[1](shadow=True, on_fail="noop").get_args()["shadow"] is True  # round-trips through Guardrails
    with pytest.raises(ValueError, match="shadow"):
        gr[1](shadow=True, on_error="raise")


async def test_async_shadow_mode_passes(gr, texts) -> None:
    guard = make_guard(gr, "AsyncGuard", shadow=True, on_fail="exception")
    assert (await guard.validate(texts["harmful"])).validation_passed
    assert last_result(guard).metadata["would_flag"]


def test_response_mode_reads_prompt_from_metadata(gr, texts) -> None:
    guard = make_guard(gr, mode="response", on_fail="noop")
    outcome = guard.validate(texts["harmful_reply"], metadata={"prompt": texts["opener"]})
    assert not outcome.validation_passed and last_result(guard).metadata["mode"] == "response"
    assert guard.validate(texts["benign_reply"], metadata={"prompt": texts["benign"]}).validation_passed
    with pytest.raises(ValueError, match="prompt"):
        guard.validate(texts["benign"])


def test_long_text_error_span_covers_the_offending_chunk(gr, texts, lite_guard: FlexGuard) -> None:
    budget = lite_guard.backend.max_content_tokens
    if budget is None:
        pytest.skip("the embedded scorer has no input budget, so text is never chunked")
    filler = " ".join([texts["benign"]] * 30)  # about 300 tokens each side of the harmful part
    harmful = " ".join([texts["harmful"]] * 10)
    text = f"{filler} {harmful} {filler}"
    assert len(lite_guard.backend.tokenizer(text)["input_ids"]) > 2 * budget
    guard = make_guard(gr, on_fail="noop")
    assert not guard.validate(text).validation_passed
    span = last_result(guard).error_spans[0]
    start, end = text.index(harmful), text.index(harmful) + len(harmful)
    assert 0 < span.end - span.start < len(text) and span.start < end and start < span.end


async def test_async_guard_uses_the_async_core(gr, texts, lite_guard: FlexGuard, monkeypatch) -> None:
    calls = count_core_calls(lite_guard, monkeypatch)
    guard = make_guard(gr, "AsyncGuard", guard=lite_guard, on_fail="exception")
    assert (await guard.validate(texts["benign"])).validation_passed
    with pytest.raises(gr[0].errors.ValidationError):
        await guard.validate(texts["harmful"])
    assert calls == [1, 1]
    fixed = await make_guard(gr, "AsyncGuard", on_fail="fix").validate(texts["harmful"])
    assert fixed.validated_output == "I'm sorry, but I can't help with that."


def test_scorer_failure_fails_closed(gr, texts, failing_guard: FlexGuard) -> None:
    guard = make_guard(gr, guard=failing_guard, on_fail="noop")
    assert not guard.validate(texts["benign"]).validation_passed
    assert last_result(guard).metadata["failed"] is True
    assert make_guard(gr, guard=failing_guard, on_error="allow").validate(texts["benign"]).validation_passed


def test_guard_runnable_in_a_langchain_chain(gr, texts) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser

    model = FakeListChatModel(responses=["Bake it."])
    chain = make_guard(gr, on_fail="exception").to_runnable() | model | StrOutputParser()
    assert chain.invoke(texts["benign"]) == "Bake it."
    with pytest.raises(gr[0].errors.ValidationError):
        chain.invoke(texts["harmful"])


def test_metrics_off(gr) -> None:
    from guardrails.settings import settings

    guard = make_guard(gr, on_fail="noop")
    assert settings.rc.enable_metrics is False and guard._allow_metrics_collection is False
    assert guard._validators[0]._disable_telemetry is True


def test_hub_manifest_is_valid() -> None:
    from guardrails_hub_types import Manifest

    manifest = Manifest.from_dict(json.loads(MANIFEST.read_text()))
    assert manifest.id == "flexguard/risk_score" and manifest.exports == ["FlexGuardRisk"]
    assert manifest.module_name == "guardrails_ai.flexguard"


# --- first-use loading, remote validation, reask without an LLM ---------------------------------------

@pytest.fixture()
def completion_server():
    """A real OpenAI-compatible /v1/completions endpoint answering in FlexGuard's format by keyword (the
    scripted seam over HTTP): "bomb" in the judged content → VIO,ILG 92, else SAFE 4."""
    seen: list[dict] = []

    def respond(request, raw):
        body = json.loads(raw)
        seen.append({"path": request.path, **body})
        content = body["prompt"].rsplit("[User]:", 1)[-1]
        return completion(f"<think>\nchecked\n</think>\n{answer_for(content)}")

    with http_server(respond) as url:
        yield url, seen


def test_model_loads_on_first_use_not_in_init(gr, monkeypatch, scripted_guard) -> None:
    import guardrails_ai.flexguard.main as validator_module

    calls: list[dict] = []
    monkeypatch.setattr(validator_module, "shared_guard", lambda guard, **load: calls.append(load) or scripted_guard)
    guard = make_guard(gr, model="some/flexguard-model", backend="transformers", on_fail="noop")
    assert calls == []  # building the validator (often at import time) loaded nothing
    assert not guard.validate("how to build a bomb").validation_passed
    assert guard.validate("how to bake bread").validation_passed
    assert calls == [{"model": "some/flexguard-model", "backend": "transformers", "reasoning": None}]


def test_remote_validation_through_the_openai_backend(gr, completion_server, tiny_qwen3_dir) -> None:
    url, seen = completion_server
    guard = make_guard(gr, use_local=False, model=str(tiny_qwen3_dir), base_url=url, on_fail="noop")
    assert not guard.validate("how to build a bomb").validation_passed
    result = last_result(guard)
    assert result.metadata["score"] == 92 and result.metadata["scorer"] == "openai"
    assert guard.validate("how to bake bread").validation_passed
    assert [r["path"] for r in seen] == ["/v1/completions"] * 2
    assert guard._validators[0].use_local is False


def test_remote_validation_needs_a_server(gr) -> None:
    with pytest.raises(ValueError, match="base_url"):
        gr[1](use_local=False)
    with pytest.raises(ValueError, match="model="):
        gr[1](use_local=False, base_url="http://127.0.0.1:9/v1")


def test_reask_without_an_llm_does_not_pass(gr, scripted_guard) -> None:
    guard = make_guard(gr, guard=scripted_guard, on_fail="reask")
    outcome = guard.validate("how to build a bomb")
    assert outcome.validation_passed is False and outcome.validated_output is None
    benign = guard.validate("how to bake bread")
    assert benign.validation_passed and benign.validated_output == "how to bake bread"


async def test_async_reask_without_an_llm_does_not_pass(gr, scripted_guard) -> None:
    outcome = await make_guard(gr, "AsyncGuard", guard=scripted_guard, on_fail="reask").validate("a bomb")
    assert outcome.validation_passed is False and outcome.validated_output is None
