"""The lite cross-encoder in torch: all-MiniLM-L6-v2 + LoRA + three small heads.

One definition serves training (`flexguard_training.lite`) and the first-use rebuild (`build.py`
merges the shipped adapter onto the PyPI base and exports ONNX). Imported only where torch is
installed; inference needs onnxruntime and numpy only.

Input: prompt mode `[CLS] prompt [SEP]`; response mode `[CLS] prompt-tail [SEP] reply [SEP]` with
token_type_ids 0/1, so attention sees whether the reply complies or refuses. Pooled as
[CLS ; mean of the judged segment], then a shared hidden layer feeding
- `latent`: the ordinal severity z (P(severity ≥ k) = sigmoid(z − cut_k), cut-points learnt here),
- `categories`: 7 multi-label logits (FlexGuard codes),
- `refusal`: P(the reply refuses), meaningful in response mode only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..types import CATEGORIES

LORA_TARGETS = ("query", "key", "value", "dense")
"""Every linear layer of the BERT encoder (attention q/k/v/out, feed-forward in/out; the unused pooler too)."""


def lora_config(rank: int = 16, alpha: int = 32, dropout: float = 0.05) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS),
                      bias="none")


class LiteModel(nn.Module):
    """BERT encoder (LoRA-wrapped while training, merged for export) + pooled heads."""

    def __init__(self, bert: nn.Module, hidden: int = 256) -> None:
        super().__init__()
        self.bert = bert
        width = bert.config.hidden_size
        self.hidden = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Dropout(0.1))
        self.latent = nn.Linear(hidden, 1)
        self.categories = nn.Linear(hidden, len(CATEGORIES))
        self.refusal = nn.Linear(hidden, 1)
        self.first_cut = nn.Parameter(torch.tensor([0.0]))
        self.gaps = nn.Parameter(torch.full((3,), 0.5))

    def cuts(self) -> torch.Tensor:
        """Four strictly increasing cut-points of the ordinal model."""
        steps = nn.functional.softplus(self.gaps) + 1e-3
        return torch.cat([self.first_cut, self.first_cut + torch.cumsum(steps, 0)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latent z [n], category logits [n, 7], refusal logit [n])."""
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        # the judged segment: the reply (type 1) in response mode, the whole prompt in prompt mode
        has_reply = (token_type_ids.sum(1, keepdim=True) > 0).to(states.dtype)
        judged = attention_mask.to(states.dtype) * (has_reply * token_type_ids.to(states.dtype) + (1 - has_reply))
        mean = (states * judged.unsqueeze(-1)).sum(1) / judged.sum(1, keepdim=True).clamp(min=1.0)
        h = self.hidden(torch.cat([states[:, 0], mean], dim=1))
        return self.latent(h).squeeze(-1), self.categories(h), self.refusal(h).squeeze(-1)

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head parameters (everything outside the encoder)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bert.")}


def base_bert(source: str | Path) -> nn.Module:
    """The all-MiniLM-L6-v2 encoder from its folder (eager attention: exports cleanly to ONNX)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(source), attn_implementation="eager")


def trainable_state(model: LiteModel) -> dict[str, torch.Tensor]:
    """What a trained model ships: LoRA matrices, the encoder's LayerNorms, and the heads (fp16 on save)."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def build_for_training(source: str | Path, *, rank: int = 16, alpha: int = 32, hidden: int = 256) -> LiteModel:
    """Base encoder with LoRA on every linear layer; LayerNorms and heads train too."""
    from peft import get_peft_model

    bert = get_peft_model(base_bert(source), lora_config(rank, alpha))
    for name, parameter in bert.named_parameters():
        if "LayerNorm" in name:
            parameter.requires_grad = True
    return LiteModel(bert, hidden=hidden)


def load_trained(source: str | Path, state: dict[str, torch.Tensor], *, rank: int, alpha: int,
                 hidden: int, merge: bool = True) -> LiteModel:
    """Rebuild a trained model from the base weights and a shipped `trainable_state`; merge LoRA for export."""
    model = build_for_training(source, rank=rank, alpha=alpha, hidden=hidden)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    mismatch = sorted(name for name in set(trainable) | set(state)
                      if name not in state or name not in trainable or trainable[name].shape != state[name].shape)
    if mismatch:  # another rank, hidden size or recipe: a partial copy would run half-trained
        raise ValueError(f"adapter does not match this model (rank, hidden, recipe): {mismatch[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            trainable[name].copy_(value.to(trainable[name].dtype))
    if merge:
        model.bert = model.bert.merge_and_unload()
    return model.eval()
