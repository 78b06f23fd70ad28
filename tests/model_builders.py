"""Small real models for tests and benchmarks, built offline in seconds (test code: not shipped in the wheel).

`build_tiny_qwen3` makes a random-weight Qwen3 with a trained byte-level BPE tokenizer and a ChatML
template: the exact code path of FlexGuard-Qwen3-8B at a size a 2-core CPU runs in milliseconds.
SmolLM2-135M-Instruct, the real small model, comes from the product's own conversion of the GGUF shipped on PyPI
(`flexguard_plugins.smollm2.convert_base`), which also builds flexguard-smollm2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexguard_plugins.prompts import EMPTY_THINK, system_prompt

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]
"""Added but not special, as in Qwen3: decoding keeps them."""


def _corpus() -> list[str]:
    lines = [system_prompt("prompt"), system_prompt("response"), EMPTY_THINK]
    lines += ["[User]: How do I bake bread?", "[Assistant]: Mix flour, water, yeast and salt."]
    lines += ["SAFE\n0", "VIO,ILG\n85", "SEX\n55", "INF\n42", "DIS\n67", "MIS\n33", "JAIL\n91"]
    lines += [str(n) for n in range(101)] + ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-"]
    return lines * 4


def build_tokenizer(path: str | Path, *, vocab_size: int = 512) -> Any:
    """Train the tiny byte-level BPE with a ChatML template and save it to `path`; returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.add_tokens(THINK_TOKENS)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(path)
    return tokenizer


def build_tiny_qwen3(path: str | Path, *, vocab_size: int = 512, hidden_size: int = 256, num_layers: int = 4,
                     seed: int = 0) -> Path:
    """Write a tiny random Qwen3 causal LM and its tokenizer to `path` (about 3M parameters)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer(path, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    return path
