"""transformers backend: batched greedy decoding on CPU or GPU over a cached shared prefix.

Every input of a mode starts with the same system prompt and `[User]: `. Its KV cache is computed
once per mode and copied into each batch, so a batch only pays for its items' own tokens.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..prompts import shared_prefix
from ..types import ModerationItem, RiskScore
from . import generation as gen
from .base import Backend

Generated = tuple[list[int], list[tuple[int, list[tuple[int, float]]]]]
"""Generated token ids and, per token, (its id, [(alternative id, logprob)]) (empty without expected score)."""


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'")
    return resolved


class TransformersBackend(Backend):
    """FlexGuard on a transformers causal LM, greedy, batched with left padding.

    `enable_prefix_caching=False` recomputes the system prompt in every batch (for comparison and tests).
    A batch holds at most `batch_size` items and at most `max_batch_tokens` tokens, counting each row as
    its whole prompt plus `max_new_tokens` (the KV cache it grows to, shared prefix included); an item
    over the budget runs alone. `loaded_model`: a causal LM already in memory for `model`'s tokenizer
    (benchmarks build one from a config), used instead of loading weights from `model`. `languages`: the
    languages the model is accepted for (`generation.language_gate`; default any); `max_judged_chars`: the
    longest judged text it was measured on (default no limit).
    """

    name = "transformers"

    def __init__(self, model: str | Path, *, reasoning: bool = True, max_new_tokens: int | None = None,
                 system_prompt_path: str | Path | None = None, expected_score: bool = True,
                 languages: Sequence[str] | None = None, max_judged_chars: int | None = None, dtype: Any = None,
                 device: str | None = None, max_model_len: int | None = None, batch_size: int | None = None,
                 enable_prefix_caching: bool = True, max_batch_tokens: int | None = None,
                 loaded_model: Any = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if model is None:
            raise ValueError("the transformers backend needs a model (a hub id or a local folder)")
        self.options = gen.generation_options(reasoning, max_new_tokens, system_prompt_path, expected_score)
        self.gate = gen.language_gate(languages)
        self.max_judged_chars = gen.judged_chars_limit(max_judged_chars)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model_name = str(model)
        self.tokenizer = gen.load_tokenizer(model)
        if loaded_model is None:
            loaded_model = AutoModelForCausalLM.from_pretrained(str(model), dtype=_resolve_dtype(dtype, self.device))
        self.model = loaded_model.to(self.device).eval()
        context = max_model_len or getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_content_tokens = gen.content_budget(self.tokenizer, context, self.options)
        self.max_batch_size = batch_size or (64 if self.device.startswith("cuda") else 16)
        self.max_batch_tokens = max_batch_tokens or (131_072 if self.device.startswith("cuda") else 32_768)
        if self.max_batch_size < 1 or self.max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be positive")
        self.syncs = 0
        """Device→host synchronisations while decoding: one per generation step of a batch."""
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_forwards = 0
        """How many times a shared prefix was run through the model (once per mode when cached)."""
        self._prefixes: dict[str, tuple[list[int], Any]] = {}
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos_ids = eos_ids
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexguard-transformers")

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        loop = asyncio.get_running_loop()
        results: list[RiskScore | None] = [None] * len(items)
        for mode, indices in gen.split_by_mode(items).items():
            ids = {i: gen.prompt_ids(self.tokenizer, items[i], self.options) for i in indices}
            for batch in self._batches(ids):  # bounded memory per forward
                risks = await loop.run_in_executor(self._executor, self._judge, mode, [ids[i] for i in batch])
                for index, risk in zip(batch, risks, strict=True):
                    results[index] = risk
        return [r for r in results if r is not None]

    def _batches(self, ids: dict[int, list[int]]) -> list[list[int]]:
        """Item indices in batches of at most `max_batch_size` rows and `max_batch_tokens` tokens
        (rows × (longest prompt + max_new_tokens)); similar lengths together so padding stays small."""
        batches: list[list[int]] = []
        batch: list[int] = []
        for index in sorted(ids, key=lambda i: len(ids[i]), reverse=True):
            width = max([len(ids[i]) for i in batch] + [len(ids[index])]) + self.options.max_new_tokens
            if batch and (len(batch) >= self.max_batch_size or (len(batch) + 1) * width > self.max_batch_tokens):
                batches.append(batch)
                batch = []
            batch.append(index)
        if batch:
            batches.append(batch)
        return batches

    # --- model work, on the executor thread ---------------------------------------------------

    def _judge(self, mode: str, prompts: list[list[int]]) -> list[RiskScore]:
        """Generate, then decode and parse off the event loop (only the score's tokens' alternatives)."""
        return [gen.to_risk(gen.decode(self.tokenizer, token_ids), self.options, self.name,
                            gen.token_logprobs(self.tokenizer, steps))
                for token_ids, steps in self._generate(mode, prompts)]

    def _generate(self, mode: str, prompts: list[list[int]]) -> list[Generated]:
        """Greedy outputs for token prompts; prompts that start with the cached prefix reuse it."""
        outputs: list[Generated | None] = [None] * len(prompts)
        prefix_ids, prefix_kv = self._prefix(mode) if self.enable_prefix_caching else ([], None)
        n = len(prefix_ids)
        cached = [i for i, p in enumerate(prompts) if n and len(p) > n and p[:n] == prefix_ids]
        uncached = sorted(set(range(len(prompts))) - set(cached))
        for group, kv, start in ((cached, prefix_kv, n), (uncached, None, 0)):
            if group:
                for i, out in zip(group, self._greedy(kv, start, [prompts[i][start:] for i in group]), strict=True):
                    outputs[i] = out
        return [o for o in outputs if o is not None]

    def _prefix(self, mode: str) -> tuple[list[int], Any]:
        """The shared prefix's token ids and KV cache for `mode`, computed on first use only.

        Token boundaries can merge across the end of the prefix text (`: ` + `How` → `:` + ` How`),
        so the prefix is cut back to the longest token run that real prompts start with.
        """
        if mode not in self._prefixes:
            import torch

            ids = gen.encode(self.tokenizer, shared_prefix(self.tokenizer, mode,
                                                           system_prompt_path=self.options.system_prompt_path))
            probe = gen.prompt_ids(self.tokenizer, ModerationItem("a", None if mode == "prompt" else "a"),
                                   self.options)
            while ids and probe[:len(ids)] != ids:
                ids.pop()
            kv = None
            if ids:
                with torch.inference_mode():
                    tensor = torch.tensor([ids], device=self.device)
                    kv = self.model(input_ids=tensor, use_cache=True, logits_to_keep=1).past_key_values
                self.prefix_forwards += 1
            self._prefixes[mode] = (ids, kv)
        return self._prefixes[mode]

    def _greedy(self, prefix_kv: Any, prefix_len: int, suffixes: list[list[int]]) -> list[Generated]:
        """Greedy decoding of a left-padded batch that continues `prefix_kv` (a copy, expanded per batch)."""
        import torch
        from transformers import DynamicCache

        batch, width = len(suffixes), max(len(s) for s in suffixes)
        dev = self.device
        input_ids = torch.tensor([[self._pad_id] * (width - len(s)) + s for s in suffixes], device=dev)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=dev)
        positions = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
        attention = torch.cat([torch.ones(batch, prefix_len, dtype=mask.dtype, device=dev), mask], dim=1)
        if prefix_kv is None:
            cache = DynamicCache(config=self.model.config)
        else:
            cache = copy.deepcopy(prefix_kv)
            cache.batch_repeat_interleave(batch)
        eos = torch.tensor(sorted(self._eos_ids), device=dev)
        done = torch.zeros(batch, dtype=torch.bool, device=dev)
        chosen_steps: list[Any] = []
        top_steps: list[Any] = []
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)  # only the last position
            for step in range(self.options.max_new_tokens):
                log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
                chosen = log_probs.argmax(dim=-1).masked_fill(done, self._pad_id)
                chosen_steps.append(chosen)
                if self.options.expected_score:
                    top_steps.append(log_probs.topk(gen.TOP_LOGPROBS, dim=-1))
                done = done | torch.isin(chosen, eos)
                self.syncs += 1
                if step == self.options.max_new_tokens - 1 or bool(done.all()):  # the step's one sync
                    break
                positions = positions[:, -1:] + 1
                attention = torch.cat([attention, torch.ones(batch, 1, dtype=mask.dtype, device=dev)], dim=1)
                out = self.model(input_ids=chosen[:, None], attention_mask=attention, position_ids=positions,
                                 past_key_values=out.past_key_values, use_cache=True)
            tokens = torch.stack(chosen_steps, dim=1).tolist()  # one copy to the host for the whole batch
            if top_steps:
                top_ids = torch.stack([t.indices for t in top_steps], dim=1).tolist()
                top_lps = torch.stack([t.values for t in top_steps], dim=1).tolist()
        results: list[Generated] = []
        for row in range(batch):
            ids = tokens[row]
            end = next((k + 1 for k, token in enumerate(ids) if token in self._eos_ids), len(ids))
            ids = ids[:end]
            steps = ([(token, list(zip(top_ids[row][k], top_lps[row][k], strict=True))) for k, token in enumerate(ids)]
                     if top_steps else [])
            results.append((ids, steps))
        return results

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True)
        self._prefixes.clear()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "device": self.device,
                "reasoning": self.options.reasoning, "prefix_caching": self.enable_prefix_caching,
                **self.measured_range()}
