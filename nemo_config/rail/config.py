"""Loaded by NeMo when the rails are built (`init(app)` of a config folder or an imported one).

- Checks `custom_data.flexguard` and every parameter of a FlexGuard flow (`$strictness` only), so a bad value
  or an unknown name fails `LLMRails(...)` with one line naming it (the cause of NeMo's "Failed to initialize"
  error). The settings are read here, once, for every check the rails make.
- Binds the actions to this app: a guard registered with `register_action_param("flexguard", guard)` is
  used by streaming output rails too (NeMo 0.24.1 passes registered parameters only to non-streaming rails).
- Makes each streaming re-check read the reply so far with the question, not NeMo's window alone: a few words
  are never judged out of context, and an LLM backend's prefix cache serves all but the new text.
- A re-check that flags the reply so far holds the rest of the stream back (a beginning may read as harm until the
  reply goes on); no later re-check can release it: the whole-message check decides, as on the whole reply.
- Ends every stream through a FlexGuard output rail with a whole-message check that can still stop it;
  the last chunk is held back until the whole message has passed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any

from flexguard_nemo.rail.actions import check, flow_result, own_strictness
from flexguard_nemo.rail.settings import RAIL_FLOWS, check_flows, flow_name, flow_strictness, read_settings
from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome

from flexguard_plugins import MIN_RECHECK_CHARS

_WRAPPED = "_flexguard_stream_check"
logger = logging.getLogger("flexguard_nemo")


def _error(flow_id: str, kind: str) -> str:
    """NeMo's own streaming error chunk, so clients handle a FlexGuard stop like any rail's."""
    if kind == "blocked":
        error = {"message": f"Blocked by {flow_id} rails.", "type": "guardrails_violation", "param": flow_id,
                 "code": "content_blocked"}
    else:
        error = {"message": f"Internal error in {flow_id} rail.", "type": "internal_error", "param": flow_id,
                 "code": "rail_execution_failure"}
    return json.dumps({"error": error})


class _Stream:
    """One stream through the rails: the model's text, how much of it NeMo's buffer took, how much each FlexGuard
    output flow has read and passed (only what every one passed is shown)."""

    def __init__(self, flows: list[str]) -> None:
        self.seen: list[str] = []
        self.taken = 0
        self.read = dict.fromkeys(flows, 0)
        self.judged = dict.fromkeys(flows, 0)
        self.held: set[str] = set()
        """Flows whose re-check flagged the reply so far: they wait for the whole-message check."""

    def reply_to_judge(self, flow: str) -> str | None:
        """The reply from its start to the end of what NeMo's buffer took (its window's end); None while that adds
        under `MIN_RECHECK_CHARS` to what `flow` read."""
        reply = "".join(self.seen)[:self.taken]
        if flow in self.held or len(reply) - self.read.get(flow, 0) < MIN_RECHECK_CHARS:
            return None
        self.read[flow] = len(reply)
        return reply

    def passed(self) -> int:
        return min(self.judged.values(), default=0)


_STREAM: ContextVar[_Stream | None] = ContextVar("flexguard_stream", default=None)


def _user_message(prompt: str | None, messages: list[dict] | None) -> str:
    return prompt or next((m.get("content", "") for m in reversed(messages or []) if m.get("role") == "user"), "")


async def _whole_message_error(app: Any, settings: Mapping[str, Any], user: str, text: str) -> str | None:
    """Judge the whole streamed reply with each FlexGuard output flow; NeMo's error chunk on a stop."""
    guard = app.runtime.registered_action_params.get("flexguard")
    for flow_id in app.config.rails.output.flows:
        if flow_name(flow_id) != RAIL_FLOWS[1]:
            continue
        try:
            outcome = await check("response", app.config, {"user_message": user}, flow_strictness(flow_id), guard,
                                  response=text, settings=settings)
        except Exception:  # on_error=raise: the stream ends as NeMo ends it for a failing rail
            return _error(flow_id, "failed")
        if outcome.is_blocked:
            return _error(flow_id, "blocked")
    return None


