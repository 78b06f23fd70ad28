"""The Python snippets in each wrapper's README run as printed (in one namespace per README, in order)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_readme(path: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, path
    out = io.StringIO()
    namespace: dict = {"__name__": "readme"}
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return out.getvalue()


def test_langchain_readme(texts) -> None:
    pytest.importorskip("langchain")
    printed = run_readme(ROOT / "langchain" / "README.md").splitlines()
    assert printed[0] == "Mash bananas, add flour, bake." and "flagged by FlexGuard" in printed[3]
    assert printed[4:] == ["False True True", "input True False", "output True False", "Mash bananas, add flour, bake."]


def test_nemo_readme(texts, caplog) -> None:
    pytest.importorskip("nemoguardrails")
    path = ROOT / "nemo_config" / "README.md"
    printed = run_readme(path).splitlines()
    assert "status=<RailStatus.BLOCKED: 'blocked'>" in printed[0] and "flexguard check input" in printed[0]
    assert printed[1:] == ["True prompt 41.0 True", "RailStatus.PASSED", "True"]
    assert any(r.levelname == "WARNING" and "shadow mode" in r.getMessage() for r in caplog.records)


def test_guardrails_readme(texts, guardrails_settings) -> None:
    pytest.importorskip("guardrails")
    printed = run_readme(ROOT / "guardrails_hub" / "README.md").splitlines()
    assert printed[0] == "True" and "flagged" in printed[1]
    assert printed[3:] == ["True", "True True False"]
