"""FlexGuard in real LangChain runnables and a LangChain 1.x agent, on the embedded scorer."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableBranch, RunnableLambda  # noqa: E402
from langchain_flexguard import FlexGuardMiddleware, FlexGuardRunnable, FlexGuardViolation  # noqa: E402

from flexguard_plugins import FlexGuard, FlexGuardError  # noqa: E402

from .fixtures_integrations import LOOSE, STRICT  # noqa: E402


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
        FlexGuardMiddleware(strictness=101)
    with pytest.raises(ValueError):
        FlexGuardMiddleware(exit_behavior="warn")
    with pytest.raises(ValueError):
        FlexGuardMiddleware(on_error="ignore")


def test_scorer_failure_blocks_or_raises(texts, failing_guard: FlexGuard) -> None:
    with pytest.raises(FlexGuardViolation) as caught:
        FlexGuardRunnable(guard=failing_guard).invoke(texts["benign"])
    assert caught.value.decision.failed and "scorer is down" in caught.value.decision.reason
    assert FlexGuardRunnable(guard=failing_guard, on_error="allow").invoke(texts["benign"]) == texts["benign"]
    with pytest.raises(FlexGuardError):
        FlexGuardRunnable(guard=failing_guard, on_error="raise").invoke(texts["benign"])


# --- agent middleware ---------------------------------------------------------------------------

def agent_with(replies: list[str], **options: Any):
    from langchain.agents import create_agent

    model = GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))
    return create_agent(model, tools=[], middleware=[FlexGuardMiddleware(**options)]), model


def test_middleware_stops_a_harmful_turn(texts) -> None:
    agent, model = agent_with(["never sent"])
    state = agent.invoke({"messages": [HumanMessage(texts["harmful"])]})
    last = state["messages"][-1]
    assert isinstance(last, AIMessage) and "flagged by FlexGuard" in last.content
    assert last.response_metadata["flexguard"]["stage"] == "input"
    assert last.response_metadata["flexguard"]["score"] >= LOOSE
    assert next(model.messages).content == "never sent"  # the model was never called


async def test_middleware_replaces_a_harmful_reply(texts) -> None:
    agent, _ = agent_with([texts["harmful_reply"]])
    state = await agent.ainvoke({"messages": [HumanMessage(texts["opener"])]})
    assert len(state["messages"]) == 2  # the harmful reply was replaced in place, not appended after
    assert all("ignition" not in m.content for m in state["messages"])
    assert state["messages"][-1].response_metadata["flexguard"]["stage"] == "output"


def test_middleware_passes_benign_and_raises_on_error_behavior(texts) -> None:
    agent, _ = agent_with([texts["benign_reply"]])
    state = agent.invoke({"messages": [HumanMessage(texts["benign"])]})
    assert state["messages"][-1].content == texts["benign_reply"]
    agent, _ = agent_with(["unused"], exit_behavior="error", strictness="strict")
    with pytest.raises(FlexGuardViolation) as caught:
        agent.invoke({"messages": [HumanMessage(texts["borderline"])]})
    assert caught.value.decision.threshold == STRICT


def test_middleware_replace_keeps_going(texts) -> None:
    agent, _ = agent_with(["I can't help with that request."], exit_behavior="replace")
    state = agent.invoke({"messages": [HumanMessage(texts["harmful"])]})
    user = state["messages"][0]
    assert "flagged by FlexGuard" in user.content and state["messages"][-1].content == "I can't help with that request."
