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


# --- issue 10, item 12 ---------------------------------------------------------------------------------

def test_train_help_lists_the_steps(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(step in out for step in ("prepare", "sft", "merge", "grpo", "lite"))
    assert cli.main(["train"]) == 2 and cli.main(["train", "bogus"]) == 2
    assert cli.TRAIN_COMMANDS["lite"] == "flexguard_training.lite.cli"
    assert cli.DELEGATED == {"eval": "flexguard_plugins.evaluation.evaluate",
                             "calibrate": "flexguard_plugins.evaluation.calibrate"}


def test_missing_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATED, "eval", "flexguard_plugins.no_such_module")
    assert cli.main(["eval", "--help"]) == 2
    assert "flexguard-plugins[eval]" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--strictness", "missing.json"], "not found"),
    (["--strictness", "150"], "out of range 0-100"),
    (["--strictness", "medium"], "unknown strictness"),
    (["--model", "/nonexistent/model", "--backend", "transformers"], "cannot load model '/nonexistent/model'"),
])
def test_bad_options_are_one_line_errors_with_status_2(argv, message, capsys):
    assert cli.main(["score", "hello", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_one_line_summary_says_the_verdict_once(scripted_guard, capsys):
    cli.main(["score", "hello there"])
    out = capsys.readouterr().out.strip()
    assert out.startswith("allowed by scripted: risk 4.0") and "allowed allowed" not in out
    cli.main(["score", "bomb"])
    assert capsys.readouterr().out.startswith("FLAGGED by scripted: risk 92.0")
    cli.main(["score", "\u200b"])
    assert capsys.readouterr().out.startswith("FLAGGED guard could not decide (scripted): empty input")


def _stdin(monkeypatch, *records):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)))


def test_stdin_exit_status_rule(scripted_guard, monkeypatch, capsys):
    _stdin(monkeypatch, {"prompt": "hello"}, {"prompt": "nice"})
    assert cli.main(["score", "-"]) == 0
    _stdin(monkeypatch, {"prompt": "hello"}, {"prompt": "a bomb"})
    assert cli.main(["score", "-"]) == 1
    _stdin(monkeypatch, {"prompt": "a bomb"}, {"prompt": "garbage"})
    assert cli.main(["score", "-", "--on-error", "raise"]) == 3
    _stdin(monkeypatch, {"prompt": "a bomb"}, {"prompt": "garbage"}, "{oops")
    assert cli.main(["score", "-", "--on-error", "raise"]) == 2
    assert "Exit status" in cli.EXIT_CODES or "exit status" in cli.EXIT_CODES


def test_an_undecided_line_under_raise_keeps_every_other_record(scripted_guard, monkeypatch, capsys):
    _stdin(monkeypatch, {"prompt": "a bomb"}, "", {"prompt": ""}, {"prompt": "hello"}, {"prompt": "\u200b"},
           {"prompt": "steal"})
    assert cli.main(["score", "-", "--on-error", "raise"]) == 3
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in out] == [1, 3, 4, 5, 6]  # the empty line 2 is skipped
    assert out[0]["flagged"] and out[2]["flagged"] is False and out[4]["score"] == 55
    assert out[1]["undecided"] and "empty input" in out[1]["error"] and out[3]["undecided"]


def test_stdin_line_with_a_lone_surrogate_does_not_fail_its_batch(lite_guard, monkeypatch, capsys):
    """The real embedded scorer; `json.loads` turns the escaped surrogate into a lone one."""
    lines = ['{"prompt": "hi \\ud800"}'] + [json.dumps({"prompt": f"What is {i} plus {i}?"}) for i in range(5)]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert cli.main(["score", "-", "--on-error", "allow", "--strictness", "100"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 6 and not any(r["failed"] for r in out), out
    assert not lite_guard.closed, "the command released its own handle only"


def test_piping_into_head_exits_quietly(tmp_path):
    import subprocess
    import sys

    driver = (
        "import sys\n"
        "from flexguard_plugins import FlexGuard, cli\n"
        "from tests.scripted_backend import ScriptedBackend\n"
        "FlexGuard.load = staticmethod(lambda *a, **k: FlexGuard(ScriptedBackend()))\n"
        "sys.exit(cli.main(['score', '-']))\n"
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"item {i}"}) + "\n" for i in range(5000)))
    with source.open() as stdin, (tmp_path / "err.txt").open("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-c", driver], stdin=stdin, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
        first = process.stdout.readline()
        process.stdout.close()  # what `head -1` does
        try:
            status = process.wait(timeout=60)
        finally:
            process.kill()
        stderr.seek(0)
        err = stderr.read()
    assert status == 0
    assert json.loads(first)["line"] == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
