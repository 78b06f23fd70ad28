"""`flexguard moderate IN OUT`: Parquet, JSONL or CSV in (by extension), the same format out, on Ray Data.

The rows go through `corpus.moderate_dataset`; this module reads, writes, counts and parses the command line.
It imports Ray at the top, so `flexguard moderate` without the `[ray]` extra is a one-line error naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray
import ray.data

from .corpus import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STRICTNESS,
    StrictnessList,
    check_columns,
    flag_columns,
    guard_factory,
    moderate_dataset,
)

FORMATS: Mapping[str, str] = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json",
                              ".ndjson": "json", ".csv": "csv"}
"""File extension → format; `moderate_files` writes the format it read."""

EPILOG = """\
Adds to every row: score, tier, categories, refusal, error, and flagged_NAME per --strictness (NAME=SPEC names
the column; strict, moderate and loose by default). A row that cannot be judged (null, empty, too long, not
text) keeps its place with its error, and its flagged columns follow --on-error. Rows may come out in another
order: keep an id column to join on.
exit status: 0 written (a summary line on stderr), 2 bad usage or input, or the run failed.
"""


def _first_file(source: str) -> tuple[Any, str, str]:
    """(filesystem, path, format) of the first data file of `source` (a file, or a folder of files of one format)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(source if "://" in source else os.path.abspath(source))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"{source}: no such file or folder")
    listed = [info] if info.is_file else fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted((f.path, FORMATS.get(os.path.splitext(f.path)[1].lower())) for f in listed if f.is_file)
    kinds = {kind for _, kind in files if kind is not None}
    if len(kinds) != 1:
        found = f"several formats ({', '.join(sorted(kinds))})" if kinds else "no data file"
        raise ValueError(f"{source}: {found}; expected one of {', '.join(FORMATS)}")
    return fs, next(name for name, kind in files if kind in kinds), kinds.pop()


def _columns_of(fs: Any, path: str, kind: str) -> list[str]:
    """The header's (Parquet, CSV) or the first record's (JSONL) column names, read without loading the data."""
    import csv
    import io

    import pyarrow.parquet

    if kind == "parquet":
        return list(pyarrow.parquet.read_schema(path, filesystem=fs).names)
    with fs.open_input_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as text:
        if kind == "csv":
            return next(csv.reader(text), [])
        line = next((line for line in text if line.strip()), "{}")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the first line is not JSON ({error})") from None
    return list(record) if isinstance(record, dict) else []


def moderate_files(source: str, destination: str, *, prompt_column: str, response_column: str | None = None,
                   strictness: StrictnessList = DEFAULT_STRICTNESS, **options: Any) -> dict[str, int]:
    """Read Parquet, JSONL or CSV (by extension), moderate every row (`moderate_dataset`), write the same format
    into the folder `destination` (one file per block), and count what was written.

    The text columns are read as text whatever they hold (JSON and CSV readers would turn "2024-01-01" into a
    date); CSV output joins `categories` with commas. The input is checked before Ray starts.

    Args:
        source: a file, or a folder of files of one format (a local path or a URI pyarrow reads: s3://, gs://).
        destination: the folder to write.
        strictness, **options: as `moderate_dataset`.

    Returns:
        {"rows": …, "undecided": …, "flagged_<name>": …} over the written rows.

    Raises:
        ValueError: no such input, an unknown or mixed format, a named column absent from the first record.
    """
    flags = list(flag_columns(strictness))
    fs, first, kind = _first_file(source)
    check_columns(_columns_of(fs, first, kind), prompt_column, response_column, {})
    text = {name: pa.string() for name in (prompt_column, response_column) if name is not None}
    if kind == "parquet":
        ds = ray.data.read_parquet(source)
    elif kind == "json":
        import pyarrow.json

        ds = ray.data.read_json(source, parse_options=pyarrow.json.ParseOptions(
            explicit_schema=pa.schema(list(text.items())), unexpected_field_behavior="infer"))
    else:
        import pyarrow.csv

        ds = ray.data.read_csv(source, convert_options=pyarrow.csv.ConvertOptions(column_types=text))
    judged = moderate_dataset(ds, prompt_column=prompt_column, response_column=response_column,
                              strictness=strictness, **options)
    if kind == "parquet":
        judged.write_parquet(destination)
    elif kind == "json":
        judged.write_json(destination)
    else:
        judged.map_batches(_joined_categories, batch_format="pyarrow").write_csv(destination)
    return _counts(destination, kind, flags)


