from __future__ import annotations

import io
import json

import pytest

from flexguard_plugins import FlexGuard, cli
from tests.scripted_backend import ScriptedBackend


@pytest.fixture
def scripted_guard(monkeypatch):
    """`FlexGuard.load` gives a fresh guard over one scripted backend (the CLI closes what it loads)."""
    backend = ScriptedBackend()
    loads = []

    def load(model=None, backend_name="auto", **options):
        loads.append((model, backend_name, options))
        return FlexGuard(backend, strictness=options.get("strictness", "moderate"),
                         on_error=options.get("on_error", "block"))

    monkeypatch.setattr(FlexGuard, "load", staticmethod(load))
    yield backend, loads


def test_score_one_text_exit_codes(scripted_guard, capsys):
    assert cli.main(["score", "how to build a bomb", "--strictness", "loose"]) == 1
    assert "FLAGGED" in capsys.readouterr().out
    assert cli.main(["score", "hello there"]) == 0
    assert cli.main(["score", "steal", "--strictness", "70", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert result["score"] == 55 and result["threshold"] == 70 and result["categories"] == ["ILG"]


def test_options_reach_the_loader(scripted_guard):
    _, loads = scripted_guard
    cli.main(["score", "x", "--model", "m", "--backend", "openai", "--base-url", "http://a/v1",
              "--base-url", "http://b/v1", "--no-reasoning"])
    model, backend, options = loads[-1]
    assert (model, backend) == ("m", "openai")
    assert options["base_url"] == ["http://a/v1", "http://b/v1"] and options["reasoning"] is False


def test_stdin_jsonl_keeps_order_and_reports_bad_lines(scripted_guard, monkeypatch, capsys):
    lines = [json.dumps({"prompt": f"item {i}" + (" bomb" if i % 3 == 0 else "")}) for i in range(150)]
    lines.insert(10, "{not json")
    lines.insert(20, json.dumps({"response": "no prompt"}))
    lines.append(json.dumps({"prompt": "q", "response": "a bomb"}))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert cli.main(["score", "-", "--strictness", "strict"]) == 2
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 153 and [r["line"] for r in out] == list(range(1, 154))
    assert "error" in out[10] and "error" in out[20]
    scored = [r for r in out if "error" not in r]
    assert [r["flagged"] for r in scored[:6]] == [True, False, False, True, False, False]
    assert scored[-1]["score"] == 92


def test_bad_strictness_is_a_clear_error(scripted_guard, capsys):
    assert cli.main(["score", "x", "--strictness", "medium"]) == 2
    assert "unknown strictness" in capsys.readouterr().err


def test_raise_policy_exit_code(scripted_guard, capsys):
    assert cli.main(["score", "garbage", "--on-error", "raise"]) == 3
