"""`flexguard` command line: score here; eval and calibrate in the core's evaluation package; train in training."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

DELEGATED = {
    "eval": "flexguard_plugins.evaluation.evaluate",
    "calibrate": "flexguard_plugins.evaluation.calibrate",
}
DELEGATED_EXTRA = {"eval": "eval", "calibrate": "eval"}
TRAIN_COMMANDS = {
    "prepare": "flexguard_training.data",
    "sft": "flexguard_training.sft",
    "merge": "flexguard_training.merge",
    "grpo": "flexguard_training.grpo",
    "lite": "flexguard_training.lite.cli",
}
STDIN_BATCH = 64

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
"""


class _Failure(Exception):
    """A one-line error for the user; exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexguard", description="FlexGuard risk-score moderation.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score text, or JSONL from stdin with '-'", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("text", help="the user prompt to judge, or '-' to read JSONL {prompt, response} from stdin")
    score.add_argument("--response", help="the assistant reply to judge (response mode)")
    score.add_argument("--model", help="hub id or local folder (default: the embedded CPU scorer)")
    score.add_argument("--backend", default="auto", help="auto | transformers | vllm | openai | lite")
    score.add_argument("--base-url", action="append", help="OpenAI-compatible server URL (repeatable)")
    score.add_argument("--strictness", default="moderate",
                       help="strict | moderate | loose | a number 0-100 | JSON mapping | policy.json[#regime]")
    score.add_argument("--on-error", default="block", choices=["block", "allow", "raise"],
                       help="what an undecided item (empty, too long, unscorable) gets (default: block)")
    score.add_argument("--reasoning", action=argparse.BooleanOptionalAction, default=None,
                       help="let the model think before answering (LLM backends; default: the backend's)")
    score.add_argument("--json", action="store_true", help="print JSON instead of a one-line summary")
    for name, module in DELEGATED.items():
        commands.add_parser(name, help=f"see `flexguard {name} --help` ({module})", add_help=False)
    steps = "\n".join(f"  {step:8s} {module}" for step, module in sorted(TRAIN_COMMANDS.items()))
    train = commands.add_parser(
        "train", help="prepare | sft | merge | grpo | lite (see `flexguard train STEP --help`)",
        description=f"Training steps (each has its own --help):\n{steps}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("step", choices=sorted(TRAIN_COMMANDS), help="the training step to run")
    return parser


def _delegate(command: str, module: str, argv: list[str]) -> int:
    try:
        target = importlib.import_module(module)
    except ImportError as error:
        extra = DELEGATED_EXTRA.get(command, "train")
        print(f"flexguard: {command} needs the {extra} extra: pip install 'flexguard-plugins[{extra}]' ({error})",
              file=sys.stderr)
        return 2
    return int(target.main(argv) or 0)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _load_guard(args: argparse.Namespace) -> Any:
    from . import FlexGuard, resolve_strictness

    try:
        resolve_strictness(args.strictness)
    except (ValueError, TypeError) as error:
        raise _Failure(_first_line(error)) from None
    options: dict[str, Any] = {"strictness": args.strictness, "on_error": args.on_error}
    if args.base_url:
        options["base_url"] = args.base_url if len(args.base_url) > 1 else args.base_url[0]
    if args.reasoning is not None:
        options["reasoning"] = args.reasoning
    try:
        return FlexGuard.load(args.model, args.backend, **options)
    except Exception as error:  # noqa: BLE001 - the command line shows one line, not a traceback
        what = f"model {args.model!r}" if args.model else "the embedded scorer"
        raise _Failure(f"cannot load {what} ({args.backend} backend): {_first_line(error)}") from None


def _result(decision: Any) -> dict[str, Any]:
    return {**decision.to_dict(), "reasoning": decision.risk.reasoning}


def _summary(decision: Any) -> str:
    """`FLAGGED by lite: risk 92.0 …` / `allowed by lite: …`; an undecided one keeps its full reason."""
    if decision.failed:
        return ("FLAGGED " if decision.flagged else "allowed ") + decision.reason
    return ("FLAGGED" if decision.flagged else "allowed") + re.sub(r"^(flagged|allowed)", "", decision.reason)


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


def _score_stdin(guard: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import FlexGuardError
    from .policy import decide

    counts = {"bad": 0, "undecided": 0, "flagged": 0}
    pending: list[tuple[int, dict[str, Any] | str]] = []
    with tqdm(desc="scoring", unit="item", file=sys.stderr, disable=None) as progress:
        def flush() -> None:
            items = [item for _, item in pending if isinstance(item, dict)]
            risks = iter(guard.score_batch(items, args.strictness) if items else [])
            for number, item in pending:
                if isinstance(item, str):
                    record: dict[str, Any] = {"line": number, "error": item}
                    counts["bad"] += 1
                else:
                    try:
                        decision = decide(next(risks), args.strictness, args.on_error)
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

    guard = _load_guard(args)
    try:
        if args.text == "-":
            return _score_stdin(guard, args)
        decision = guard.check(args.text, args.response, args.strictness, args.on_error)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status for `score`: see `EXIT_CODES` (0 allowed, 1 flagged, 2 bad input, 3 undecided under raise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], DELEGATED[argv[0]], argv[1:])
    if len(argv) > 1 and argv[0] == "train" and argv[1] in TRAIN_COMMANDS:
        return _delegate("train", TRAIN_COMMANDS[argv[1]], argv[2:])
    try:
        args = _parser().parse_args(argv)
        if args.command != "score":  # train STEP, eval and calibrate were delegated above
            return 2
        return _score(args)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else 2
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
