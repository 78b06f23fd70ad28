"""vLLM backend: an in-process `vllm.LLM` engine with prefix caching (the shared system prompt is
computed once and its KV blocks reused by every later request).

vLLM is imported only when the backend is built. Its engine runs in a child process: scripts that
build this backend need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..types import ModerationItem, RiskScore
from . import _generation as gen
from .base import Backend


def _cpu_defaults() -> None:
    """vLLM's CPU build refuses to start without a KV-cache size, and by default leaves a core idle."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class VLLMBackend(Backend):
    """FlexGuard on an in-process vLLM engine, greedy, with top-20 logprobs for the expected score.

    `seed` goes to the engine (`LLM(seed=...)`), never to per-request sampling parameters: on the CPU
    build a per-request seed kills the engine when a prefill is chunked.
    `llm`: an engine already built for `model` to share (several option sets, one engine); the
    backend then leaves it running on `aclose`.
    """

    name = "vllm"

    def __init__(self, model: str | Path, *, reasoning: bool = True, max_new_tokens: int | None = None,
                 system_prompt_path: str | Path | None = None, expected_score: bool = True, dtype: str = "auto",
                 max_model_len: int | None = None, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: float | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 batch_size: int = 256, engine_options: dict[str, Any] | None = None, llm: Any = None) -> None:
        if model is None:
            raise ValueError("the vllm backend needs a model (a hub id or a local folder)")
        _cpu_defaults()
        from vllm import LLM, SamplingParams

        self.options = gen.generation_options(reasoning, max_new_tokens, system_prompt_path, expected_score)
        self.model_name = str(model)
        self.tokenizer = gen.load_tokenizer(model)
        kwargs: dict[str, Any] = dict(model=str(model), dtype=dtype, enable_prefix_caching=enable_prefix_caching,
                                      seed=seed, tensor_parallel_size=tensor_parallel_size)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs.update(engine_options or {})
        self._owns_engine = llm is None
        self.llm = LLM(**kwargs) if llm is None else llm
        self.enable_prefix_caching = bool(self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)
        self.max_content_tokens = gen.content_budget(self.tokenizer, self.llm.llm_engine.model_config.max_model_len,
                                                     self.options)
        self.max_batch_size = batch_size
        self._sampling = SamplingParams(
            temperature=0.0, max_tokens=self.options.max_new_tokens,
            logprobs=gen.TOP_LOGPROBS if self.options.expected_score else None,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexguard-vllm")

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        prompts = [{"prompt_token_ids": gen.prompt_ids(self.tokenizer, item, self.options)} for item in items]
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._executor, self._generate, prompts)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            token_ids = list(completion.token_ids)
            logprobs = None
            if completion.logprobs:
                logprobs = gen.token_logprobs(self.tokenizer, (
                    (token, [(i, lp.logprob) for i, lp in alternatives.items()])
                    for token, alternatives in zip(token_ids, completion.logprobs, strict=True)))
            results.append(gen.to_risk(gen.decode(self.tokenizer, token_ids), self.options, self.name, logprobs))
        return results

    def _generate(self, prompts: list[dict[str, list[int]]]) -> list[Any]:
        return self.llm.generate(prompts, self._sampling, use_tqdm=False)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True)
        if not self._owns_engine:
            return
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "reasoning": self.options.reasoning,
                "prefix_caching": self.enable_prefix_caching}
