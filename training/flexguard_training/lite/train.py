"""Fine-tune the lite cross-encoder end to end (LoRA on every linear layer + LayerNorms + heads).

Short sequences (≤ 128 tokens), dynamic padding and length-grouped batches keep a run within about an
hour on two CPU cores. A checkpoint is written every `checkpoint_every` steps (and at the end of each
epoch) into the output folder; a rerun with the same folder resumes from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexguard_plugins.lite.inputs import TRAIN_MAX_TOKENS, assemble, pad

from .data import Example, model_text

log = logging.getLogger(__name__)
TRAIN_META = "train_meta.json"
"""What a run records next to the adapter (command, configuration, rows per source); the card reads it."""


@dataclass
class TrainConfig:
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 6e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    rank: int = 16
    alpha: int = 32
    hidden: int = 256
    max_tokens: int = TRAIN_MAX_TOKENS
    category_weight: float = 0.5
    refusal_weight: float = 0.5
    checkpoint_every: int = 100
    threads: int = 1
    """One thread: on a shared machine two intra-op threads wait on each other (measured 4-8x slower per step)."""
    bf16: bool = True
    """bf16 autocast for the matmuls (weights stay fp32): about 2x faster on CPUs with AVX-512 BF16, several times
    slower where bf16 is emulated (AVX2 only); the CLI's default is `native_bf16()`."""
    seed: int = 0
    max_steps: int | None = None
    init_from: str | None = None
    """A lite model folder to start from (fine-tuning it) instead of a fresh LoRA and heads."""


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (oneDNN's check): an AVX2-only CPU emulates them, and a
    step took about 3x longer in bf16 than in fp32 on one."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def encode_examples(examples: Sequence[Example], tokenizer: Any, max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """Token rows in the shared layout (`inputs.assemble`) over the `fold_leet` view of each text."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    judged = tokenizer.encode_batch([model_text(e.judged)[:4000] for e in examples], add_special_tokens=False)
    contexts = {i: e.prompt for i, e in enumerate(examples) if e.response is not None}
    context_ids = dict(zip(contexts, tokenizer.encode_batch([model_text(t)[-2000:] for t in contexts.values()],
                                                             add_special_tokens=False), strict=True))
    return [assemble(judged[i].ids, context_ids[i].ids if i in context_ids else None, cls=cls, sep=sep,
                     max_tokens=max_tokens) for i in range(len(examples))]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort within mega-batches of 50 batches by length, cut into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = 50 * batch_size
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def _targets(examples: Sequence[Example], rows: Sequence[int]) -> dict[str, Any]:
    import torch

    stacked: dict[str, list[np.ndarray]] = {}
    for i in rows:
        for key, value in examples[i].targets().items():
            stacked.setdefault(key, []).append(value)
    return {key: torch.from_numpy(np.stack(values)) for key, values in stacked.items()}


def loss_terms(model: Any, batch: dict[str, Any], targets: dict[str, Any], config: TrainConfig) -> tuple[Any, dict]:
    """Masked cumulative-link BCE on P(severity ≥ k), category BCE where known, refusal BCE where known."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        z, cat_logits, refusal_logit = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    z, cat_logits, refusal_logit = z.float(), cat_logits.float(), refusal_logit.float()
    mask = targets["at_least_mask"]
    ordinal = (bce(z[:, None] - model.cuts()[None, :], targets["at_least"], reduction="none") * mask).sum() \
        / mask.sum().clamp(min=1.0)
    cmask = targets["categories_mask"]
    category = (bce(cat_logits, targets["categories"], reduction="none").mean(1, keepdim=True) * cmask).sum() \
        / cmask.sum().clamp(min=1.0)
    rmask = targets["refusal_mask"][:, 0]
    refusal = (bce(refusal_logit, targets["refusal"][:, 0], reduction="none") * rmask).sum() \
        / rmask.sum().clamp(min=1.0)
    total = ordinal + config.category_weight * category + config.refusal_weight * refusal
    return total, {"ordinal": ordinal.item(), "category": category.item(), "refusal": refusal.item()}


def _resumable(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration a checkpoint must match to be resumed (a new `max_steps` is fine)."""
    return {k: v for k, v in config.items() if k not in ("max_steps", "checkpoint_every")}


def train(examples: Sequence[Example], out: Path, config: TrainConfig, *, source: Path | None = None,
          progress: bool = True) -> Any:
    """Train (resuming from `out/checkpoint.pt` when present) and return the model (LoRA not merged)."""
    import torch
    from tqdm.auto import tqdm

    from flexguard_plugins.lite.build import model_dir
    from flexguard_plugins.lite.encoder import load_tokenizer
    from flexguard_plugins.lite.model import build_for_training, trainable_state

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    source = source or model_dir()
    if config.init_from:
        model = _start_from(source, Path(config.init_from), config)
    else:
        model = build_for_training(source, rank=config.rank, alpha=config.alpha, hidden=config.hidden)
    tokenizer = load_tokenizer()
    rows = encode_examples(examples, tokenizer, config.max_tokens)
    lengths = [len(ids) for ids, _ in rows]
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total = max(1, int(config.epochs * steps_per_epoch))
    if config.max_steps:
        total = min(total, config.max_steps)
    head_names = {n for n, _ in model.named_parameters() if not n.startswith("bert.")}
    encoder_params = [p for n, p in model.named_parameters() if p.requires_grad and n not in head_names]
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and n in head_names]
    optimizer = torch.optim.AdamW([{"params": encoder_params, "lr": config.lr},
                                   {"params": head_params, "lr": config.head_lr}], weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup * total))

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if _resumable(state["config"]) != _resumable(asdict(config)) or state["rows"] != len(rows):
            raise SystemExit(f"{checkpoint} was written by another configuration or data; delete it to start over")
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                parameters[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        log.info("resumed from %s at step %d/%d", checkpoint, step, total)

    def save_checkpoint() -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "config": asdict(config),
                    "rows": len(rows)}, tmp)
        tmp.replace(checkpoint)

    model.train()
    epoch_batches: list[list[int]] = []
    epoch = -1
    bar = tqdm(total=total, initial=step, desc="lite", disable=not progress, mininterval=10, smoothing=0.05)
    started, seen_tokens, running = time.perf_counter(), 0, None
    while step < total:
        if step // steps_per_epoch != epoch:  # each epoch's order depends only on the seed and the epoch
            epoch = step // steps_per_epoch
            epoch_batches = length_grouped_batches(lengths, config.batch_size, random.Random(config.seed + epoch))
        chunk = epoch_batches[step % steps_per_epoch]
        batch = {k: torch.from_numpy(v) for k, v in pad([rows[i] for i in chunk]).items()}
        loss, parts = loss_terms(model, batch, _targets(examples, chunk), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder_params + head_params, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        seen_tokens += int(batch["attention_mask"].sum())
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", tok_s=f"{seen_tokens / (time.perf_counter() - started):.0f}",
                        refresh=False)
        if step % config.checkpoint_every == 0 or step % steps_per_epoch == 0 or step == total:
            save_checkpoint()
            log.info("step %d/%d loss %.4f %s", step, total, running, json.dumps({k: round(v, 4)
                                                                                for k, v in parts.items()}))
    bar.close()
    model.eval()
    return model


