"""FlexGuard for Guardrails-AI: `from guardrails_ai.flexguard import FlexGuardRisk` (hub id flexguard/risk_score)."""

from .main import DEFAULT_REFUSAL, PROMPT_KEY, FlexGuardRisk

__all__ = ["DEFAULT_REFUSAL", "FlexGuardRisk", "PROMPT_KEY"]
