"""A few SFT and GRPO steps of the 8B training recipe on a Qwen3-8B-shaped model, then bench/gpu.py.

    python bench/gpu_train.py                     # one H100/H200: about --budget-s (480 s) in all
    python bench/gpu_train.py --skip-inference    # the training phases only
    python bench/gpu_train.py --tiny              # the same code path on CPU in seconds (CI runs this)

Random bf16 weights in Qwen3-8B's shapes, built on the device (bench/gpu.py's build_model): the cost per
token is the real one, the text is not. From the configs (training/flexguard_training/configs/*_qwen3_8b.yaml):
LoRA rank, alpha, dropout and targets, learning rate, batch size, gradient accumulation and checkpointing,
group size, completion budget, temperature, beta, masking of truncated completions. Not reproduced: LR
schedules and warm-up (the peak LR throughout), multi-GPU, vLLM generation (HF `generate` here).

SFT step: one optimizer step over batch x accumulation sequences made by flexguard_training.sft.tokenize_record
(the rendered prompt, a ~300-token trace, `CATEGORY\nSCORE`). GRPO, like the recipe on the merged SFT model
with a fresh adapter: a group of samples per prompt (prompts by flexguard_training.grpo), rewards by
flexguard_training.rewards.flexguard_reward, advantages normalised per group, one optimizer step of TRL's
dapo loss (token-level, on-policy ratio, + beta x k3-KL to the base with the adapter disabled when beta > 0).
A random model never writes the contract: all rewards are -3, every group has zero variance, truncated
completions are masked; the loss is 0 but the passes cost what they cost.

Printed per phase: wall time, tokens/s, step time, loss, the norm of the adapter's change (non-zero once an
optimizer step moved it) and the fraction of the dense bf16 peak by 4·N + 6·N_lora FLOPs per token processed
(N: the base's matmul weights, frozen, so its backward is activation gradients only; N_lora: the adapter),
also by the usual 6·N; attention scores and checkpoint recompute left out. GRPO also: generated tokens/s and
the share of zero-variance groups. On CPU, or a GPU of unknown peak, the fraction is n/a.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training")]  # the repo root (flexguard_plugins, bench, tests), training
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from bench.gpu import FILLER, build_model, pad_text  # noqa: E402

CONFIGS = ROOT / "training" / "flexguard_training" / "configs"
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12}
"""Dense bf16 tensor-core peaks by device-name part, first match wins (NVIDIA datasheets; twice that is sparse)."""
FULL = {"prefix": 1500, "content": 200, "trace": 300}
TINY_LENGTHS = {"prefix": 120, "content": 16, "trace": 16, "completion": 16}
CATEGORY_CYCLE = ([], ["VIO"], ["ILG", "VIO"], ["SEX"], ["MIS"], [], ["INF"], ["DIS"])


def load_recipe() -> tuple[dict[str, Any], dict[str, Any]]:
    """The 8B SFT and GRPO configs as dicts."""
    import yaml

    return tuple(yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
                 for name in ("sft_qwen3_8b.yaml", "grpo_qwen3_8b.yaml"))


def make_records(tokenizer: Any, n: int, lengths: dict[str, int], offset: int = 0) -> list[dict[str, Any]]:
    """Prepared-data records (query, reply, reasoning, targets) with the judged text and trace padded."""
    records = []
    for k in range(offset, offset + n):
        text = pad_text(tokenizer, f"Case {k}: how do I write to my neighbour? ", lengths["content"], FILLER)
        trace = pad_text(tokenizer, f"The text of case {k} asks for everyday advice. ", lengths["trace"],
                         ("Nothing in it enables harm to anyone. ",))
        categories = CATEGORY_CYCLE[k % len(CATEGORY_CYCLE)]
        records.append({"query": text if k % 2 == 0 else f"Question {k}?", "reply": None if k % 2 == 0 else text,
                        "reasoning": trace, "target_categories": categories,
                        "target_score": 5 + 11 * (k % 9) if categories else k % 20})
    return records


def matmul_params(model: Any) -> int:
    """Weights of the model's linear layers (lm_head included, the embedding lookup not)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def add_lora(model: Any, recipe: dict[str, Any], checkpointing: bool) -> Any:
    """A peft LoRA adapter on the frozen base, as the recipe's config sets it."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=recipe["lora_r"], lora_alpha=recipe["lora_alpha"], lora_dropout=recipe["lora_dropout"],
                        target_modules=recipe["lora_target_modules"], task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def synchronize(device: str) -> None:
    if device == "cuda":  # CUDA calls return before the work is done
        torch.cuda.synchronize()


def adapter_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}


def change_norm(model: Any, before: dict[str, Any]) -> float:
    """L2 norm of the adapter's change since `before`: 0 when no optimizer step moved it."""
    after = adapter_state(model)
    return math.sqrt(sum(float((after[k] - before[k]).pow(2).sum()) for k in before))