def _joined_categories(batch: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    index = batch.column_names.index("categories")
    return batch.set_column(index, "categories", pc.binary_join(batch.column("categories"), ","))


def _counts(destination: str, kind: str, flags: list[str]) -> dict[str, int]:
    """Rows, undecided rows and flagged rows per column, read back from what was written."""
    if kind == "csv":  # an empty CSV cell is no error, not an empty one
        import pyarrow.csv

        options = pyarrow.csv.ConvertOptions(strings_can_be_null=True)
        written = ray.data.read_csv(destination, convert_options=options)
    else:
        written = ray.data.read_parquet(destination) if kind == "parquet" else ray.data.read_json(destination)
    counts = {"rows": 0, "undecided": 0, **dict.fromkeys(flags, 0)}
    for batch in written.select_columns(["error", *flags]).iter_batches(batch_format="pyarrow"):
        counts["rows"] += batch.num_rows
        counts["undecided"] += batch.num_rows - batch.column("error").null_count
        for name in flags:
            counts[name] += sum(bool(value) for value in batch.column(name).to_pylist())
    return counts


# --- the command line ---------------------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexguard moderate", allow_abbrev=False, epilog=EPILOG,
                                     description="Moderate a Parquet, JSONL or CSV corpus on Ray Data.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("input", help="a .parquet, .jsonl or .csv file, or a folder of them (or s3://, gs://)")
    add("output", help="the folder to write, in the input's format (one file per block)")
    add("--prompt-column", required=True, help="the column holding the user prompt")
    add("--response-column", help="the column holding the reply (response mode; a null reply judges the prompt)")
    add("--strictness", action="append", metavar="[NAME=]STRICTNESS",
        help="one flagged_NAME column each (repeatable; default: strict, moderate and loose)")
    add("--on-error", default="block", type=str.lower, choices=("block", "allow"),
        help="what the flagged columns of an undecided row say (default: block)")
    add("--model", help="hub id or local folder (default: the embedded CPU scorer)")
    add("--backend", default="auto", help="auto | transformers | vllm | openai | lite")
    add("--base-url", action="append", help="OpenAI-compatible server URL (repeatable)")
    add("--option", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="a FlexGuard.load option (repeatable; VALUE is read as JSON when it is JSON: reasoning=false)")
    add("--concurrency", type=_concurrency, metavar="N|MIN,MAX",
        help="actors: a fixed number or an autoscaling range (default: Ray's autoscaling pool)")
    add("--num-cpus", type=float, default=1.0, help="CPUs reserved per actor (default: 1; a fraction shares)")
    add("--num-gpus", type=float, help="GPUs per actor (an LLM backend: 1)")
    add("--batch-size", type=_count, default=DEFAULT_BATCH_SIZE, help="rows per actor call (default: %(default)s)")
    add("--address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    return parser


def _count(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value!r}")
    return int(value)


def _concurrency(value: str) -> int | tuple[int, int]:
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX (integers ≥ 1), got {value!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def _key_value(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _named(spec: str) -> str | tuple[str, str]:
    """`NAME=SPEC` names the flagged column; anything else is a strictness as the core reads it."""
    match = re.fullmatch(r"(\w+)=(.+)", spec, re.DOTALL)
    return (match[1], match[2]) if match else spec


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 written, 2 bad usage or input, or the run failed (one line on stderr)."""
    args = make_parser().parse_args(argv)
    started = not ray.is_initialized()  # shut down only the Ray this command started, never a caller's
    try:
        options = dict(args.option)
        if args.base_url:
            options["base_url"] = args.base_url if len(args.base_url) > 1 else args.base_url[0]
        strictness = [_named(spec) for spec in args.strictness] if args.strictness else DEFAULT_STRICTNESS
        flags = flag_columns(strictness)
        guard = guard_factory(args.model, args.backend, num_cpus=args.num_cpus, **options)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a command-line run sends no usage report
        if args.address:
            ray.init(address=args.address)
        counts = moderate_files(args.input, args.output, prompt_column=args.prompt_column,
                                response_column=args.response_column, strictness=strictness,
                                on_error=args.on_error, guard=guard, concurrency=args.concurrency,
                                num_cpus=args.num_cpus, num_gpus=args.num_gpus, batch_size=args.batch_size)
    except (ValueError, TypeError, OSError, ray.exceptions.RayError) as error:
        lines = str(error).strip().splitlines()
        print(f"flexguard: {lines[0] if lines else type(error).__name__}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    flagged = ", ".join(f"{name.removeprefix('flagged_')} {counts[name]:,}" for name in flags)
    print(f"flexguard: {counts['rows']:,} rows written to {args.output} ({counts['undecided']:,} undecided); "
          f"flagged: {flagged}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
