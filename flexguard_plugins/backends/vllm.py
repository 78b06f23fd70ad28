"""vLLM backend: vLLM's async engine (`AsyncLLM`) with prefix caching, one engine request per item.

Each item is its own request, so the engine batches continuously: a new caller's item joins the running
batch at the next step instead of waiting for a whole `generate` to finish, and one invalid prompt fails
only itself. The engine and its output handling run on their own thread and event loop (`VLLMEngine`),
so the caller's loop only awaits results; only the score's few tokens are decoded (vLLM decodes nothing:
`detokenize=False`).

vLLM is imported only when the backend is built. Its engine core runs in a child process: scripts that
build this backend need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..types import ModerationItem, RiskScore
from . import generation as gen
from .base import Backend

T = TypeVar("T")


def _cpu_defaults() -> None:
    """vLLM's CPU build refuses to start without a KV-cache size, and by default leaves a core idle."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class VLLMEngine:
    """One `AsyncLLM` on a private thread and event loop, shareable by backends with other options.

    `seed` goes to the engine, never to per-request sampling parameters: on the CPU build a per-request
    seed kills the engine when a prefill is chunked.
    """

    def __init__(self, model: str | Path, *, dtype: str = "auto", max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, gpu_memory_utilization: float | None = None, seed: int = 0,
                 tensor_parallel_size: int = 1, engine_options: dict[str, Any] | None = None) -> None:
        _cpu_defaults()
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs: dict[str, Any] = dict(model=str(model), dtype=dtype, enable_prefix_caching=enable_prefix_caching,
                                      seed=seed, tensor_parallel_size=tensor_parallel_size)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs.update(engine_options or {})
        self.model_name = str(model)
        self.closed = False
        self._closing = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flexguard-vllm-engine", daemon=True)
        self._thread.start()

        async def build() -> Any:  # on the engine loop, so vLLM's output handler lives there
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

        try:
            self.llm = self.submit(build()).result()
        except BaseException:
            self._stop_loop()
            raise
        self.max_model_len = int(self.llm.model_config.max_model_len)
        self.enable_prefix_caching = bool(self.llm.vllm_config.cache_config.enable_prefix_caching)
        self.prompt_tokens = 0
        """Prompt tokens of every request this engine finished; `cached_tokens` of them came from the prefix
        cache, so `prompt_tokens - cached_tokens` is the prefill it computed (what a streaming check costs)."""
        self.cached_tokens = 0

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the engine's loop; the future can be awaited from any loop or thread."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("the vLLM engine is shut down")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def generate(self, prompt_ids: list[int], sampling: Any) -> Any:
        """The final `RequestOutput` of one request (call on the engine loop, through `submit`)."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        renderer = self.llm.renderer  # token ids in, as vLLM's own front end renders them (validates length)
        (engine_input,) = renderer.render_cmpl([parse_model_prompt(self.llm.model_config,
                                                                   {"prompt_token_ids": prompt_ids})],
                                               renderer.default_cmpl_tok_params)
        final = None
        async for output in self.llm.generate(engine_input, sampling, request_id=uuid.uuid4().hex):
            final = output
        if final is None:
            raise RuntimeError("the vLLM engine returned no output")
        self.prompt_tokens += len(prompt_ids)
        self.cached_tokens += final.num_cached_tokens or 0
        return final

    def shutdown(self) -> None:
        """Stop the engine; requests still in flight end with an error. Idempotent and thread-safe: a
        second caller waits for the first to finish."""
        with self._closing:
            if not self.closed:
                self._shutdown()

    def _shutdown(self) -> None:
        async def stop() -> None:
            self.llm.shutdown()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.submit(stop()).result(timeout=120)
        finally:
            self.closed = True
            self._stop_loop()
            self.llm = None  # let AsyncLLM.__del__ run now, not at interpreter exit (where it fails noisily)

    def _stop_loop(self) -> None:
        self.closed = True
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()


class VLLMBackend(Backend):
    """FlexGuard on vLLM's async engine, greedy, with top-20 logprobs for the expected score.

    `engine`: a `VLLMEngine` already built for `model` to share (several option sets, one engine); the
    backend then leaves it running on `aclose`. Without it the backend builds and owns one. `languages`: the
    languages the model is accepted for (`generation.language_gate`; default any); `max_judged_chars`: the
    longest judged text it was measured on (default no limit).
    """

    name = "vllm"

    def __init__(self, model: str | Path, *, reasoning: bool = True, max_new_tokens: int | None = None,
                 system_prompt_path: str | Path | None = None, expected_score: bool = True,
                 languages: Sequence[str] | None = None, max_judged_chars: int | None = None, dtype: str = "auto",
                 max_model_len: int | None = None, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: float | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 batch_size: int = 256, engine_options: dict[str, Any] | None = None,
                 engine: VLLMEngine | None = None) -> None:
        if model is None:
            raise ValueError("the vllm backend needs a model (a hub id or a local folder)")
        _cpu_defaults()
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.options = gen.generation_options(reasoning, max_new_tokens, system_prompt_path, expected_score)
        self.gate = gen.language_gate(languages)
        self.max_judged_chars = gen.judged_chars_limit(max_judged_chars)
        self.model_name = str(model)
        self.tokenizer = gen.load_tokenizer(model)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else VLLMEngine(
            model, dtype=dtype, max_model_len=max_model_len, enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization, seed=seed, tensor_parallel_size=tensor_parallel_size,
            engine_options=engine_options)
        self.enable_prefix_caching = self.engine.enable_prefix_caching
        self.max_content_tokens = gen.content_budget(self.tokenizer, self.engine.max_model_len, self.options)
        self.max_batch_size = batch_size
        self.max_concurrent_batches = 16
        """The engine schedules; several batches in flight let new callers' items join at the next step."""
        self._sampling = SamplingParams(
            temperature=0.0, max_tokens=self.options.max_new_tokens,
            logprobs=gen.TOP_LOGPROBS if self.options.expected_score else None,
            detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        return list(await asyncio.gather(*(self._score_one(item) for item in items)))

    async def _score_one(self, item: ModerationItem) -> RiskScore:
        """One engine request; whatever goes wrong with it fails this item alone."""
        try:
            future = self.engine.submit(self._judge(item))
        except RuntimeError as error:
            return RiskScore.failure(str(error), scorer=self.name)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if self.engine.closed:
                return RiskScore.failure("the vLLM engine was shut down before this item finished", scorer=self.name)
            raise
        except Exception as error:  # noqa: BLE001 - any engine error is this item's failure, with its reason
            return RiskScore.failure(f"vLLM could not judge this item: {type(error).__name__}: {error}",
                                     scorer=self.name)

    async def _judge(self, item: ModerationItem) -> RiskScore:
        """On the engine loop: tokenize, generate, read the answer (decoding only the score's tokens)."""
        prompt = gen.prompt_ids(self.tokenizer, item, self.options)
        completion = (await self.engine.generate(prompt, self._sampling)).outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = None
        if completion.logprobs:
            steps = [(token, ((i, lp.logprob) for i, lp in alternatives.items()))  # lazy: read in the window only
                     for token, alternatives in zip(token_ids, completion.logprobs, strict=True)]
            logprobs = gen.token_logprobs(self.tokenizer, steps)
        return gen.to_risk(gen.decode(self.tokenizer, token_ids), self.options, self.name, logprobs)

    async def aclose(self) -> None:
        if self._owns_engine:
            await asyncio.to_thread(self.engine.shutdown)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "reasoning": self.options.reasoning,
                "prefix_caching": self.enable_prefix_caching, **self.measured_range()}

