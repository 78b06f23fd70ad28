"""`flexguard/risk_score`: a Guardrails-AI validator on the FlexGuard scoring core."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from guardrails.validator_base import ErrorSpan, FailResult, PassResult, ValidationResult, Validator, register_validator

from flexguard_plugins import Decision, FlexGuard, check_on_error, check_shadow, resolve_strictness, shared_guard

PROMPT_KEY = "prompt"
"""Response mode reads the user prompt the output answers from `metadata["prompt"]`."""
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."
OPTIONS = ("strictness", "mode", "on_error", "shadow", "model", "backend", "reasoning", "refusal", "guard", "base_url",
           "on_fail", "use_local", "validation_endpoint")
"""Every option the validator takes (the last two are Guardrails' own, passed on to `Validator`)."""


@register_validator(name="flexguard/risk_score", data_type="string")
class FlexGuardRisk(Validator):
    """Flag text whose FlexGuard risk score reaches the strictness threshold.

    Score, threshold and categories are in the result's `metadata` (`Decision.to_dict()` and `mode`); a chunked
    text's riskiest chunk is the `error_span`. The model loads on first use, so building validators at import
    time costs nothing.

    Args:
        strictness: strict | moderate | loose | 0-100 | a per-category mapping | a policy file.
        mode: "prompt" judges the value itself; "response" the value as the reply to `metadata["prompt"]`.
        on_error: block | allow | raise, for a text the guard cannot judge (case and white space ignored).
        shadow: always `PassResult`; the verdict is in `metadata` (`would_flag`) and the decision log.
        model, backend, reasoning, guard: which scorer (default: the embedded one), or a `FlexGuard`.
        refusal: the fix value under `on_fail="fix"`.
        base_url: with `use_local=False`, your OpenAI-compatible FlexGuard server(s) (e.g. `vllm serve`).

    Raises:
        ValueError: an unknown option name, a bad strictness, mode, on_error or shadow (shadow with
            on_error="raise"), or `use_local=False` without `base_url` and `model`.

    Example:
        >>> Guard().use(FlexGuardRisk(strictness="strict", on_fail="exception"))  # doctest: +SKIP
    """

    def __init__(self, strictness: Any = "moderate", mode: Literal["prompt", "response"] = "prompt", *,
                 on_error: Literal["block", "allow", "raise"] = "block", shadow: bool = False,
                 model: str | None = None,
                 backend: str = "auto", reasoning: bool | None = None, refusal: str = DEFAULT_REFUSAL,
                 guard: FlexGuard | None = None, base_url: str | Sequence[str] | None = None,
                 on_fail: str | Callable[..., Any] | None = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(OPTIONS))
        if unknown:
            raise ValueError(f"flexguard/risk_score: unknown option {unknown[0]!r}; known: {', '.join(OPTIONS)}")
        if mode not in ("prompt", "response"):
            raise ValueError(f"mode must be 'prompt' or 'response', got {mode!r}")
        on_error = check_on_error(on_error)
        check_shadow(shadow, on_error)
        resolve_strictness(strictness)
        kwargs.setdefault("use_local", True)
        if not kwargs["use_local"] and guard is None:
            base_url = base_url or kwargs.get("validation_endpoint")
            if not base_url or model is None:
                raise ValueError("flexguard/risk_score with use_local=False scores on your own OpenAI-compatible "
                                 "FlexGuard server: pass base_url= (e.g. http://host:8000/v1, as served by "
                                 "`vllm serve`) and model= (the served model; its tokenizer renders the prompt); "
                                 "the Guardrails hub has no FlexGuard endpoint")
            backend = "openai" if backend == "auto" else backend
        super().__init__(on_fail=on_fail, strictness=strictness, mode=mode, on_error=on_error, shadow=shadow,
                         model=model, backend=backend, reasoning=reasoning, refusal=refusal, base_url=base_url,
                         **kwargs)
        self.strictness, self.mode, self.refusal = strictness, mode, refusal
        self.on_error, self.shadow = on_error, shadow
        self.required_metadata_keys = [PROMPT_KEY] if mode == "response" else []
        self._given_guard = guard
        self._load = {"model": model, "backend": backend, "reasoning": reasoning,
                      **({"base_url": base_url} if base_url else {})}

    @property
    def guard(self) -> FlexGuard:
        """The guard, loaded on first use (the process-wide one for these options, shared with other wrappers)."""
        if self._given_guard is None:
            self._given_guard = shared_guard(None, **self._load)
        return self._given_guard

    def _item(self, value: Any, metadata: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value, str):
            raise TypeError(f"flexguard/risk_score validates strings, got {type(value).__name__}")
        if self.mode == "prompt":
            return {"prompt": value}
        prompt = (metadata or {}).get(PROMPT_KEY)
        if not isinstance(prompt, str):
            raise ValueError(f"mode='response' needs the user prompt as a string in metadata[{PROMPT_KEY!r}]")
        return {"prompt": prompt, "response": value}

    def _result(self, value: str, decision: Decision) -> ValidationResult:
        """The one mapping from a FlexGuard decision to a Guardrails result, for sync and async paths.

        Under `on_fail="reask"` the failure carries no fix value: Guardrails substitutes the fix value when
        no re-ask can be made (no LLM, or re-asks used up) and would then report the text as validated."""
        metadata = {**decision.to_dict(), "mode": self.mode}
        if not decision.flagged:
            return PassResult(metadata=metadata)
        start, end = decision.risk.span or (0, len(value))
        reask = str(getattr(self.on_fail_descriptor, "value", self.on_fail_descriptor)) == "reask"
        return FailResult(
            error_message=decision.reason, fix_value=None if reask else self.refusal, metadata=metadata,
            error_spans=[ErrorSpan(start=start, end=end, reason=decision.reason)],
        )

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        decision = self.guard.check_batch([self._item(value, metadata)], self.strictness, self.on_error, self.shadow)[0]
        return self._result(value, decision)

    async def async_validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        """Awaits the core directly (no executor hop), so concurrent validations share micro-batches."""
        decisions = await self.guard.acheck_batch([self._item(value, metadata)], self.strictness, self.on_error,
                                                  self.shadow)
        return self._result(value, decisions[0])
