"""`flexguard` command line: score here; eval and calibrate in the core's evaluation package, moderate (Ray Data)
in `corpus_files`; train steps are found through the `flexguard.train` entry points, so the core imports no
training code."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .policy import Thresholds, check_on_error, check_shadow, resolve_strictness
from .types import Decision

DELEGATED = {
    "eval": "flexguard_plugins.evaluation.evaluate",
    "calibrate": "flexguard_plugins.evaluation.calibrate",
}
MODERATE = "flexguard_plugins.corpus_files"
"""`flexguard moderate`'s `main(argv)`: Ray Data, the ray extra (imported only when the command runs)."""
DELEGATED_EXTRA = {"eval": "eval", "calibrate": "eval", "moderate": "ray"}
TRAIN_GROUP = "flexguard.train"
"""Entry-point group naming each `flexguard train STEP`'s `main(argv)` (declared in pyproject.toml)."""
STDIN_BATCH = 64
SHOWN_LOGGERS = ("flexguard_plugins.lite",)
"""Loggers whose INFO records a person at the terminal needs: the embedded scorer's one-off build (seconds)."""
SHADOW_PREFIX = "shadow, not enforced: "
"""How the core's reason starts in shadow mode; the summary's head already says it."""

EXIT_CODES = """\
exit status:
  0  every item allowed
  1  at least one item flagged (blocked; with --on-error block this includes undecided items)
  2  bad usage or input: unknown option or strictness, missing policy file, model that cannot be
     loaded, or (with '-') at least one line that is not a JSON object with a string 'prompt'
  3  at least one item undecided under --on-error raise
With '-', one record is written per non-blank input line, in order, whatever happens to the others
(an unreadable or undecided line gets an 'error' record), and the status is the highest-priority
one that applies: 2, then 3, then 1, then 0. Blank lines are skipped.
With --shadow nothing is enforced: the verdict is recorded ('would_flag') and a flag never makes the
status 1 (bad input is still 2).
"""


class _Failure(Exception):
    """A one-line error for the user; exit status 2."""


