"""The SHA-256 checks that keep a shipped model to the files it was measured with.

A shipped model records the hashes of its base files and adapters (checked when it is built) and of what its build
wrote (checked at every load). A file that is missing or differs is one `FlexGuardError` that names the file and
the remedy, never a silently different model. The lite scorer and flexguard-smollm2 both check through here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from .errors import FlexGuardError


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_hashes(expected: Iterable[tuple[Path, str | None, str]], error: type[FlexGuardError], model: str) -> None:
    """Check each (file, recorded SHA-256, remedy) in turn; the first that is missing or differs raises.

    Args:
        expected: the files with the hash recorded for each (None: nothing recorded) and what to do if it differs.
        error: the model's integrity error class.
        model: the model's name, for the message.

    Raises:
        FlexGuardError: (`error`) a file is missing, differs, or has no recorded hash.
    """
    for path, recorded, remedy in expected:
        found = sha256(path) if path.is_file() else "missing"
        if recorded is None:
            raise error(f"{path}: {model} records no SHA-256 for it: {remedy}")
        if found != recorded:
            raise error(f"{path} has SHA-256 {found[:16]}…, but {model} was measured with {recorded[:16]}…: {remedy}")


__all__ = ["check_hashes", "sha256"]
