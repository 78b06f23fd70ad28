"""Corpus moderation on Ray Data (`flexguard_plugins.corpus`, `flexguard moderate`), on one local 2-CPU Ray.

Actors load the real embedded scorer, except where a test must count backend calls or kill an actor: there a
scripted backend (the failing seam) logs each call to a file, since it runs in another process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flexguard_plugins import FlexGuard, decide
from flexguard_plugins.policy import make_policy, save_policy
from tests.scripted_backend import ScriptedBackend

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

from flexguard_plugins import cli  # noqa: E402
from flexguard_plugins.corpus import GuardBatches, flag_columns, moderate_dataset  # noqa: E402

HARMFUL = "How do I make a pipe bomb to hurt people?"  # the README's shadow-mode example: flagged
HARMLESS = "How do I bake bread?"  # the FlexGuard docstring's example: allowed under strict
FLAGS = ("flagged_strict", "flagged_moderate", "flagged_loose")


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the session; Ray talks to itself over 127.0.0.1 only."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            break
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception for this
            # Ray gives its raylet 30 s to register (fixed in ray/_private/node.py); a busy 2-core box missed it once
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


class LoggedBackend(ScriptedBackend):
    """The scripted backend, appending `pid<TAB>text` per scored item to `log`; with `crash_flag`, the first
    process to create that file dies at its first batch (os._exit: no exception, no cleanup)."""

    def __init__(self, log: str, crash_flag: str | None = None) -> None:
        super().__init__()
        self.log, self.crash_flag = log, crash_flag

    async def score_batch(self, items):
        if self.crash_flag is not None:
            try:
                descriptor = os.open(self.crash_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(descriptor, str(os.getpid()).encode())
                os.close(descriptor)
                os._exit(1)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write("".join(f"{os.getpid()}\t{item.judged_text}\n" for item in items))
        return await super().score_batch(items)


@dataclass(frozen=True)
class LoggedGuard:
    """A picklable guard factory for the actors."""

    log: str
    crash_flag: str | None = None

    def __call__(self) -> FlexGuard:
        return FlexGuard(LoggedBackend(self.log, self.crash_flag))


def _logged(log: Path) -> list[tuple[int, str]]:
    return [(int(pid), text) for pid, text in (line.split("\t") for line in log.read_text().splitlines())]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.json")) for line in path.read_text().splitlines()]


# --- end to end, with the embedded scorer ------------------------------------------------------------------

def test_jsonl_end_to_end_keeps_every_row_and_the_1_percent_that_cannot_be_judged(local_ray, tmp_path, capsys):
    rows = [{"id": i, "prompt": f"{HARMLESS} I have {i} grams of flour."} for i in range(396)]
    rows += [{"id": 396, "prompt": HARMFUL}, {"id": 397, "prompt": None}, {"id": 398}, {"id": 399, "prompt": ""}]
    rows[7] = {"id": 7, "prompt": "flour " * 100}  # 600 characters > max_input_chars=500
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    status = cli.main(["moderate", str(source), str(tmp_path / "out"), "--prompt-column", "prompt",
                       "--option", "max_input_chars=500", "--concurrency", "2", "--num-cpus", "0.5",
                       "--batch-size", "64"])
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 0, summary
    out = {record["id"]: record for record in _records(tmp_path / "out")}
    assert len(_records(tmp_path / "out")) == len(out) == 400 and set(out) == set(range(400))  # none lost or doubled
    undecided = {i for i, record in out.items() if record["error"]}
    assert undecided == {7, 397, 398, 399}
    assert "input too long" in out[7]["error"] and "empty input" in out[399]["error"]
    assert out[397]["error"] == out[398]["error"] == "column 'prompt' is null: nothing to judge"
    assert all(out[i][flag] for i in undecided for flag in FLAGS)  # on_error=block
    assert all(out[i]["score"] is None and out[i]["tier"] is None for i in undecided)
    assert summary == ("flexguard: 400 rows written to " + str(tmp_path / "out") + " (4 undecided); flagged: "
                       + ", ".join(f"{name[8:]} {sum(r[name] for r in out.values())}" for name in FLAGS))
    assert out[396]["flagged_moderate"]
    # the same scores and verdicts as the facade in this process
    judged = [i for i in range(400) if i not in undecided]
    with FlexGuard.load() as guard:
        risks = guard.score_batch([out[i]["prompt"] for i in judged])
    for i, risk in zip(judged, risks, strict=True):
        assert out[i]["score"] == pytest.approx(risk.score, abs=0.01) and out[i]["tier"] == risk.tier.value
        assert out[i]["categories"] == list(risk.categories)
        assert out[i]["flagged_strict"] == decide(risk, "strict").flagged


def test_parquet_response_mode_with_a_policy_file_and_on_error_allow(local_ray, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    policy = save_policy(make_policy({"strict": 30, "moderate": 50}), tmp_path / "policy.json")
    replies = ["Knead the dough, let it rise for an hour, then bake it at 220C for thirty minutes.",
               "I can't help with making weapons or hurting anyone.", "  "]
    table = pa.table({"prompt": [HARMLESS, HARMFUL, HARMLESS], "reply": replies, "id": [0, 1, 2]})
    pq.write_table(table, tmp_path / "in.parquet")
    status = cli.main(["moderate", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--prompt-column", "prompt",
                       "--response-column", "reply", "--strictness", f"team={policy}#strict", "--strictness", "loose",
                       "--on-error", "allow", "--num-cpus", "0.5"])
    assert status == 0
    out = {row["id"]: row for row in pq.read_table(tmp_path / "out").to_pylist()}
    assert set(out) == {0, 1, 2} and {"flagged_team", "flagged_loose"} <= set(out[0])
    assert "empty input" in out[2]["error"] and not out[2]["flagged_team"] and not out[2]["flagged_loose"]
    with FlexGuard.load() as guard:
        risks = guard.score_batch([{"prompt": p, "response": r} for p, r in zip(table["prompt"].to_pylist()[:2],
                                                                                  replies[:2], strict=True)])
    for i, risk in enumerate(risks):
        assert out[i]["score"] == pytest.approx(risk.score, abs=0.01) and out[i]["refusal"] == pytest.approx(
            risk.refusal, abs=0.01)
        assert out[i]["flagged_team"] == decide(risk, f"{policy}#strict").flagged  # threshold 30 from the file
        assert out[i]["flagged_loose"] == decide(risk, "loose").flagged


def test_csv_text_stays_text_and_categories_are_one_cell(local_ray, tmp_path):
    import csv

    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,2024-01-01\n2,2024-02-03\n3,\n")  # a reader left alone would make dates
    assert cli.main(["moderate", str(source), str(tmp_path / "out"), "--prompt-column", "text",
                     "--num-cpus", "0.5"]) == 0
    out = {row["id"]: row for path in (tmp_path / "out").glob("*.csv") for row in csv.DictReader(path.open())}
    assert [out[i]["text"] for i in "123"] == ["2024-01-01", "2024-02-03", ""]
    assert not any("not text" in out[i]["error"] for i in "123") and out["3"]["error"].startswith("empty input")
    assert not any(out[i]["categories"].startswith("[") for i in "123")


# --- Ray's behaviour, through the failing seam -------------------------------------------------------------

def test_repeated_texts_in_a_batch_are_scored_once(local_ray, tmp_path):
    texts = ["hello there", "how to steal a car", "hello there", "a bomb", "how to steal a car"] * 12
    ds = ray.data.from_arrow(pa.table({"n": list(range(60)), "text": texts}))  # one block, one batch of 60
    out = moderate_dataset(ds, prompt_column="text", guard=LoggedGuard(str(tmp_path / "calls.log")),
                           concurrency=1, num_cpus=0.5, batch_size=60).take_all()
    assert sorted(row["n"] for row in out) == list(range(60))
    assert sorted(text for _, text in _logged(tmp_path / "calls.log")) == ["a bomb", "hello there",
                                                                           "how to steal a car"]
    assert {row["text"]: row["score"] for row in out} == {"hello there": 4.0, "how to steal a car": 55.0,
                                                           "a bomb": 92.0}


def test_an_actor_killed_mid_run_is_restarted_and_loses_or_doubles_no_row(local_ray, tmp_path):
    flag, log = tmp_path / "crashed", tmp_path / "calls.log"
    ds = ray.data.from_arrow(pa.table({"n": list(range(200)), "text": [f"hello {i}" for i in range(200)]}))
    out = moderate_dataset(ds, prompt_column="text", guard=LoggedGuard(str(log), str(flag)), concurrency=1,
                           num_cpus=0.5, batch_size=50).take_all()
    assert flag.exists()  # an actor process died before scoring its first batch
    crashed = int(flag.read_text())
    assert sorted(row["n"] for row in out) == list(range(200))
    assert all(row["error"] is None and row["score"] == 4.0 for row in out)
    calls = _logged(log)
    assert sorted(text for _, text in calls) == sorted(f"hello {i}" for i in range(200))  # each scored once
    assert crashed not in {pid for pid, _ in calls}  # by the restarted actor, not the dead one


def test_non_text_cells_are_row_errors_and_a_failing_guard_fails_rows_not_the_batch(local_ray, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"n": [0, 1, 2, 3], "text": ["hello", 5, None, float("nan")]})  # an object column
    out = {row["n"]: row for row in moderate_dataset(ray.data.from_pandas(frame), prompt_column="text",
                                                     num_cpus=0.5).take_all()}
    assert out[0]["error"] is None and out[0]["score"] is not None
    assert out[1]["error"] == "column 'text' holds int, not text: not judged" and out[1]["flagged_loose"]
    assert out[2]["error"] == out[3]["error"] == "column 'text' is null: nothing to judge"
    closed = FlexGuard(ScriptedBackend())
    closed.close()
    judged = GuardBatches("text", guard=lambda: closed)(pa.table({"text": ["hello", "a bomb"]}))
    assert judged["error"].to_pylist() == ["guard failed: this FlexGuard is closed"] * 2
    assert judged["flagged_strict"].to_pylist() == [True, True]


# --- checked before Ray runs --------------------------------------------------------------------------------

def test_flag_columns_names_and_refusals(tmp_path):
    assert list(flag_columns(["strict", 30, 30.5, ("kids", {"default": "loose", "SEX": 25})])) == [
        "flagged_strict", "flagged_30", "flagged_30_5", "flagged_kids"]
    with pytest.raises(ValueError, match="two make the column 'flagged_strict'"):
        flag_columns(["strict", " Strict"])
    with pytest.raises(ValueError, match="unknown strictness"):
        flag_columns(["medium"])
    with pytest.raises(ValueError, match="on_error='raise'"):
        GuardBatches("text", on_error="raise", guard=lambda: FlexGuard(ScriptedBackend()))
    with pytest.raises(ValueError, match="already has score"):
        GuardBatches("text", guard=lambda: FlexGuard(ScriptedBackend()))(pa.table({"text": ["a"], "score": [1]}))


@pytest.mark.parametrize("argv, message", [
    (["--option", "strictnes=strict"], "unknown option 'strictnes'; facade options: strictness"),
    (["--prompt-column", "promt"], "no column 'promt'; the data has id, prompt"),
    (["--strictness", "medium"], "unknown strictness 'medium'"),
    (["--concurrency", "0"], "expected N or MIN,MAX"),
])
def test_bad_usage_is_one_line_with_status_2_before_ray_runs(tmp_path, capsys, argv, message):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": HARMLESS}) + "\n")
    args = ["moderate", str(source), str(tmp_path / "out"), "--prompt-column", "prompt", *argv]
    was_running = ray.is_initialized()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and ray.is_initialized() == was_running


def test_unknown_format_and_missing_input_are_named(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("hello\n")
    assert cli.main(["moderate", str(tmp_path / "in.txt"), str(tmp_path / "out"), "--prompt-column", "p"]) == 2
    assert "no data file; expected one of .parquet" in capsys.readouterr().err
    assert cli.main(["moderate", str(tmp_path / "nope.jsonl"), str(tmp_path / "out"), "--prompt-column", "p"]) == 2
    assert "nope.jsonl: no such file or folder" in capsys.readouterr().err


def test_without_ray_the_command_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "flexguard_plugins.corpus_files", raising=False)
    assert cli.main(["moderate", "in.jsonl", "out", "--prompt-column", "prompt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flexguard: moderate needs the ray extra: pip install 'flexguard-plugins[ray]'")
    assert len(err.splitlines()) == 1


# --- an LLM backend in the actors: the tiny guard taught FlexGuard's format (tests/fixtures_vllm.py) ---------

def _check_trained_rows(rows: list[dict]) -> None:
    """What the tiny guard says for its own training items (`assert_trained_answers`), read from output rows."""
    from tests.fixtures_vllm import HARMFUL_WORD, guard_examples

    examples = guard_examples()
    assert sorted(row["n"] for row in rows) == list(range(len(examples)))
    for row in rows:
        item, category, _ = examples[row["n"]]
        assert row["error"] is None, row
        if category == "SAFE":
            assert row["categories"] == [] and abs(row["score"] - 3) < 1 and not row["flagged_strict"]
        elif HARMFUL_WORD in item.judged_text:
            assert row["categories"] == ["VIO"] and abs(row["score"] - 85) < 1 and row["flagged_loose"]
        else:
            assert 41.5 < row["score"] < 46.5 and row["flagged_moderate"] and not row["flagged_loose"]


def _training_items() -> Any:
    from tests.fixtures_vllm import guard_examples

    items = [item for item, _, _ in guard_examples()]
    return ray.data.from_arrow(pa.table({"n": list(range(len(items))), "prompt": [i.prompt for i in items],
                                         "response": [i.response for i in items]}))


def test_the_transformers_backend_in_an_actor(local_ray, tiny_guard_dir, guard_rubric):
    out = moderate_dataset(_training_items(), prompt_column="prompt", response_column="response",
                           model=str(tiny_guard_dir), backend="transformers", system_prompt_path=str(guard_rubric),
                           reasoning=False, dtype="float32", concurrency=1, num_cpus=1).take_all()
    _check_trained_rows(out)


@pytest.mark.slow
@pytest.mark.vllm
def test_the_vllm_backend_in_an_actor(local_ray, tiny_guard_dir, guard_rubric):
    pytest.importorskip("vllm")
    out = moderate_dataset(_training_items(), prompt_column="prompt", response_column="response",
                           model=str(tiny_guard_dir), backend="vllm", system_prompt_path=str(guard_rubric),
                           reasoning=False, dtype="float32", max_model_len=2048, concurrency=1, num_cpus=1).take_all()
    _check_trained_rows(out)
