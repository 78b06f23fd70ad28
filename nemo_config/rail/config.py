"""Loaded by NeMo when the rails are built (`init(app)` of a config folder or an imported one).

- Checks `custom_data.flexguard` and every parameter of a FlexGuard flow (`$strictness` only), so a bad value
  or an unknown name fails `LLMRails(...)` with one line naming it (the cause of NeMo's "Failed to initialize"
  error). The settings are read here, once, for every check the rails make.
- Binds the actions to this app: a guard registered with `register_action_param("flexguard", guard)` is
  used by streaming output rails too (NeMo 0.24.1 passes registered parameters only to non-streaming rails).
- Ends every stream through a FlexGuard output rail with a whole-message check that can still stop it:
  NeMo judges a stream window by window, so a reply harmful only as a whole would otherwise stream out in
  full. The last chunk is held back until the whole message has passed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from flexguard_nemo.rail.actions import check, flow_result, own_strictness
from flexguard_nemo.rail.settings import RAIL_FLOWS, check_flows, flow_name, flow_strictness, read_settings
from nemoguardrails.actions import action

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
        seen: list[str] = []
        ended = False

        async def one_chunk_behind() -> AsyncIterator[Any]:
            """The model's chunks, each passed on only when the next arrives: NeMo gets the last one after
            the stream is known to have ended, so that chunk cannot go out before the whole-message check."""
            nonlocal ended
            held: list[Any] = []
            async for chunk in streaming_handler:
                seen.append(chunk["text"] if isinstance(chunk, dict) else str(chunk))
                if held:
                    yield held.pop()
                held.append(chunk)
            ended = True
            for chunk in held:
                yield chunk

        checked = False
        async for out in inner(one_chunk_behind(), *args, prompt=prompt, messages=messages, **kwargs):
            if ended and not checked:
                checked = True
                error = await _whole_message_error(app, settings, _user_message(prompt, messages), "".join(seen))
                if error is not None:
                    yield error
                    return
            yield out
        if ended and not checked and seen:  # the stream ended with nothing left to release: still say so
            error = await _whole_message_error(app, settings, _user_message(prompt, messages), "".join(seen))
            if error is not None:
                yield error

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
        verdict = await check("response", app.config, context, strictness, flexguard or registered.get("flexguard"),
                              settings=settings)
        return flow_result(verdict, app.config, events)

    app.register_action(flexguard_check_input, "flexguard_check_input")
    app.register_action(flexguard_check_output, "flexguard_check_output")
    streaming = app._run_output_rails_in_streaming
    if any(flow_name(flow) == RAIL_FLOWS[1] for flow in app.config.rails.output.flows) \
            and not getattr(streaming, _WRAPPED, False):
        _guard_streams(app, settings)