def _start_from(source: Path, folder: Path, config: TrainConfig) -> Any:
    """A shipped model's trainable state (LoRA, LayerNorms, heads) on the base, LoRA kept apart, to fine-tune."""
    from safetensors.torch import load_file

    from flexguard_plugins.lite.build import ADAPTER_FILE
    from flexguard_plugins.lite.model import load_trained

    try:
        model = load_trained(source, load_file(str(folder / ADAPTER_FILE)), rank=config.rank, alpha=config.alpha,
                             hidden=config.hidden, merge=False)
    except ValueError as error:
        raise SystemExit(f"{folder} was trained with another configuration ({error}); match --rank") from error
    log.info("starting from %s", folder)
    return model


def save_adapter(model: Any, out: Path, config: TrainConfig) -> dict[str, Path]:
    """Write what the repository ships: `adapter.safetensors` (fp16 LoRA + LayerNorms + heads) and `lite.json` (with
    the SHA-256 of the base files and the adapter)."""
    from safetensors.torch import save_file

    from flexguard_plugins.lite.base import hash_record
    from flexguard_plugins.lite.build import ADAPTER_FILE, CONFIG_FILE, RECIPE_VERSION
    from flexguard_plugins.lite.model import LORA_TARGETS, trainable_state

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype=__import__("torch").float16).contiguous() for k, v in trainable_state(model).items()}
    adapter = out / ADAPTER_FILE
    tmp = adapter.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.chmod(tmp, 0o644)
    tmp.replace(adapter)
    meta = {"recipe_version": RECIPE_VERSION, "rank": config.rank, "alpha": config.alpha, "hidden": config.hidden,
            "lora_targets": list(LORA_TARGETS), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": hash_record(out)}  # the base and adapter the first-use build checks
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {"adapter": adapter, "config": out / CONFIG_FILE}