def _guard_streams(app: Any, settings: Mapping[str, Any]) -> None:
    inner = app._run_output_rails_in_streaming

    async def run_with_whole_message_check(streaming_handler: AsyncIterator[Any], *args: Any, prompt: str | None = None,
                                           messages: list[dict] | None = None, **kwargs: Any) -> AsyncIterator[str]:
        ended = False
        _STREAM.set(stream := _Stream([f for f in app.config.rails.output.flows if flow_name(f) == RAIL_FLOWS[1]]))
        seen, user = stream.seen, _user_message(prompt, messages)

        async def one_chunk_behind() -> AsyncIterator[Any]:
            """The model's chunks, each passed on only when the next arrives: NeMo gets the last one after
            the stream is known to have ended, so that chunk cannot go out before the whole-message check."""
            nonlocal ended
            held: list[Any] = []
            async for chunk in streaming_handler:
                seen.append(chunk["text"] if isinstance(chunk, dict) else str(chunk))
                if held:
                    stream.taken += len(seen[-2])
                    yield held.pop()
                held.append(chunk)
            ended = True
            for chunk in held:
                stream.taken += len(seen[-1])
                yield chunk

        checked, shown, waiting = False, 0, []
        try:
            async for out in inner(one_chunk_behind(), *args, prompt=prompt, messages=messages, **kwargs):
                if out.startswith('{"error"'):
                    yield out  # NeMo's own stop: what waits is never shown
                    return
                if ended and not checked:
                    checked = True
                    error = await _whole_message_error(app, settings, user, "".join(seen))
                    if error is not None:
                        yield error
                        return
                    stream.judged = dict.fromkeys(stream.judged, len("".join(seen)))
                waiting.append(out)
                while waiting and shown + len(waiting[0]) <= stream.passed():
                    shown += len(waiting[0])
                    yield waiting.pop(0)
            if ended and not checked and seen:  # the stream ended with nothing left to release: still say so
                error = await _whole_message_error(app, settings, user, "".join(seen))
                if error is not None:
                    yield error
                    return
            for out in waiting:  # the whole message passed
                yield out
        finally:
            _STREAM.set(None)

    setattr(run_with_whole_message_check, _WRAPPED, True)
    app._run_output_rails_in_streaming = run_with_whole_message_check


def init(app: Any) -> None:
    settings = read_settings(app.config)
    check_flows(app.config)
    if getattr(app.runtime, _WRAPPED, False):
        return  # the rail is pulled in twice (the shipped config and an import): set up once per runtime
    setattr(app.runtime, _WRAPPED, True)
    if settings.get("shadow"):
        logger.warning("FlexGuard rails in shadow mode (custom_data.flexguard.shadow): every decision is recorded "
                       "in $flexguard_decision and the decision log, nothing is blocked")
    registered = app.runtime.registered_action_params

    @action(name="flexguard_check_input")
    async def flexguard_check_input(context: dict | None = None, events: list | None = None, strictness: Any = None,
                                    flexguard: Any = None, **kwargs: Any) -> Any:
        strictness = own_strictness("prompt", strictness, app.config, context, events)
        verdict = await check("prompt", app.config, context, strictness, flexguard or registered.get("flexguard"),
                              settings=settings)
        return flow_result(verdict, app.config, events)

    @action(name="flexguard_check_output")
    async def flexguard_check_output(context: dict | None = None, events: list | None = None, strictness: Any = None,
                                     flexguard: Any = None, **kwargs: Any) -> Any:
        strictness = own_strictness("response", strictness, app.config, context, events)
        stream = _STREAM.get() if events is None else None  # NeMo's streaming rails: their window, no events
        flow = (context or {}).get("triggered_output_rail") or RAIL_FLOWS[1]
        reply = stream.reply_to_judge(flow) if stream else None
        if stream and reply is None:
            return RailOutcome.allow(reason="FlexGuard: waiting for more text (not shown until judged)")
        verdict = await check("response", app.config, context, strictness, flexguard or registered.get("flexguard"),
                              response=reply, settings=settings)
        if stream and verdict.is_blocked and not verdict.failed:
            stream.held.add(flow)
            return RailOutcome.allow(reason=f"FlexGuard: held back for the whole-message check ({verdict.reason})",
                                     metadata=verdict.metadata)
        if stream and not verdict.is_blocked:
            stream.judged[flow] = max(stream.judged.get(flow, 0), len(reply or ""))
        return flow_result(verdict, app.config, events)

    app.register_action(flexguard_check_input, "flexguard_check_input")
    app.register_action(flexguard_check_output, "flexguard_check_output")
    streaming = app._run_output_rails_in_streaming
    if any(flow_name(flow) == RAIL_FLOWS[1] for flow in app.config.rails.output.flows) \
            and not getattr(streaming, _WRAPPED, False):
        _guard_streams(app, settings)