def _on_error(value: str) -> str:
    """`--on-error` read as the core reads it (case and surrounding white space ignored)."""
    try:
        return check_on_error(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _train_steps() -> dict[str, EntryPoint]:
    return {step.name: step for step in entry_points(group=TRAIN_GROUP)}


def _parser(steps: dict[str, EntryPoint]) -> argparse.ArgumentParser:
    # No abbreviations: a misspelt prefix (`--strict`) must be an error, not silently another option.
    parser = argparse.ArgumentParser(prog="flexguard", description="FlexGuard risk-score moderation.",
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score text, or JSONL from stdin with '-'", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    score.add_argument("text", help="the user prompt to judge, or '-' to read JSONL {prompt, response} from stdin")
    score.add_argument("--response", help="the assistant reply to judge (response mode; not with '-', where each "
                                          "line carries its own)")
    score.add_argument("--model", help="hub id or local folder (default: the embedded CPU scorer)")
    score.add_argument("--backend", default="auto", help="auto | transformers | vllm | openai | lite")
    score.add_argument("--base-url", action="append", help="OpenAI-compatible server URL (repeatable)")
    score.add_argument("--strictness", default="moderate",
                       help="strict | moderate | loose | a number 0-100 | JSON mapping | policy.json[#regime]")
    score.add_argument("--on-error", default="block", type=_on_error, metavar="{block,allow,raise}",
                       help="what an undecided item (empty, too long, unscorable) gets (default: block)")
    score.add_argument("--shadow", action="store_true",
                       help="record the verdict (would_flag) without enforcing it: a flag never exits 1")
    score.add_argument("--reasoning", action=argparse.BooleanOptionalAction, default=None,
                       help="let the model think before answering (LLM backends; default: the backend's)")
    score.add_argument("--json", action="store_true", help="print JSON instead of a one-line summary")
    for name, module in DELEGATED.items():
        commands.add_parser(name, help=f"see `flexguard {name} --help` ({module})", add_help=False)
    commands.add_parser("moderate", help="moderate a Parquet, JSONL or CSV corpus on Ray Data (see `flexguard "
                        "moderate --help`; the ray extra)", add_help=False)
    listed = "\n".join(f"  {name:8s} {step.value}" for name, step in sorted(steps.items()))
    train = commands.add_parser(
        "train", help=f"{' | '.join(sorted(steps)) or 'no steps installed'} (see `flexguard train STEP --help`)",
        description=f"Training steps (each has its own --help):\n{listed}" if steps else
        "No training steps are installed: pip install 'flexguard-plugins[train]'",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    train.add_argument("step", choices=sorted(steps), help="the training step to run")
    return parser


def _delegate(command: str, load: Callable[[], Callable[[list[str]], int | None]], argv: list[str]) -> int:
    """Run another command's `main(argv)`; its usage errors and --help end in SystemExit, read here as a status."""
    try:
        target = load()
    except ImportError as error:
        extra = DELEGATED_EXTRA.get(command, "train")
        print(f"flexguard: {command} needs the {extra} extra: pip install 'flexguard-plugins[{extra}]' ({error})",
              file=sys.stderr)
        return 2
    try:
        return int(target(argv) or 0)
    except SystemExit as exit_:
        return _status(exit_)


def _status(exit_: SystemExit) -> int:
    """argparse exits 0 after --help and 2 after a usage error it has printed."""
    if exit_.code is None:
        return 0
    return exit_.code if isinstance(exit_.code, int) else 2


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _load_guard(args: argparse.Namespace) -> tuple[Any, Thresholds]:
    """The guard and the strictness resolved once; bad options fail before any model is loaded."""
    from . import FlexGuard

    if args.text == "-" and args.response is not None:
        raise _Failure("--response cannot be used with '-': each JSONL line carries its own 'response'")
    try:
        thresholds = resolve_strictness(args.strictness)
        check_shadow(args.shadow, args.on_error)
    except (ValueError, TypeError) as error:
        raise _Failure(_first_line(error)) from None
    options: dict[str, Any] = {"strictness": args.strictness, "on_error": args.on_error}
    if args.base_url:
        options["base_url"] = args.base_url if len(args.base_url) > 1 else args.base_url[0]
    if args.reasoning is not None:
        options["reasoning"] = args.reasoning
    try:
        return FlexGuard.load(args.model, args.backend, **options), thresholds
    except Exception as error:  # noqa: BLE001 - the command line shows one line, not a traceback
        what = f"model {args.model!r}" if args.model else "the embedded scorer"
        raise _Failure(f"cannot load {what} ({args.backend} backend): {_first_line(error)}") from None


def _result(decision: Any) -> dict[str, Any]:
    return {**decision.to_dict(), "reasoning": decision.risk.reasoning}


def _summary(decision: Decision) -> str:
    """`FLAGGED by lite: risk 92.0 (EXTREME, VIO) ≥ threshold 41 [moderate]`, `allowed by …`, or in shadow
    mode `SHADOW would flag (not enforced) by …`: the core's reason, whose score and relation always agree."""
    verdict = "FLAGGED" if decision.would_flag else "allowed"
    if decision.shadow:
        verdict = f"SHADOW would {'flag' if decision.would_flag else 'allow'} (not enforced)"
    reason = decision.reason.removeprefix(SHADOW_PREFIX)
    if decision.failed:
        return f"{verdict} {reason}"
    return verdict + re.sub(r"^(flagged|allowed)", "", reason)


def _lines(stream: Any) -> Iterator[str | UnicodeDecodeError]:
    """The stream's lines, decoded one by one as UTF-8 (JSON's encoding) when it has bytes underneath, so a
    line that is not UTF-8 is an error for that line only, not the end of the run."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        yield from stream
        return
    for line in raw:
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield error


def _read_jsonl(stream: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, item) or (line number, error text); blank lines are skipped."""
    for number, line in enumerate(_lines(stream), start=1):
        if isinstance(line, UnicodeDecodeError):
            yield number, f"line {number}: not UTF-8 text ({line.reason} at byte {line.start})"
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line.lstrip("\ufeff") if number == 1 else line)
            if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
                raise ValueError("expected an object with a string 'prompt'")
            response = value.get("response")
            if response is not None and not isinstance(response, str):
                raise ValueError("'response' must be a string or null")
            yield number, {"prompt": value["prompt"], "response": response}
        except (json.JSONDecodeError, ValueError) as error:
            yield number, f"line {number}: {error}"


def _score_stdin(guard: Any, thresholds: Thresholds, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import FlexGuardError
    from .policy import decide

    counts = {"bad": 0, "undecided": 0, "flagged": 0}
    pending: list[tuple[int, dict[str, Any] | str]] = []
    with tqdm(desc="scoring", unit="item", file=sys.stderr, disable=None) as progress:
        def flush() -> None:
            items = [item for _, item in pending if isinstance(item, dict)]
            risks = iter(guard.score_batch(items, thresholds) if items else [])
            for number, item in pending:
                if isinstance(item, str):
                    record: dict[str, Any] = {"line": number, "error": item}
                    counts["bad"] += 1
                else:
                    try:
                        decision = decide(next(risks), thresholds, args.on_error, shadow=args.shadow)
                    except FlexGuardError as error:  # on_error=raise: this line only
                        record = {"line": number, "error": str(error), "undecided": True}
                        counts["undecided"] += 1
                    else:
                        record = {"line": number, **_result(decision)}
                        counts["flagged"] += decision.flagged
                sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
            progress.update(len(pending))
            pending.clear()

        for number, item in _read_jsonl(sys.stdin):
            pending.append((number, item))
            if len(pending) >= STDIN_BATCH:
                flush()
        flush()
    if counts["bad"]:
        print(f"flexguard: {counts['bad']} input line(s) could not be read; see their 'error' records",
              file=sys.stderr)
        return 2
    if counts["undecided"]:
        print(f"flexguard: {counts['undecided']} item(s) undecided (on_error=raise); see their 'error' records",
              file=sys.stderr)
        return 3
    return 1 if counts["flagged"] else 0


def _score(args: argparse.Namespace) -> int:
    from .errors import FlexGuardError

    guard, thresholds = _load_guard(args)
    try:
        if args.text == "-":
            return _score_stdin(guard, thresholds, args)
        decision = guard.check(args.text, args.response, strictness=thresholds, on_error=args.on_error,
                               shadow=args.shadow)
    except FlexGuardError as error:
        print(f"flexguard: {error}", file=sys.stderr)
        return 3
    finally:
        guard.close()  # releases this handle only
    if args.json:
        print(json.dumps(_result(decision), indent=2))
    else:
        print(_summary(decision))
    return 1 if decision.flagged else 0


def _quiet_stdout() -> None:
    """After a closed pipe (`flexguard score - | head`): send what is left to /dev/null, no traceback at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (io.UnsupportedOperation is both)
        pass


class _StderrHandler(logging.Handler):
    """`flexguard: message` on the stderr of the moment (tests and pipes swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"flexguard: {self.format(record)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status for `score`: see `EXIT_CODES` (0 allowed, 1 flagged, 2 bad input, 3 undecided under raise)."""
    handler = _StderrHandler(logging.INFO)
    loggers = [logging.getLogger(name) for name in SHOWN_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in (*DELEGATED, "moderate"):
        module = DELEGATED.get(argv[0], MODERATE)
        return _delegate(argv[0], lambda: importlib.import_module(module).main, argv[1:])
    steps = _train_steps()
    if len(argv) > 1 and argv[0] == "train" and argv[1] in steps:
        return _delegate("train", steps[argv[1]].load, argv[2:])
    try:
        args = _parser(steps).parse_args(argv)
        if args.command != "score":  # train STEP, eval and calibrate were delegated above
            return 2
        return _score(args)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return _status(exit_)
    except _Failure as error:
        print(f"flexguard: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:
        print(f"flexguard: {_first_line(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 0


if __name__ == "__main__":
    sys.exit(main())
