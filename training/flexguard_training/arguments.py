"""Command-line parsing shared by `flexguard train prepare|sft|merge|grpo`: TRL's parser (flags plus a
`--config` YAML), strict about names.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Args:
    ...     seed: int = 42
    >>> parse_arguments(make_parser((Args,), "demo"), ["--seed", "7"])
    (Args(seed=7),)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def make_parser(dataclass_types: Sequence[type], prog: str | None = None) -> Any:
    """A `TrlParser` over `dataclass_types` that takes no abbreviations: a misspelt prefix such as
    `--learning_rat` must be an error, not silently `--learning_rate`."""
    from trl import TrlParser

    return TrlParser(tuple(dataclass_types), prog=prog, allow_abbrev=False)


def parse_arguments(parser: Any, argv: Sequence[str] | None) -> tuple[Any, ...]:
    """`parser.parse_args_and_config(argv)`; an unknown flag or config key, or a value the training
    arguments reject (TRL and transformers raise ValueError), is a usage error naming it (exit status 2).

    Raises:
        SystemExit: 2 after printing the usage and the one-line error (argparse's `error`).
    """
    try:
        return parser.parse_args_and_config(None if argv is None else list(argv))
    except ValueError as error:
        lines = str(error).strip().splitlines()
        parser.error(lines[0] if lines else type(error).__name__)
        raise  # unreachable: `error` exits
