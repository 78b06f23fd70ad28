"""FlexGuard in real LangChain runnables, on the embedded scorer and (for what the wrapper does with text) a
scripted seam. The agent middleware is tested in test_langchain_agent.py."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableBranch, RunnableLambda  # noqa: E402
from langchain_flexguard import FlexGuardRunnable, FlexGuardViolation, with_prompt  # noqa: E402

from flexguard_plugins import (  # noqa: E402
    MIN_RECHECK_CHARS,
    FlexGuard,
    FlexGuardError,
    PolicyViolation,
    RiskScore,
    UndecidedError,
)

from .fixtures_integrations import LOOSE, STRICT  # noqa: E402
from .scripted_backend import PLOT, ClearedLaterBackend, ScriptedBackend  # noqa: E402


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.events.append(("start", kwargs.get("name")))

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.events.append(("end", None))

    def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
        self.events.append(("error", type(error).__name__))

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_lcel_chain_guards_input_and_output(texts) -> None:
    answer = texts["benign_reply"]
    model = FakeListChatModel(responses=[answer, texts["harmful_reply"]])
    chain = FlexGuardRunnable() | model | FlexGuardRunnable(strictness="strict")
    assert chain.invoke(texts["benign"]).content == answer
    with pytest.raises(FlexGuardViolation) as caught:
        chain.invoke(texts["benign"])  # the model's harmful reply is stopped by the output guard
    decision = caught.value.decision
    assert decision.flagged and decision.score >= LOOSE and decision.threshold == STRICT and decision.categories
    assert decision.risk.ok and isinstance(caught.value.value, AIMessage)
    with pytest.raises(FlexGuardViolation):
        chain.invoke(texts["harmful"])
    assert model.i == 0  # FakeListChatModel cycles: two calls so far, the harmful prompt never reached it


async def test_with_fallbacks_gives_a_refusal(texts) -> None:
    chain = (FlexGuardRunnable() | RunnableLambda(lambda x: f"answered: {x}")).with_fallbacks(
        [RunnableLambda(lambda x: "refused")], exceptions_to_handle=(FlexGuardViolation,))
    assert await chain.ainvoke(texts["harmful"]) == "refused"
    assert await chain.ainvoke(texts["benign"]) == f"answered: {texts['benign']}"


def test_annotate_mode_with_runnable_branch(texts) -> None:
    route = FlexGuardRunnable(mode="annotate", strictness="strict") | RunnableBranch(
        (lambda x: x["decision"].flagged, RunnableLambda(lambda x: f"blocked at {x['decision'].score:.0f}")),
        RunnableLambda(lambda x: x["input"]),
    )
    assert route.invoke(texts["borderline"]).startswith("blocked at")
    assert route.invoke(texts["benign"]) == texts["benign"]
    loose = FlexGuardRunnable(mode="annotate", strictness="loose").invoke(texts["borderline"])
    assert loose["input"] == texts["borderline"] and not loose["decision"].flagged
    assert STRICT <= loose["decision"].score < LOOSE and loose["decision"].threshold == LOOSE


async def test_abatch_makes_one_core_call(texts, lite_guard: FlexGuard, monkeypatch) -> None:
    calls: list[int] = []
    real = lite_guard.acheck_batch

    async def spy(items, *args, **kwargs):
        items = list(items)
        calls.append(len(items))
        return await real(items, *args, **kwargs)

    monkeypatch.setattr(lite_guard, "acheck_batch", spy)
    inputs = [texts["benign"], texts["harmful"]] * 50
    outputs = await FlexGuardRunnable(guard=lite_guard).abatch(inputs, return_exceptions=True)
    assert calls == [100]
    assert [isinstance(o, FlexGuardViolation) for o in outputs] == [False, True] * 50
    assert outputs[0] == texts["benign"]


def test_batch_makes_one_core_call_and_traces_each_input(texts, lite_guard: FlexGuard, monkeypatch) -> None:
    calls: list[int] = []
    real = lite_guard.check_batch
    monkeypatch.setattr(lite_guard, "check_batch",
                        lambda items, *a, **k: calls.append(len(items)) or real(items, *a, **k))
    recorder = Recorder()
    guard = FlexGuardRunnable(guard=lite_guard, mode="annotate", strictness="loose")
    outputs = guard.batch([texts["benign"], texts["harmful"], texts["borderline"]], {"callbacks": [recorder]})
    assert calls == [3] and [o["decision"].flagged for o in outputs] == [False, True, False]
    assert recorder.events.count(("start", "FlexGuardRunnable")) == 3 and recorder.events.count(("end", None)) == 3
    decisions = [data for name, data in recorder.events if name == "flexguard_decision"]
    assert [d["flagged"] for d in decisions] == [False, True, False] and all("score" in d for d in decisions)


async def test_invoke_reports_to_callbacks(texts) -> None:
    recorder = Recorder()
    with pytest.raises(FlexGuardViolation) as caught:
        FlexGuardRunnable().invoke(texts["harmful"], {"callbacks": [recorder]})
    decision = caught.value.decision.to_dict()
    assert recorder.events == [("start", "FlexGuardRunnable"), ("flexguard_decision", decision),
                               ("error", "FlexGuardViolation")]
    events = [e async for e in FlexGuardRunnable().astream_events(texts["benign"], version="v2")
              if e["event"] == "on_custom_event"]
    assert events[0]["name"] == "flexguard_decision" and events[0]["data"]["flagged"] is False


def test_input_forms(texts) -> None:
    annotate = FlexGuardRunnable(mode="annotate")
    as_messages = annotate.invoke([HumanMessage(texts["opener"]), AIMessage(texts["harmful_reply"])])
    assert as_messages["decision"].flagged and as_messages["decision"].risk.ok
    as_dict = annotate.invoke({"prompt": texts["opener"], "response": texts["harmful_reply"]})
    assert as_dict["decision"].score == as_messages["decision"].score  # same response-mode item
    prompt_value = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": texts["harmful"]})
    assert annotate.invoke(prompt_value)["decision"].flagged
    assert not annotate.invoke([("human", texts["benign"])])["decision"].flagged
    with pytest.raises(TypeError):
        annotate.invoke(42)
    with pytest.raises(ValueError):
        annotate.invoke({"text": "no prompt key"})


def test_bad_options_fail_early() -> None:
    with pytest.raises(ValueError):
        FlexGuardRunnable(strictness="very")
    with pytest.raises(ValueError):
        FlexGuardRunnable(on_error="ignore")
    with pytest.raises(ValueError):
        FlexGuardRunnable(stream_chunk_size=MIN_RECHECK_CHARS - 1)  # a few words would be judged alone


def test_unknown_option_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'strictnes'; known: .*strictness.*on_error") as caught:
        FlexGuardRunnable(strictnes="strict")
    assert "shadow" in str(caught.value)


def test_on_error_is_read_like_the_core(texts, failing_guard: FlexGuard) -> None:
    assert FlexGuardRunnable(on_error="Block").on_error == "block"
    assert FlexGuardRunnable(guard=failing_guard, on_error=" ALLOW ").invoke(texts["benign"]) == texts["benign"]
    with pytest.raises(UndecidedError):
        FlexGuardRunnable(guard=failing_guard, on_error="Raise").invoke(texts["benign"])


def test_violation_is_the_cores_policy_violation(texts) -> None:
    """One `except FlexGuardError` catches every guard failure; FlexGuardViolation stays a ValueError too."""
    with pytest.raises(FlexGuardError) as caught:
        FlexGuardRunnable().invoke(texts["harmful"])
    violation = caught.value
    assert isinstance(violation, FlexGuardViolation) and isinstance(violation, PolicyViolation)
    assert isinstance(violation, ValueError) and violation.value == texts["harmful"]
    assert violation.decision.flagged and violation.risk is violation.decision.risk


async def test_shadow_mode_records_and_never_blocks(texts, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flexguard_plugins.decisions")
    recorder = Recorder()
    guard = FlexGuardRunnable(shadow=True, strictness="strict")
    assert guard.invoke(texts["harmful"], {"callbacks": [recorder]}) == texts["harmful"]
    (event,) = [data for name, data in recorder.events if name == "flexguard_decision"]
    assert event["shadow"] and event["would_flag"] and not event["flagged"]
    assert event["reason"].startswith("shadow, not enforced: flagged")
    assert await guard.abatch([texts["harmful"], texts["benign"]]) == [texts["harmful"], texts["benign"]]
    annotated = FlexGuardRunnable(shadow=True, mode="annotate").invoke(texts["harmful"])["decision"]
    assert annotated.shadow and annotated.would_flag and not annotated.flagged
    logged = [r.getMessage() for r in caplog.records if r.name == "flexguard_plugins.decisions"]
    assert len(logged) == 4 and all(m.startswith("shadow, not enforced: ") for m in logged)
    with pytest.raises(ValueError, match="shadow"):
        FlexGuardRunnable(shadow=True, on_error="raise")
    with pytest.raises(ValueError):
        FlexGuardRunnable(shadow="yes")


def test_shadow_mode_never_stops_a_stream(scripted_guard) -> None:
    text = " ".join([f"fine{i}" for i in range(60)] + ["then", "a", "bomb", "appears"])
    guard = FlexGuardRunnable(guard=scripted_guard, shadow=True)
    assert "".join(c.content for c in (streamed_model(text) | guard).stream("hi")) == text


def test_scorer_failure_blocks_or_raises(texts, failing_guard: FlexGuard) -> None:
    with pytest.raises(FlexGuardViolation) as caught:
        FlexGuardRunnable(guard=failing_guard).invoke(texts["benign"])
    assert caught.value.decision.failed and "scorer is down" in caught.value.decision.reason
    assert FlexGuardRunnable(guard=failing_guard, on_error="allow").invoke(texts["benign"]) == texts["benign"]
    with pytest.raises(FlexGuardError):
        FlexGuardRunnable(guard=failing_guard, on_error="raise").invoke(texts["benign"])


# --- per-input batches, serialisation, streaming, carrying the prompt -------------------------------

class PairBackend(ScriptedBackend):
    """Flags (VIO 90) only a text holding both words: a reply harmful as a whole, no window of it alone."""

    def __init__(self, words: tuple[str, str] = ("alpha", "omega")) -> None:
        super().__init__()
        self.words = words
        self.judged: list[str] = []

    async def score_batch(self, items):
        self.judged += [i.judged_text for i in items]
        texts = [i.judged_text for i in items]
        return [RiskScore.from_score(90.0, categories=("VIO",)) if all(w in t for w in self.words)
                else RiskScore.from_score(3.0) for t in texts]


@pytest.fixture()
def pair_guard():
    guard = FlexGuard(PairBackend())
    yield guard
    guard.close()


def test_batch_results_are_per_input(texts) -> None:
    guard = FlexGuardRunnable()
    outputs = guard.batch([texts["benign"], 42, texts["harmful"]], return_exceptions=True)
    assert outputs[0] == texts["benign"]
    assert isinstance(outputs[1], TypeError) and "int" in str(outputs[1])
    assert isinstance(outputs[2], FlexGuardViolation) and outputs[2].decision.flagged
    with pytest.raises(TypeError):
        guard.batch([texts["benign"], 42])  # without return_exceptions the first error is raised


async def test_with_fallbacks_catches_the_harmful_input_of_a_batch(texts) -> None:
    chain = (FlexGuardRunnable() | RunnableLambda(lambda x: f"answered: {x}")).with_fallbacks(
        [RunnableLambda(lambda x: "refused")], exceptions_to_handle=(FlexGuardViolation,))
    outputs = await chain.abatch([texts["benign"], {"text": "no prompt"}, texts["harmful"]], return_exceptions=True)
    assert outputs[0] == f"answered: {texts['benign']}" and isinstance(outputs[1], ValueError)
    assert outputs[2] == "refused"


def test_on_error_raise_fails_only_the_undecided_input(scripted_guard) -> None:
    guard = FlexGuardRunnable(guard=scripted_guard, on_error="raise")
    outputs = guard.batch(["hello", "garbage", "a bomb"], return_exceptions=True)  # "garbage": unparsable answer
    assert outputs[0] == "hello" and isinstance(outputs[1], FlexGuardError)
    assert isinstance(outputs[2], FlexGuardViolation)


def test_dumpd_and_load_round_trip() -> None:
    from langchain_core.load import dumpd, dumps, loads

    runnable = FlexGuardRunnable(strictness="strict", on_error="allow", mode="annotate", stream_chunk_size=280)
    data = dumpd(runnable)
    assert data["type"] == "constructor" and data["id"] == ["langchain_flexguard", "FlexGuardRunnable"]
    loaded = loads(dumps(runnable), valid_namespaces=["langchain_flexguard"],
                   allowed_objects=[FlexGuardRunnable])
    assert isinstance(loaded, FlexGuardRunnable)
    assert (loaded.strictness, loaded.on_error, loaded.mode, loaded.stream_chunk_size) == ("strict", "allow",
                                                                                           "annotate", 280)


def test_dumpd_of_a_live_guard_is_not_implemented(scripted_guard) -> None:
    from langchain_core.load import dumpd

    assert dumpd(FlexGuardRunnable(guard=scripted_guard))["type"] == "not_implemented"


def streamed_model(text: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(text)]))  # streams word by word


def test_stream_releases_each_window_after_it_is_judged(scripted_guard) -> None:
    words = [f"word{i}" for i in range(150)]
    guard = FlexGuardRunnable(guard=scripted_guard)
    backend = scripted_guard.backend
    out = []
    for chunk in (streamed_model(" ".join(words)) | guard).stream("hi"):
        judged = " ".join(i.judged_text for batch in backend.batches for i in batch)
        assert chunk.content in judged  # judged before it went out
        out.append(chunk.content)
    assert "".join(out) == " ".join(words) and len(out) > 10
    assert len(backend.batches) >= 4  # window by window, then the whole text; not one check at the end
    judged = [i.judged_text for batch in backend.batches for i in batch]
    assert all(" ".join(words).startswith(t) for t in judged)  # the reply so far: never a window alone
    rechecks = [0, *map(len, judged[:-1])]  # the last is the whole text
    assert all(b - a >= MIN_RECHECK_CHARS for a, b in itertools.pairwise(rechecks))


async def test_stream_stops_before_a_harmful_window(scripted_guard) -> None:
    text = " ".join([f"fine{i}" for i in range(60)] + ["then", "a", "bomb", "appears"] + ["tail"] * 60)
    guard = FlexGuardRunnable(guard=scripted_guard)
    out = []
    with pytest.raises(FlexGuardViolation):
        async for chunk in (streamed_model(text) | guard).astream("hi"):
            out.append(chunk.content)
    assert out and "bomb" not in "".join(out) and "fine0" in "".join(out)


@pytest.mark.parametrize("streaming", ["sync", "async"])
async def test_a_flagged_beginning_holds_the_stream_for_the_whole_text_check(streaming) -> None:
    with FlexGuard(ClearedLaterBackend()) as scorer:
        chain = streamed_model(PLOT) | FlexGuardRunnable(guard=scorer)
        out, judged = [], scorer.backend.judged
        if streaming == "sync":
            for chunk in chain.stream("Summarise Crime and Punishment"):
                out.append(chunk.content)
                assert "axe" not in "".join(out) or judged[-1] == PLOT  # shown only after the whole passed
        else:
            async for chunk in chain.astream("Summarise Crime and Punishment"):
                out.append(chunk.content)
                assert "axe" not in "".join(out) or judged[-1] == PLOT
    assert "".join(out) == PLOT  # the stream ends as invoke on the whole reply does
    flagged = next(i for i, t in enumerate(judged) if "axe" in t and "guilt" not in t)
    assert judged[flagged + 1:] == [PLOT]  # no re-check after the flag: padding cannot buy a pass


def test_a_flagged_beginning_the_reply_never_clears_is_stopped_unshown() -> None:
    text = PLOT.replace("follows his guilt and paranoia", "follows his escape")
    with FlexGuard(ClearedLaterBackend()) as scorer:
        out = []
        with pytest.raises(FlexGuardViolation):
            for chunk in (streamed_model(text) | FlexGuardRunnable(guard=scorer)).stream("hi"):
                out.append(chunk.content)
        assert "street 0" in "".join(out) and "axe" not in "".join(out)
        assert scorer.backend.judged[-1] == text  # stopped by the whole-text check, after the held re-checks


def test_an_undecided_recheck_stops_the_stream_at_once() -> None:
    with FlexGuard(ScriptedBackend(fail_with=RuntimeError("scorer is down"))) as down:
        with pytest.raises(FlexGuardViolation) as caught:
            for _ in (streamed_model(PLOT) | FlexGuardRunnable(guard=down)).stream("hi"):
                pass
        assert caught.value.decision.failed and len(down.backend.batches) == 1  # not held to the end


def test_stream_whole_text_check_stops_the_tail(pair_guard) -> None:
    text = "alpha " + " ".join(f"filler{i}" for i in range(60)) + " omega"
    guard = FlexGuardRunnable(guard=pair_guard)
    out = []
    with pytest.raises(FlexGuardViolation) as caught:
        for chunk in (streamed_model(text) | guard).stream("hi"):
            out.append(chunk.content)
    assert caught.value.decision.score == 90.0
    released = "".join(out)
    assert "alpha" in released and "omega" not in released  # windows passed; the whole did not
    windows = pair_guard.backend.judged[:-1]
    assert windows and not any("alpha" in w and "omega" in w for w in windows)


def test_with_prompt_carries_the_question(texts, scripted_guard) -> None:
    llm = FakeListChatModel(responses=["Here is the bomb recipe."])
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | with_prompt(llm) | FlexGuardRunnable(guard=scripted_guard, mode="annotate")
    out = chain.invoke({"q": "How do I bake bread?"})
    assert out["decision"].flagged and out["input"]["response"].content == "Here is the bomb recipe."
    (item,) = scripted_guard.backend.batches[-1]
    assert (item.prompt, item.response) == ("How do I bake bread?", "Here is the bomb recipe.")
    keyed = with_prompt(RunnableLambda(lambda x: "ok"), prompt_key="q").invoke({"q": "hello"})
    assert keyed == {"prompt": "hello", "response": "ok"}


def test_with_prompt_real_scorer_judges_the_reply_in_context(texts) -> None:
    llm = FakeListChatModel(responses=[texts["harmful_reply"]])
    chain = with_prompt(llm) | FlexGuardRunnable()
    with pytest.raises(FlexGuardViolation) as caught:
        chain.invoke(texts["opener"])
    assert caught.value.decision.score >= LOOSE


def test_with_prompt_streams_window_by_window_with_the_question(scripted_guard) -> None:
    reply = " ".join(f"w{i}" for i in range(100)) + " bomb end"
    chain = with_prompt(streamed_model(reply)) | FlexGuardRunnable(guard=scripted_guard)
    out = []
    with pytest.raises(FlexGuardViolation):
        for chunk in chain.stream("hello question"):
            out.append(chunk)
    released = "".join(c["response"].content for c in out if "response" in c)
    assert out[0] == {"prompt": "hello question"} and "w20" in released and "bomb" not in released
    items = [i for batch in scripted_guard.backend.batches for i in batch]
    assert len(items) >= 2 and all(i.prompt == "hello question" and reply.startswith(i.response) for i in items)


async def test_an_annotated_stream_is_judged_once_at_its_end(scripted_guard) -> None:
    chain = streamed_model("a b c bomb d") | FlexGuardRunnable(guard=scripted_guard, mode="annotate")
    (out,) = [chunk async for chunk in chain.astream("hi")]
    assert out["input"].content == "a b c bomb d" and out["decision"].flagged
    (out,) = list((streamed_model("a b c") | FlexGuardRunnable(guard=scripted_guard, mode="annotate")).stream("hi"))
    assert out["input"].content == "a b c" and not out["decision"].flagged


def test_a_one_chunk_stream_is_judged_once(scripted_guard) -> None:
    long_prompt = "please help me with my garden " * 20  # longer than a window
    chain = FlexGuardRunnable(guard=scripted_guard) | RunnableLambda(lambda x: len(x))
    assert list(chain.stream(long_prompt)) == [len(long_prompt)]
    assert [len(batch) for batch in scripted_guard.backend.batches] == [1]  # the whole input, no extra window