def make_optimizer(model: Any, recipe: dict[str, Any]) -> Any:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(recipe["learning_rate"]),
                             weight_decay=float(recipe.get("weight_decay", 0.0)))


def pad_batch(rows: list[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    """Ids and attention mask of `rows`, padded to the longest on the left or the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row), 1
    return ids, mask


def sft_step(model: Any, optimizer: Any, batches: list[dict[str, list[int]]], micro: int, pad_id: int,
             device: str, autocast: Any) -> tuple[float, int]:
    """One optimizer step over `batches` in micro-batches of `micro` (gradient accumulation): loss, tokens."""
    chunks = [batches[i:i + micro] for i in range(0, len(batches), micro)]
    total, tokens = 0.0, 0
    for chunk in chunks:
        ids, mask = pad_batch([r["input_ids"] for r in chunk], pad_id, left=False)
        labels = torch.full_like(ids, -100)
        for i, r in enumerate(chunk):
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
        with autocast():
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                         use_cache=False).loss
        (loss / len(chunks)).backward()
        total += float(loss.detach()) / len(chunks)
        tokens += int(mask.sum())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, tokens


def completion_mask(completions: Any, eos_id: int, mask_truncated: bool) -> Any:
    """1 up to and including the first EOS; a completion without EOS is all 0 when `mask_truncated`."""
    is_eos = completions == eos_id
    has_eos = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1).where(has_eos, completions.shape[1])
    mask = (torch.arange(completions.shape[1], device=completions.device)[None, :] <= first[:, None]).long()
    if mask_truncated:
        mask = mask * has_eos[:, None].long()
    return mask


def group_advantages(rewards: Any, group: int) -> tuple[Any, float]:
    """(r − group mean) / (group std + 1e-4), TRL's `scale_rewards: group`; and the share of zero-variance groups."""
    grouped = rewards.view(-1, group)
    std = grouped.std(dim=1, keepdim=True)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)) / (std + 1e-4)
    return advantages.flatten(), float((std < 1e-6).float().mean())


def completion_logprobs(model: Any, ids: Any, mask: Any, width: int, temperature: float) -> Any:
    """Log-probabilities of the last `width` tokens of each row, one row's softmax at a time (memory)."""
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=width + 1,
                   use_cache=False).logits
    targets = ids[:, -width:]
    rows = [torch.log_softmax(row[:-1].float() / temperature, dim=-1).gather(1, t[:, None]).squeeze(1)
            for row, t in zip(logits, targets, strict=True)]
    return torch.stack(rows)


