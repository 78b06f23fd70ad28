from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flexguard_plugins import FlexGuard, cli
from flexguard_plugins.backends import Backend
from flexguard_plugins.types import RiskScore
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

TRAIN_STEPS = {"prepare": "flexguard_training.data:main", "sft": "flexguard_training.sft:main",
               "merge": "flexguard_training.merge:main", "grpo": "flexguard_training.grpo:main",
               "lite": "flexguard_training.lite.cli:main", "reproduce": "flexguard_training.reproduce:main"}


def test_train_help_lists_the_steps(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"{step}" in out and target in out for step, target in TRAIN_STEPS.items()), out
    assert cli.main(["train"]) == 2 and cli.main(["train", "bogus"]) == 2
    assert cli.DELEGATED == {"eval": "flexguard_plugins.evaluation.evaluate",
                             "calibrate": "flexguard_plugins.evaluation.calibrate"}


def test_train_steps_come_from_entry_points_not_imports():
    """The core names no outer package: the installed distribution declares the steps (pyproject.toml)."""
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="flexguard.train")}
    assert declared == TRAIN_STEPS
    assert "flexguard_training" not in Path(cli.__file__).read_text(encoding="utf-8")


def test_installed_script_lists_the_train_steps():
    """`flexguard train --help` through the console script that `pip install -e .` wrote."""
    script = Path(sys.executable).parent / "flexguard"
    done = subprocess.run([str(script), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(step in done.stdout for step in TRAIN_STEPS)


def test_a_train_step_whose_extra_is_missing_names_it(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    broken = EntryPoint(name="sft", value="flexguard_no_such_module:main", group="flexguard.train")
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken] if group == "flexguard.train" else [])
    assert cli.main(["train", "sft", "--help"]) == 2
    assert "flexguard-plugins[train]" in capsys.readouterr().err


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


# --- issue 25, item 7 ----------------------------------------------------------------------------------

class NumberBackend(Backend):
    """Scores each prompt as the number it holds, to place a score exactly beside a threshold; `35 VIO SEX=30`
    is a VIO text of 35 with a SEX part at 30."""

    name = "number"

    async def score_batch(self, items):
        out = []
        for item in items:
            score, *codes = item.prompt.split()
            parts = tuple((code, float(value)) for code, _, value in (c.partition("=") for c in codes if "=" in c))
            categories = tuple(c for c in codes if "=" not in c)
            peaks = (*((c, float(score)) for c in categories), *parts) if parts else ()
            out.append(RiskScore.from_score(float(score), categories, scorer="number", peaks=peaks))
        return out


@pytest.fixture
def number_guard(monkeypatch):
    monkeypatch.setattr(FlexGuard, "load", staticmethod(lambda model=None, backend="auto", **options: FlexGuard(
        NumberBackend(), strictness=options.get("strictness", "moderate"), on_error=options.get("on_error", "block"))))


SHOWN = re.compile(r"risk (\S+) \(.*\) (<|≥) threshold (\S+) ")


@pytest.mark.parametrize("score, threshold", [
    ("20.97", "21"), ("40.999", "41"), ("20.95", "21"), ("60.99999", "61"), ("41", "41"), ("40.94", "40.95"),
    ("40.96", "40.95"), ("0.04", "0.05"),
])
def test_summary_shows_a_relation_that_holds(number_guard, capsys, score, threshold):
    status = cli.main(["score", score, "--strictness", threshold])
    out = capsys.readouterr().out
    shown = SHOWN.search(out)
    assert shown, out
    value, relation, limit = float(shown.group(1)), shown.group(2), float(shown.group(3))
    flagged = float(score) >= float(threshold)
    assert status == int(flagged) and relation == ("≥" if flagged else "<"), out
    assert (value >= limit) == flagged, f"the line shown contradicts the verdict: {out}"
    assert out.startswith("FLAGGED" if flagged else "allowed")


def test_summary_of_the_reported_case(number_guard, capsys):
    assert cli.main(["score", "20.97", "--strictness", "21"]) == 0
    assert "allowed by number: risk 20.97 (BENIGN, SAFE) < threshold 21 [21]" in capsys.readouterr().out


def test_summary_of_a_part_flagged_in_its_own_category_keeps_the_core_reason(number_guard, capsys):
    assert cli.main(["score", "35 VIO SEX=30", "--strictness", '{"default": 41, "SEX": 21}']) == 1
    assert capsys.readouterr().out.startswith("FLAGGED by number: a SEX part of the text scored 30.0 ≥ the SEX "
                                              "threshold 21 (riskiest part: 35.0, LOW, VIO)")
    assert cli.main(["score", "35 VIO", "--strictness", '{"default": 41, "VIO": 35}']) == 1
    assert "FLAGGED by number: risk 35.0 (LOW, VIO) ≥ threshold 35 [" in capsys.readouterr().out


def test_response_with_stdin_is_an_error(scripted_guard, monkeypatch, capsys):
    _stdin(monkeypatch, {"prompt": "hello"})
    assert cli.main(["score", "-", "--response", "x"]) == 2
    err = capsys.readouterr()
    assert "--response" in err.err and len(err.err.strip().splitlines()) == 1 and err.out == "", err


@pytest.mark.parametrize("value, status", [("Block", 1), (" ALLOW ", 0), ("Raise", 3)])
def test_on_error_ignores_case_and_white_space_like_the_core(scripted_guard, capsys, value, status):
    assert cli.main(["score", "garbage", "--on-error", value]) == status


def test_unknown_on_error_names_it_and_the_choices(scripted_guard, capsys):
    assert cli.main(["score", "hello", "--on-error", "bloc"]) == 2
    err = capsys.readouterr().err
    assert "'bloc'" in err and all(choice in err for choice in ("block", "allow", "raise")), err


def test_shadow_records_the_verdict_and_never_fails_for_a_flag(scripted_guard, monkeypatch, capsys):
    assert cli.main(["score", "a bomb", "--shadow"]) == 0
    assert capsys.readouterr().out.startswith("SHADOW would flag (not enforced)")
    assert cli.main(["score", "hello", "--shadow"]) == 0
    assert capsys.readouterr().out.startswith("SHADOW would allow (not enforced)")
    assert cli.main(["score", "a bomb", "--shadow", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["shadow"] and record["would_flag"] and not record["flagged"]
    _stdin(monkeypatch, {"prompt": "a bomb"}, {"prompt": "hello"}, {"prompt": "garbage"})
    assert cli.main(["score", "-", "--shadow"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["would_flag"] for r in records] == [True, False, True]  # garbage: undecided, block
    assert not any(r["flagged"] for r in records) and records[2]["failed"]


def test_shadow_with_raise_is_a_one_line_error(scripted_guard, capsys):
    assert cli.main(["score", "hello", "--shadow", "--on-error", "raise"]) == 2
    err = capsys.readouterr().err
    assert "shadow" in err and len(err.strip().splitlines()) == 1, err


def test_eval_of_an_unreachable_hub_id_is_one_line(tmp_path, capsys):
    data = "flexguard-tests/no-such-benchmark"
    for command in (["eval", "--out", str(tmp_path / "run")], ["calibrate", "--out", str(tmp_path / "p.json")]):
        assert cli.main([*command, "--data", data]) == 2
        err = capsys.readouterr().err
        assert data in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_eval_and_calibrate_help_list_the_data_columns(command, capsys):
    from flexguard_plugins.evaluation.flexbench import PROMPT_COLUMNS, RESPONSE_COLUMNS, SEVERITY_COLUMNS

    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for name in (*PROMPT_COLUMNS, *RESPONSE_COLUMNS, *SEVERITY_COLUMNS, "label_strict", "source", "category"):
        assert re.search(rf"\b{name}\b", out), name
    if command == "eval":
        assert "tier MAE (score points)" in out and "metrics.json" in out and "scores.jsonl" in out


def _unknown_flag_runs(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("use_cpu: true\nlearning_rat: 0.1\n")
    out = str(tmp_path / "out")
    return [
        (["score", "hello", "--strictnes", "strict"], "--strictnes"),
        (["eval", "--data", "x.csv", "--out", out, "--limt", "3"], "--limt"),
        (["calibrate", "--data", "x.csv", "--out", out, "--per-categroy"], "--per-categroy"),
        (["train", "prepare", "--output_dir", out, "--sed", "1"], "--sed"),
        (["train", "merge", "--adapter", out, "--output_dir", out, "--dtyp", "float32"], "--dtyp"),
        (["train", "sft", "--use_cpu", "--output_dir", out, "--learning_rat", "0.1"], "--learning_rat"),
        (["train", "grpo", "--use_cpu", "--output_dir", out, "--num_generation", "2"], "--num_generation"),
        (["train", "sft", "--config", str(config), "--output_dir", out], "learning_rat"),
        (["train", "lite", "--bugdet", "1"], "--bugdet"),
    ]


def test_every_unknown_flag_or_config_key_is_an_error_naming_it(tmp_path, capsys):
    """A prefix of a real flag (`--strictnes`) is unknown too: abbreviations would silently pick an option."""
    for argv, name in _unknown_flag_runs(tmp_path):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert name in err and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "out").exists(), argv


def test_the_first_build_of_the_embedded_scorer_is_announced(monkeypatch, capsys):
    """The build logs what it does (INFO on flexguard_plugins.lite); the command line shows it on stderr, and only
    while it runs."""
    import logging

    def load(model=None, backend="auto", **options):
        logging.getLogger("flexguard_plugins.lite.build").info("building the lite model into %s (once)", "/c/lite")
        return FlexGuard(ScriptedBackend())

    monkeypatch.setattr(FlexGuard, "load", staticmethod(load))
    assert cli.main(["score", "hello"]) == 0
    captured = capsys.readouterr()
    assert "flexguard: building the lite model into /c/lite (once)" in captured.err and "building" not in captured.out
    logging.getLogger("flexguard_plugins.lite.build").info("after the command")
    assert "after the command" not in capsys.readouterr().err


# --- issue 25, item 11 ---------------------------------------------------------------------------------

def test_the_set_up_pins_langchain_core_not_the_package():
    """Users elsewhere get any langchain-core >= 1.0; this repository's set-up holds it back with -c."""
    from importlib.metadata import requires

    root = Path(__file__).resolve().parents[1]
    declared = [r for r in requires("flexguard-plugins") or [] if r.startswith("langchain-core")]
    assert declared and not any("<" in r.split(";")[0] for r in declared), declared
    assert "langchain-core<1.7.3" in (root / "constraints.txt").read_text(encoding="utf-8").splitlines()
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    installs = re.findall(r"pip install [^\n]*-e [^\n]*", makefile)
    assert "CONSTRAINTS := -c constraints.txt" in makefile and installs
    assert all("$(CONSTRAINTS)" in line for line in installs), installs
