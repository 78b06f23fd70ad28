"""What the three LLM backends and training share: items → prompt tokens, generated tokens → `RiskScore`.

This is the public contract between inference and training (`flexguard_training` renders SFT and GRPO
prompts through it), so a model is trained on exactly what it is served.

Backends differ only in how they generate; prompt rendering, tokenization, decoding, the content
budget and parsing happen here, once, so transformers, vLLM and a remote server read the model alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..language import LanguageGate
from ..parsing import parse_output
from ..prompts import THINK_CLOSE, THINK_OPEN, generation_prefill, render_prompt
from ..types import ModerationItem, RiskScore

TOP_LOGPROBS = 20
"""Alternatives read per generated token for the expected score (vLLM's default `max_logprobs`)."""
REASONING_MAX_NEW_TOKENS = 512
ANSWER_MAX_NEW_TOKENS = 16
"""`SAFE\\n3<eos>` or `VIO,ILG,SEX\\n85<eos>` fit easily; more only wastes time on a runaway answer."""


@dataclass(frozen=True)
class GenerationOptions:
    """How every backend asks the model: think or answer only, token budget, rubric file, probabilities."""

    reasoning: bool = True
    max_new_tokens: int = REASONING_MAX_NEW_TOKENS
    system_prompt_path: str | None = None
    expected_score: bool = True

    @property
    def prefill(self) -> str:
        return generation_prefill(self.reasoning)


def generation_options(reasoning: bool = True, max_new_tokens: int | None = None,
                       system_prompt_path: str | Path | None = None,
                       expected_score: bool = True) -> GenerationOptions:
    """Validate the options all backends share; defaults depend on `reasoning`."""
    if not isinstance(reasoning, bool):
        raise TypeError(f"reasoning must be True or False, got {reasoning!r}")
    if max_new_tokens is None:
        max_new_tokens = REASONING_MAX_NEW_TOKENS if reasoning else ANSWER_MAX_NEW_TOKENS
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if system_prompt_path is not None and not Path(system_prompt_path).is_file():
        raise FileNotFoundError(f"system_prompt_path {system_prompt_path} is not a file")
    return GenerationOptions(reasoning, max_new_tokens, None if system_prompt_path is None else str(system_prompt_path),
                             bool(expected_score))


def language_gate(languages: Sequence[str] | None) -> LanguageGate | None:
    """The `languages` option of the LLM backends: the languages a model is accepted for (the facade answers
    "unsupported language: xx" for text in another), or None: any language (FlexGuard-Qwen3-8B is multilingual)."""
    return None if languages is None else LanguageGate(languages, measured=None)


def judged_chars_limit(max_judged_chars: int | None) -> int | None:
    """The `max_judged_chars` option of the LLM backends: the longest judged text the model was measured on
    (longer is undecided), or None: no limit of its own.

    Raises:
        ValueError: not a positive integer or None.
    """
    if max_judged_chars is not None and (isinstance(max_judged_chars, bool) or not isinstance(max_judged_chars, int)
                                         or max_judged_chars < 1):
        raise ValueError(f"max_judged_chars must be a positive integer or None, got {max_judged_chars!r}")
    return max_judged_chars


def load_tokenizer(name_or_path: str | Path) -> Any:
    """The Hugging Face tokenizer whose chat template renders FlexGuard's input."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {name_or_path} has no chat template; FlexGuard prompts need one")
    return tokenizer


def prompt_text(tokenizer: Any, item: ModerationItem, options: GenerationOptions) -> str:
    return render_prompt(tokenizer, item, reasoning=options.reasoning, system_prompt_path=options.system_prompt_path)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text. The chat template already holds every special token it needs (BOS included)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Any, item: ModerationItem, options: GenerationOptions) -> list[int]:
    return encode(tokenizer, prompt_text(tokenizer, item, options))


def content_budget(tokenizer: Any, context_len: int, options: GenerationOptions) -> int:
    """Tokens of judged text that fit: context − rendered prompt (longest mode) − generation budget.

    In response mode the facade adds up to a quarter of the budget of prompt context, so a fifth of
    the free room is held back for it.
    """
    overhead = max(len(prompt_ids(tokenizer, ModerationItem("x"), options)),
                   len(prompt_ids(tokenizer, ModerationItem("x", "x"), options)))
    free = context_len - overhead - options.max_new_tokens
    budget = free * 4 // 5
    if budget < 8:
        raise ValueError(
            f"a context of {context_len} tokens leaves no room for text: the prompt takes {overhead} and "
            f"generation {options.max_new_tokens}; raise max_model_len or lower max_new_tokens"
        )
    return budget


def _kept_special_ids(tokenizer: Any) -> frozenset[int]:
    """Special ids to drop when decoding; the think tags stay even where a tokenizer marks them special."""
    think = {tokenizer.convert_tokens_to_ids(t) for t in (THINK_OPEN, THINK_CLOSE)}
    return frozenset(i for i in getattr(tokenizer, "all_special_ids", ()) if i not in think)


def decode(tokenizer: Any, token_ids: Iterable[int]) -> str:
    """Generated text with special tokens (EOS, padding) stripped and `<think>`/`</think>` kept."""
    drop = _kept_special_ids(tokenizer)
    return tokenizer.decode([int(i) for i in token_ids if int(i) not in drop], skip_special_tokens=False)


def token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([int(token_id)], skip_special_tokens=False)


def alternatives_by_text(tokenizer: Any, pairs: Iterable[tuple[int, float]]) -> dict[str, float]:
    """{token text: logprob} from (token id, logprob); ids that decode alike pool their probability."""
    merged: dict[str, float] = {}
    for token_id, logprob in pairs:
        text = token_text(tokenizer, token_id)
        merged[text] = logprob if text not in merged else float(_logaddexp(merged[text], logprob))
    return merged


def score_window(count: int, text_at: Callable[[int], str]) -> range:
    """Positions the expected score reads: the last run of digit tokens and the token after it.

    Walks back from the end, so only the answer's last few tokens are looked at (decoded), never the
    reasoning. Whitespace before a digit starts a new number, as in `parsing.expected_score`.
    """
    last = count - 1
    while last >= 0 and not text_at(last).strip().isdigit():
        last -= 1
    if last < 0:
        return range(0)
    first = last
    while first > 0 and text_at(first) == text_at(first).strip() and text_at(first - 1).strip().isdigit():
        first -= 1
    return range(first, min(last + 2, count))


def token_logprobs(tokenizer: Any, steps: Sequence[tuple[int, Iterable[tuple[int, float]]]]
                   ) -> list[tuple[str, dict[str, float]]]:
    """Per generated token (id, [(alternative id, logprob)]) → (text, {text: logprob}) for the score's tokens only.

    Only `score_window` is decoded (a handful of tokens, not the top-20 of every reasoning token); the
    token after the score is kept even when it is EOS, since its alternatives tell whether the number ended.
    """
    drop = _kept_special_ids(tokenizer)
    texts: dict[int, str] = {}

    def text_at(k: int) -> str:
        if k not in texts:
            token = int(steps[k][0])
            texts[k] = "" if token in drop else token_text(tokenizer, token)
        return texts[k]

    window = score_window(len(steps), text_at)
    return [(token_text(tokenizer, steps[k][0]), alternatives_by_text(tokenizer, steps[k][1])) for k in window]


def drop_special_texts(tokenizer: Any, token_logprobs: Sequence[tuple[str, Mapping[str, float]]]
                       ) -> list[tuple[str, Mapping[str, float]]]:
    """The same window for servers that report tokens as text (`<|im_end|>` ends their token list)."""
    special = {t for t in getattr(tokenizer, "all_special_tokens", ()) if t not in (THINK_OPEN, THINK_CLOSE)}
    tokens = list(token_logprobs)
    window = score_window(len(tokens), lambda k: "" if tokens[k][0] in special else tokens[k][0])
    return [tokens[k] for k in window]


def _logaddexp(a: float, b: float) -> float:
    high = max(a, b)
    if high == -math.inf:
        return high
    return high + math.log(math.exp(a - high) + math.exp(b - high))


def to_risk(generated: str, options: GenerationOptions, scorer: str,
            token_logprobs: Sequence[tuple[str, Mapping[str, float]]] | None = None) -> RiskScore:
    """Parse prefill + generated text; the expected score is read only when the options ask for it."""
    logprobs = token_logprobs if options.expected_score and token_logprobs else None
    return parse_output(options.prefill + generated, logprobs).with_(scorer=scorer)


def split_by_mode(items: Sequence[ModerationItem]) -> dict[str, list[int]]:
    """Indices of the items per mode; each mode has its own system prompt and so its own cached prefix."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.mode, []).append(index)
    return groups