def grpo_update(model: Any, optimizer: Any, ids: Any, mask: Any, width: int, loss_mask: Any, advantages: Any,
                micro: int, beta: float, temperature: float, autocast: Any, ref_logps: Any = None) -> float:
    """One optimizer step of TRL's dapo loss over micro-batches: −A·ratio per completion token (ratio = 1
    on-policy, with its gradient), + beta·k3-KL to `ref_logps`, summed and divided by all completion tokens."""
    count = max(int(loss_mask.sum()), 1)
    total = 0.0
    for start in range(0, ids.shape[0], micro):
        part = slice(start, start + micro)
        with autocast():
            logps = completion_logprobs(model, ids[part], mask[part], width, temperature)
        per_token = -torch.exp(logps - logps.detach()) * advantages[part, None]
        if beta > 0:
            delta = ref_logps[part] - logps
            per_token = per_token + beta * (torch.exp(delta) - delta - 1)
        loss = (per_token * loss_mask[part]).sum() / count
        loss.backward()
        total += float(loss.detach())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def grpo_step(model: Any, optimizer: Any, tokenizer: Any, examples: list[dict[str, Any]], recipe: dict[str, Any],
              completion_tokens: int, device: str, autocast: Any) -> dict[str, float]:
    """Sample a group per prompt, reward, normalise, take one optimizer step; returns the step's figures."""
    from flexguard_training.grpo import tokenize_prompts
    from flexguard_training.rewards import flexguard_reward

    from flexguard_plugins.backends import generation as gen

    group, beta = int(recipe["num_generations"]), float(recipe["beta"])
    micro = int(recipe["per_device_train_batch_size"])
    temperature = float(recipe["temperature"])
    prompt_ids, prompt_mask = pad_batch(tokenize_prompts(tokenizer, [e["prompt"] for e in examples]),
                                        tokenizer.pad_token_id, left=True)
    prompt_ids = prompt_ids.repeat_interleave(group, dim=0).to(device)
    prompt_mask = prompt_mask.repeat_interleave(group, dim=0).to(device)
    model.eval()  # generation with the KV cache (gradient checkpointing turns it off in train mode)
    started = time.perf_counter()
    with torch.no_grad(), autocast():
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=completion_tokens)
    synchronize(device)
    gen_s = time.perf_counter() - started
    completions = out[:, prompt_ids.shape[1]:]
    width = completions.shape[1]
    kept = completion_mask(completions, tokenizer.eos_token_id, False)  # what the policy wrote, EOS included
    loss_mask = completion_mask(completions, tokenizer.eos_token_id, bool(recipe["mask_truncated_completions"]))
    texts = [gen.decode(tokenizer, row[:n]) for row, n in zip(completions.tolist(), kept.sum(dim=1).tolist(),
                                                              strict=True)]
    per_sample = [e for e in examples for _ in range(group)]
    rewards = torch.tensor(flexguard_reward(texts, [e["target_score"] for e in per_sample],
                                            [e["target_categories"] for e in per_sample],
                                            prompts=[e["prompt"] for e in per_sample]), dtype=torch.float32)
    advantages, zero_share = group_advantages(rewards, group)
    ids = torch.cat([prompt_ids, completions], dim=1)
    mask = torch.cat([prompt_mask, kept], dim=1)
    started = time.perf_counter()
    ref_logps = None
    if beta > 0:
        with torch.no_grad(), model.disable_adapter(), autocast():
            ref_logps = torch.cat([completion_logprobs(model, ids[i:i + micro], mask[i:i + micro], width,
                                                       temperature) for i in range(0, ids.shape[0], micro)])
    model.train()
    loss = grpo_update(model, optimizer, ids, mask, width, loss_mask, advantages.to(device), micro, beta,
                       temperature, autocast, ref_logps)
    synchronize(device)
    return {"gen_s": gen_s, "generated": int(kept.sum()), "train_s": time.perf_counter() - started,
            "train_tokens": int(mask.sum()), "ref_tokens": int(mask.sum()) if beta > 0 else 0, "loss": loss,
            "zero_share": zero_share, "reward_mean": float(rewards.mean())}


