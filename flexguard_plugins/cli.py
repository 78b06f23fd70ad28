"""`flexguard` command line: score here; eval, calibrate and train live in the training package."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

DELEGATED = {
    "eval": "flexguard_training.evaluate",
    "calibrate": "flexguard_training.calibrate",
}
TRAIN_COMMANDS = {
    "prepare": "flexguard_training.data",
    "sft": "flexguard_training.sft",
    "merge": "flexguard_training.merge",
    "grpo": "flexguard_training.grpo",
    "lite": "flexguard_training.lite_train",
}
STDIN_BATCH = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexguard", description="FlexGuard risk-score moderation.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score text, or JSONL from stdin with '-'")
    score.add_argument("text", help="the user prompt to judge, or '-' to read JSONL {prompt, response} from stdin")
    score.add_argument("--response", help="the assistant reply to judge (response mode)")
    score.add_argument("--model", help="hub id or local folder (default: the embedded CPU scorer)")
    score.add_argument("--backend", default="auto", help="auto | transformers | vllm | openai | lite")
    score.add_argument("--base-url", action="append", help="OpenAI-compatible server URL (repeatable)")
    score.add_argument("--strictness", default="moderate",
                       help="strict | moderate | loose | a number 0-100 | JSON mapping | policy.json[#regime]")
    score.add_argument("--on-error", default="block", choices=["block", "allow", "raise"])
    score.add_argument("--reasoning", action=argparse.BooleanOptionalAction, default=None,
                       help="let the model think before answering (LLM backends; default: the backend's)")
    score.add_argument("--json", action="store_true", help="print JSON instead of a one-line summary")
    for name, module in DELEGATED.items():
        commands.add_parser(name, help=f"see `flexguard {name} --help` ({module})", add_help=False)
    train = commands.add_parser("train", help="prepare | sft | merge | grpo | lite (see `flexguard train X --help`)",
                                add_help=False)
    train.add_argument("step", nargs="?", choices=sorted(TRAIN_COMMANDS))
    return parser


def _delegate(module: str, argv: list[str]) -> int:
    try:
        target = importlib.import_module(module)
    except ImportError as error:
        print(f"flexguard: {module} needs the training extra: pip install 'flexguard-plugins[train]' ({error})",
              file=sys.stderr)
        return 2
    return int(target.main(argv) or 0)


def _load_guard(args: argparse.Namespace) -> Any:
    from . import FlexGuard

    options: dict[str, Any] = {"strictness": args.strictness, "on_error": args.on_error}
    if args.base_url:
        options["base_url"] = args.base_url if len(args.base_url) > 1 else args.base_url[0]
    if args.reasoning is not None:
        options["reasoning"] = args.reasoning
    return FlexGuard.load(args.model, args.backend, **options)


def _result(decision: Any) -> dict[str, Any]:
    return {**decision.to_dict(), "reasoning": decision.risk.reasoning}


def _read_jsonl(stream: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, item) or (line number, error text); blank lines are skipped."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
                raise ValueError("expected an object with a string 'prompt'")
            yield number, {"prompt": value["prompt"], "response": value.get("response")}
        except (json.JSONDecodeError, ValueError) as error:
            yield number, f"line {number}: {error}"


def _score_stdin(guard: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bad_lines = 0
    pending: list[tuple[int, dict[str, Any] | str]] = []
    with tqdm(desc="scoring", unit="item", file=sys.stderr, disable=None) as progress:
        def flush() -> None:
            items = [item for _, item in pending if isinstance(item, dict)]
            decisions = iter(guard.check_batch(items, args.strictness, args.on_error) if items else [])
            for number, item in pending:
                if isinstance(item, str):
                    record = {"line": number, "error": item}
                else:
                    record = {"line": number, **_result(next(decisions))}
                sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
            progress.update(len(pending))
            pending.clear()

        for number, item in _read_jsonl(sys.stdin):
            bad_lines += isinstance(item, str)
            pending.append((number, item))
            if len(pending) >= STDIN_BATCH:
                flush()
        flush()
    if bad_lines:
        print(f"flexguard: {bad_lines} input line(s) could not be read; see their 'error' records", file=sys.stderr)
    return 2 if bad_lines else 0


def _score(args: argparse.Namespace) -> int:
    from .types import FlexGuardError

    guard = _load_guard(args)
    try:
        if args.text == "-":
            return _score_stdin(guard, args)
        decision = guard.check(args.text, args.response, args.strictness, args.on_error)
    except FlexGuardError as error:
        print(f"flexguard: {error}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(_result(decision), indent=2))
    else:
        print(("FLAGGED " if decision.flagged else "allowed ") + decision.reason)
    return 1 if decision.flagged else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status for `score`: 0 allowed, 1 flagged, 2 bad input, 3 undecided under on_error=raise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(DELEGATED[argv[0]], argv[1:])
    if argv and argv[0] == "train" and len(argv) > 1 and argv[1] in TRAIN_COMMANDS:
        return _delegate(TRAIN_COMMANDS[argv[1]], argv[2:])
    args = _parser().parse_args(argv)
    if args.command == "score":
        try:
            return _score(args)
        except (ValueError, TypeError) as error:
            print(f"flexguard: {error}", file=sys.stderr)
            return 2
    _parser().parse_args([args.command, "--help"] if args.command != "train" else ["train", "-h"])
    return 2


if __name__ == "__main__":
    sys.exit(main())
