"""Running a baseline guard: greedy generation on transformers, vLLM in-process or an OpenAI-compatible
server, and `GuardScorer`, the guard as an eval `Scorer` (render, generate, parse; see `guards`).

The scoring core's backends only know FlexGuard's format and have no hook for "generate text for this
prompt", so generation for baselines lives here, on the same libraries, greedy, with the same
special-token rule as the core: rendered text is tokenized without adding special tokens (the chat
template holds them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexguard_plugins.types import ModerationItem

from .guards import Completion, Guard, get_guard, render_text

TOP_LOGPROBS = 20


class TransformersGenerator:
    """Greedy generation with transformers (CPU or GPU), batched with left padding."""

    name = "transformers"

    def __init__(self, model: str | Path, *, dtype: str | None = None, device: str | None = None,
                 batch_size: int = 8) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model), padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype).to(self.device).eval()
        self.batch_size = batch_size

    def complete(self, texts: Sequence[str], max_new_tokens: int) -> list[Completion]:
        import torch

        out: list[Completion] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            encoded = self.tokenizer(batch, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                    return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
            first = torch.log_softmax(generated.scores[0].float(), dim=-1).topk(TOP_LOGPROBS, dim=-1)
            width = encoded["input_ids"].shape[1]
            for row in range(len(batch)):
                text = self.tokenizer.decode(generated.sequences[row, width:], skip_special_tokens=True)
                alternatives: dict[str, float] = {}
                for token, logprob in zip(first.indices[row].tolist(), first.values[row].tolist(), strict=True):
                    key = self.tokenizer.decode([token])
                    alternatives[key] = float(math.log(math.exp(alternatives[key]) + math.exp(logprob))
                                              if key in alternatives else logprob)
                out.append(Completion(text, alternatives))
        return out

    def close(self) -> None:
        self.model = None


class VLLMGenerator:
    """Greedy generation with vLLM in-process (prefix caching on: every item shares the guard's prompt)."""

    name = "vllm"

    def __init__(self, model: str | Path, **engine_options: Any) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.llm = LLM(model=str(model), enable_prefix_caching=True, **engine_options)

    def complete(self, texts: Sequence[str], max_new_tokens: int) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=TOP_LOGPROBS)
        prompts = [TokensPrompt(prompt_token_ids=self.tokenizer(t, add_special_tokens=False)["input_ids"])
                   for t in texts]
        out = []
        for request in self.llm.generate(prompts, params, use_tqdm=False):
            choice = request.outputs[0]
            first = choice.logprobs[0] if choice.logprobs else {}
            alternatives = {entry.decoded_token or "": entry.logprob for entry in first.values()}
            out.append(Completion(choice.text, alternatives or None))
        return out

    def close(self) -> None:
        """Drop the engine (its worker process ends when the last reference goes)."""
        import gc

        self.llm = None
        gc.collect()


class OpenAIGenerator:
    """An OpenAI-compatible server (`vllm serve`) over `/v1/completions`; the prompt is rendered here."""

    name = "openai"

    def __init__(self, model: str | Path, *, base_url: str, api_key: str | None = None,
                 served_model_name: str | None = None, tokenizer: str | Path | None = None, timeout: float = 60.0,
                 http_client: Any = None) -> None:
        import httpx
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or model))
        self.model = served_model_name or str(model)
        self.url = base_url.rstrip("/") + "/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = http_client or httpx.Client(timeout=timeout, headers=headers)

    def complete(self, texts: Sequence[str], max_new_tokens: int) -> list[Completion]:
        out = []
        for text in texts:
            response = self.client.post(self.url, json={
                "model": self.model, "prompt": text, "max_tokens": max_new_tokens, "temperature": 0,
                "logprobs": TOP_LOGPROBS})
            response.raise_for_status()
            choice = response.json()["choices"][0]
            top = (choice.get("logprobs") or {}).get("top_logprobs") or [None]
            out.append(Completion(choice.get("text", ""), top[0]))
        return out

    def close(self) -> None:
        self.client.close()


GENERATORS = {"transformers": TransformersGenerator, "vllm": VLLMGenerator, "openai": OpenAIGenerator}


def make_generator(model: str | Path, backend: str = "auto", **options: Any) -> Any:
    """`backend` as in `FlexGuard.load`: auto is openai with a base_url, else transformers."""
    if backend == "auto":
        backend = "openai" if "base_url" in options else "transformers"
    if backend not in GENERATORS:
        raise ValueError(f"baselines run on {', '.join(GENERATORS)}; got backend {backend!r}")
    return GENERATORS[backend](model, **options)


class GuardScorer:
    """A baseline as an eval `Scorer`: render every item, generate, parse; None where the format is broken."""

    def __init__(self, guard: Guard, generator: Any, name: str | None = None) -> None:
        self.guard = guard
        self.generator = generator
        self.kind = guard.kind
        self.name = name or f"{guard.name}:{getattr(generator, 'name', 'model')}"

    def __call__(self, items: Sequence[ModerationItem]) -> list[bool | float | None]:
        texts = [render_text(self.guard, item, self.generator.tokenizer) for item in items]
        completions = self.generator.complete(texts, self.guard.max_new_tokens)
        return [self.guard.read(c, item) for c, item in zip(completions, items, strict=True)]


def load_guard_scorer(name: str, model: str | Path, backend: str = "auto", **options: Any) -> GuardScorer:
    """`flexguard eval --baseline NAME --model PATH [--backend B] [--option k=v]`."""
    guard = get_guard(name)
    if model is None:
        raise ValueError(f"--baseline {name} needs --model (a folder or hub id of that guard model)")
    generator = make_generator(model, backend, **options)
    return GuardScorer(guard, generator, name=f"{name}:{model}")