def report(name: str, tokens: int, seconds: float, steps: int, n_base: int, n_lora: int, peak: float | None,
           extra: str = "", ref_tokens: int = 0) -> dict[str, Any]:
    """Print and return one phase's training figures (tokens/s, step time, fraction of the peak);
    `ref_tokens` went through the reference forward only (2·N each)."""
    achieved = ((4 * n_base + 6 * n_lora) * tokens + 2 * n_base * ref_tokens) / seconds
    fraction = achieved / peak if peak else None
    usual = (6 * n_base * tokens + 2 * n_base * ref_tokens) / seconds / peak if peak else None
    share = (f"{100 * fraction:.1f}% of the {peak / 1e12:.0f} TFLOP/s bf16 peak by 4·N+6·N_lora per token "
             f"({100 * usual:.1f}% by 6·N)") if peak else "fraction of peak n/a (no known peak for this device)"
    print(f"  {name}: {steps} steps, {tokens / seconds:,.0f} tokens/s, {seconds / steps:.2f} s/step, "
          f"{achieved / 1e12:.2f} TFLOP/s, {share}{extra}", flush=True)
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "step_s": seconds / steps, "tflops": achieved / 1e12, "fraction_of_peak": fraction}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU, seconds (the CI code path)")
    parser.add_argument("--sft-steps", type=int, default=8, help="SFT optimizer steps (default 8)")
    parser.add_argument("--grpo-steps", type=int, default=2, help="GRPO optimizer steps (default 2)")
    parser.add_argument("--completion-tokens", type=int, default=None,
                        help="GRPO max new tokens (default: the config's max_completion_length; tiny 16)")
    parser.add_argument("--beta", type=float, default=None, help="KL weight (default: the GRPO config's)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="seconds for the whole command; steps stop being added when it runs short (default 480)")
    parser.add_argument("--skip-inference", action="store_true", help="do not run bench/gpu.py afterwards")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.budget_s

    from flexguard_training.grpo import to_grpo_example
    from flexguard_training.sft import tokenize_record

    from tests.model_builders import build_tokenizer

    tiny = args.tiny
    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for the CPU code path")
    dtype = torch.float32 if tiny else torch.bfloat16
    threads = torch.get_num_threads()
    if tiny:
        torch.set_num_threads(1)  # the tiny model gains nothing from more, and a busy CPU makes them spin for long
    sft_recipe, grpo_recipe = load_recipe()
    if args.beta is not None:
        grpo_recipe["beta"] = args.beta
    lengths = TINY_LENGTHS if tiny else dict(FULL, completion=int(grpo_recipe["max_completion_length"]))
    completion_tokens = args.completion_tokens or lengths["completion"]
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None) if device == "cuda" else None
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device == "cuda" else contextlib.nullcontext

    folder = Path(tempfile.mkdtemp(prefix="flexguard-gpu-train-"))
    tokenizer = build_tokenizer(folder / "tokenizer")
    rubric, ours = folder / "rubric.txt", ROOT / "flexguard_plugins" / "system_prompt.txt"
    base = "Judge the {role} turn." if tiny else ours.read_text(encoding="utf-8")
    rubric.write_text(pad_text(tokenizer, base, lengths["prefix"],
                               ("\nWhen in doubt, weigh the most likely intent and the harm the reply could enable.",)),
                      encoding="utf-8")
    model = build_model(tokenizer, tiny, device, dtype)
    n_base = matmul_params(model)
    checkpointing = bool(sft_recipe["gradient_checkpointing"])
    model = add_lora(model, sft_recipe, checkpointing)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{'tiny' if tiny else 'Qwen3-8B-shaped'} random {str(dtype).replace('torch.', '')} model on {name}: "
          f"N = {n_base / 1e6:,.1f}M matmul weights, LoRA r={sft_recipe['lora_r']} alpha={sft_recipe['lora_alpha']} "
          f"on {sft_recipe['lora_target_modules']}: N_lora = {n_lora / 1e6:.2f}M; gradient checkpointing "
          f"{'on' if checkpointing else 'off'}; built in {time.perf_counter() - started:.0f} s", flush=True)

    micro, accum = int(sft_recipe["per_device_train_batch_size"]), int(sft_recipe["gradient_accumulation_steps"])
    records = make_records(tokenizer, micro * accum, lengths)
    batch = [tokenize_record(r, tokenizer, sft_recipe["reasoning_mode"], str(rubric)) for r in records]
    longest = max(len(r["input_ids"]) for r in batch)
    if longest > int(sft_recipe["max_length"]):
        raise SystemExit(f"an SFT sequence has {longest} tokens, over max_length {sft_recipe['max_length']}")
    optimizer = make_optimizer(model, sft_recipe)
    before, losses, tokens, step_s = adapter_state(model), [], 0, 0.0
    model.train()
    phase = time.perf_counter()
    sft_deadline = started + 0.3 * args.budget_s
    while len(losses) < args.sft_steps and (not losses or time.perf_counter() + step_s < sft_deadline):
        t0 = time.perf_counter()
        loss, n = sft_step(model, optimizer, batch, micro, tokenizer.pad_token_id, device, autocast)
        synchronize(device)
        step_s = time.perf_counter() - t0
        losses.append(loss)
        tokens += n
    skipped = f", {args.sft_steps - len(losses)} steps skipped (time budget)" if len(losses) < args.sft_steps else ""
    print(f"SFT ({micro} x {accum} sequences of {min(len(r['input_ids']) for r in batch)}-{longest} tokens a step, "
          f"lr {sft_recipe['learning_rate']}): {time.perf_counter() - phase:.1f} s wall{skipped}", flush=True)
    moved = change_norm(model, before)
    sft = report("SFT train", tokens, time.perf_counter() - phase, len(losses), n_base, n_lora, peak,
                 f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}; adapter change {moved:.4g}")
    sft.update(losses=losses, adapter_change=moved)

    # the recipe's GRPO starts from the merged SFT model with a fresh adapter
    model = add_lora(model.merge_and_unload(), grpo_recipe, checkpointing)
    group = int(grpo_recipe["num_generations"])
    prompts = int(grpo_recipe["per_device_train_batch_size"]) * int(grpo_recipe["gradient_accumulation_steps"])
    prompts = max(1, prompts // group)
    examples = [to_grpo_example(r, tokenizer, bool(grpo_recipe["reasoning"]), str(rubric))
                for r in make_records(tokenizer, prompts, lengths, offset=100)]
    optimizer = make_optimizer(model, grpo_recipe)
    before, steps = adapter_state(model), []
    phase = time.perf_counter()
    grpo_deadline = started + (0.95 if args.skip_inference else 0.7) * args.budget_s
    while len(steps) < args.grpo_steps and (not steps or time.perf_counter() + sum(
            steps[-1][k] for k in ("gen_s", "train_s")) < grpo_deadline):
        steps.append(grpo_step(model, optimizer, tokenizer, examples, grpo_recipe, completion_tokens, device,
                               autocast))
    gen_s, generated, moved = sum(s["gen_s"] for s in steps), sum(s["generated"] for s in steps), change_norm(
        model, before)
    zero_share = sum(s["zero_share"] for s in steps) / len(steps)
    skipped = f", {args.grpo_steps - len(steps)} steps skipped (time budget)" if len(steps) < args.grpo_steps else ""
    print(f"GRPO ({prompts} prompts x {group} samples a step, up to {completion_tokens} new tokens at temperature "
          f"{grpo_recipe['temperature']}, beta {grpo_recipe['beta']}, lr {grpo_recipe['learning_rate']}): "
          f"{time.perf_counter() - phase:.1f} s wall{skipped}", flush=True)
    print(f"  GRPO generation (HF generate): {generated / gen_s:,.0f} generated tokens/s, {gen_s / len(steps):.2f} s "
          f"a step; mean reward {sum(s['reward_mean'] for s in steps) / len(steps):.2f}; "
          f"zero-variance groups {100 * zero_share:.0f}%", flush=True)
    grpo = report("GRPO train", sum(s["train_tokens"] for s in steps), sum(s["train_s"] for s in steps), len(steps),
                  n_base, n_lora, peak, f"; loss {steps[-1]['loss']:.4g}; adapter change {moved:.4g}",
                  ref_tokens=sum(s["ref_tokens"] for s in steps))
    grpo.update(losses=[s["loss"] for s in steps], adapter_change=moved,
                zero_variance_share=zero_share, generated_tokens_per_s=generated / gen_s, generation_s=gen_s)
    print(f"training phases: {time.perf_counter() - started:.1f} s wall in all", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    torch.set_num_threads(threads)

    result: dict[str, Any] = {"sft": sft, "grpo": grpo, "inference_rc": None}
    del model, optimizer
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if not args.skip_inference:
        budget = max(30.0, deadline - time.perf_counter() - 120.0)  # gpu.py's build, warm-ups, last batch
        command = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--time-budget", f"{budget:.0f}"]
        print(f"inference: {' '.join(command[1:])}{' --tiny' if tiny else ''}", flush=True)
        phase = time.perf_counter()
        result["inference_rc"] = subprocess.run(command + (["--tiny"] if tiny else []), check=False).returncode
        print(f"inference: {time.perf_counter() - phase:.1f} s wall, exit status {result['inference_rc']}", flush=True)
    print(f"total: {time.perf_counter() - started:.1f} s wall", flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main()["inference_rc"] or 0)
