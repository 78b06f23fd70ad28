"""Load FlexBench-format data (the hub dataset, a local folder of its CSVs, or one CSV/JSONL file).

FlexBench's text column names are not documented offline, so text columns are detected from common
names and can be overridden. `severity_level` (0-4) is the truth; the binary regime labels are
derived from it when absent, exactly as the dataset card defines them (≥1 / ≥2 / ≥3).
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flexguard_plugins.types import ModerationItem

from .metrics import REGIME_MIN_SEVERITY

logger = logging.getLogger(__name__)

HUB_ID = "Tommy-DING/FlexBench"
SUBSETS: tuple[str, ...] = ("prompt", "response")
SPLITS: tuple[str, ...] = ("test", "valid")

PROMPT_COLUMNS: tuple[str, ...] = (
    "prompt", "query", "question", "instruction", "user_input", "user_prompt", "user", "human", "input",
    "goal", "behavior", "forbidden_prompt", "objective", "text", "content",
)
RESPONSE_COLUMNS: tuple[str, ...] = (
    "response", "completion", "answer", "assistant_response", "assistant", "model_response", "reply",
    "output", "generation", "target",
)
SEVERITY_COLUMNS: tuple[str, ...] = ("severity_level", "severity", "severity_tier", "risk_level")
ID_COLUMNS: tuple[str, ...] = ("id", "uid", "sample_id", "idx")
SOURCE_COLUMNS: tuple[str, ...] = ("source", "sources", "dataset")
CATEGORY_COLUMNS: tuple[str, ...] = ("category", "categories", "harm_category")
TIER_NAMES = {"BENIGN": 0, "LOW": 1, "MODERATE": 2, "HIGH": 3, "EXTREME": 4}


def _names(columns: tuple[str, ...]) -> str:
    return textwrap.fill(", ".join(columns), width=100, initial_indent=" " * 4, subsequent_indent=" " * 4)


COLUMNS_HELP = f"""\
data (--data): the hub id {HUB_ID} (needs the network or a cached copy), a folder of its
Guard_{{prompt,response}}_{{valid,test}}.csv, or one .csv, .tsv, .jsonl or .json file. Columns are matched by
name, case ignored, the first name listed that is present winning:
  prompt text (required; or --prompt-column):
{_names(PROMPT_COLUMNS)}
  response text (response subset; or --response-column):
{_names(RESPONSE_COLUMNS)}
  severity, the truth: 0-4 or BENIGN, LOW, MODERATE, HIGH, EXTREME (required):
{_names(SEVERITY_COLUMNS)}
  optional: an id ({", ".join(ID_COLUMNS)}; repeats get a #n suffix), a source ({", ".join(SOURCE_COLUMNS)};
    metrics per source), a category ({", ".join(CATEGORY_COLUMNS)}), and label_strict, label_moderate,
    label_loose (checked against severity, which wins: label_R is severity >= 1, 2, 3).
"""
"""The data format, for `flexguard eval --help` and `flexguard calibrate --help`."""


@dataclass(frozen=True)
class Columns:
    """Which source columns were used; reported in metrics so a reader can check the detection."""

    prompt: str
    response: str | None
    severity: str


def file_name(subset: str, split: str) -> str:
    """FlexBench's file naming: Guard_{prompt,response}_{valid,test}.csv."""
    _check_choice(subset, SUBSETS, "subset")
    _check_choice(split, SPLITS, "split")
    return f"Guard_{subset}_{split}.csv"


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def is_hub_id(data: str) -> bool:
    """A hub id is `owner/name` that is not an existing local path."""
    return not Path(data).exists() and data.count("/") == 1 and not data.startswith((".", "/"))


def read_raw(data: str | Path, subset: str = "prompt", split: str = "test") -> pd.DataFrame:
    """The table as stored: from the hub (datasets.load_dataset, as the card says), a folder or a file."""
    data = str(data)
    path = Path(data)
    if path.is_dir():
        target = path / file_name(subset, split)
        if not target.exists():
            found = sorted(p.name for p in path.glob("Guard_*.csv"))
            raise FileNotFoundError(f"{target} not found; the folder holds {found or 'no Guard_*.csv files'}")
        return pd.read_csv(target)
    if path.is_file():
        return read_table(path)
    if is_hub_id(data):
        import datasets  # the I/O seam tests redirect to a local folder

        name = file_name(subset, split)
        try:
            dataset = datasets.load_dataset(data, data_files={split: name}, split=split)
        except Exception as error:  # noqa: BLE001 - datasets raises many types (offline, not found, HTTP)
            why = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(f"cannot load {name} of {data!r} from the Hugging Face Hub: {why}; download it "
                                    "while online, or pass a local folder or file") from None
        return dataset.to_pandas()
    raise FileNotFoundError(f"{data!r} is neither a file, a folder, nor a hub id like {HUB_ID}")


def read_table(path: str | Path) -> pd.DataFrame:
    """One CSV, TSV or JSON-lines file as a DataFrame."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def _find(frame: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    return None


def _override(frame: pd.DataFrame, name: str, what: str) -> str:
    if name not in frame.columns:
        raise ValueError(f"--{what}-column {name!r} is not a column; found: {', '.join(map(str, frame.columns))}")
    return name


def detect_columns(frame: pd.DataFrame, subset: str, *, prompt_column: str | None = None,
                   response_column: str | None = None) -> Columns:
    """Pick the prompt, response and severity columns; a clear error naming what was found otherwise."""
    found = ", ".join(map(str, frame.columns)) or "(none)"
    prompt = _override(frame, prompt_column, "prompt") if prompt_column else _find(frame, PROMPT_COLUMNS)
    response = _override(frame, response_column, "response") if response_column else None
    if response is None and subset == "response":
        response = _find(frame, tuple(c for c in RESPONSE_COLUMNS if c != prompt))
    severity = _find(frame, SEVERITY_COLUMNS)
    missing = []
    if prompt is None:
        missing.append(f"a prompt text column (one of {', '.join(PROMPT_COLUMNS)}; or --prompt-column)")
    if subset == "response" and response is None:
        missing.append(f"a response text column (one of {', '.join(RESPONSE_COLUMNS)}; or --response-column)")
    if severity is None:
        missing.append("a 'severity_level' column (0-4)")
    if missing:
        raise ValueError(f"no usable columns: need {'; '.join(missing)}. Columns found: {found}")
    if response is not None and response == prompt:
        raise ValueError(f"prompt and response columns are both {prompt!r}")
    return Columns(prompt=str(prompt), response=None if response is None else str(response), severity=str(severity))


def _severity(values: pd.Series, column: str) -> np.ndarray:
    """Integers 0-4; tier names (BENIGN…EXTREME) are accepted too."""
    def one(value: object) -> int:
        if isinstance(value, str) and value.strip().upper() in TIER_NAMES:
            return TIER_NAMES[value.strip().upper()]
        number = float(value)  # type: ignore[arg-type]
        if np.isnan(number) or number != int(number) or not 0 <= number <= 4:
            raise ValueError
        return int(number)

    out = np.empty(len(values), dtype=int)
    for index, value in enumerate(values):
        try:
            out[index] = one(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {column!r}, row {index}: severity must be an integer 0-4 "
                             f"or a tier name, got {value!r}") from None
    return out


def _text(values: pd.Series) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def normalize(raw: pd.DataFrame, subset: str, *, prompt_column: str | None = None,
              response_column: str | None = None) -> pd.DataFrame:
    """The standard frame: id, prompt, response (None in prompt mode), severity_level, label_*,
    and source/category when the data has them. Column names used are in `frame.attrs['columns']`."""
    _check_choice(subset, SUBSETS, "subset")
    if raw.empty:
        raise ValueError("the data has no rows")
    columns = detect_columns(raw, subset, prompt_column=prompt_column, response_column=response_column)
    frame = pd.DataFrame(index=range(len(raw)))
    id_column = _find(raw, ID_COLUMNS)
    ids = [str(v) for v in raw[id_column]] if id_column else [str(i) for i in range(len(raw))]
    frame["id"] = _unique(ids)
    frame["prompt"] = _text(raw[columns.prompt])
    frame["response"] = _text(raw[columns.response]) if subset == "response" and columns.response else None
    frame["severity_level"] = _severity(raw[columns.severity], columns.severity)
    for regime, minimum in REGIME_MIN_SEVERITY.items():
        column = f"label_{regime}"
        derived = (frame["severity_level"] >= minimum).astype(int)
        if column in raw.columns:
            given = pd.to_numeric(raw[column], errors="coerce").fillna(-1).astype(int).to_numpy()
            mismatched = int(np.sum(given != derived.to_numpy()))
            if mismatched:
                logger.warning("%s disagrees with severity_level on %d rows; using severity_level", column,
                               mismatched)
        frame[column] = derived
    for extra, names in (("source", SOURCE_COLUMNS), ("category", CATEGORY_COLUMNS)):
        column = _find(raw, names)
        if column is not None:
            frame[extra] = raw[column].fillna("unknown").astype(str).to_numpy()
    frame.attrs["columns"] = {"prompt": columns.prompt, "response": columns.response if subset == "response"
                              else None, "severity": columns.severity, "id": id_column}
    frame.attrs["subset"] = subset
    return frame


def _unique(ids: list[str]) -> list[str]:
    """Ids key the resumable scores file, so they must be unique; repeats get a #n suffix."""
    seen: dict[str, int] = {}
    out = []
    for value in ids:
        count = seen.get(value, 0)
        seen[value] = count + 1
        out.append(value if count == 0 else f"{value}#{count}")
    if len(seen) < len(ids):
        logger.warning("%d repeated ids made unique with a #n suffix", len(ids) - len(seen))
    return out


def default_subset(data: str | Path) -> str:
    """Prompt for the benchmark; for a single file, response mode when it has a response column."""
    path = Path(str(data))
    if path.is_file():
        head = read_table(path).head(0)
        return "response" if _find(head, RESPONSE_COLUMNS) else "prompt"
    return "prompt"


def load_flexbench(data: str | Path, subset: str | None = None, split: str = "test", *,
                   prompt_column: str | None = None, response_column: str | None = None) -> pd.DataFrame:
    """Read and normalize one subset/split of FlexBench-format data (see `normalize`)."""
    subset = subset or default_subset(data)
    raw = read_raw(data, subset, split)
    frame = normalize(raw, subset, prompt_column=prompt_column, response_column=response_column)
    frame.attrs["data"] = str(data)
    frame.attrs["split"] = split
    return frame


def has_split(data: str | Path, split: str) -> bool:
    """Whether `data` is a benchmark (hub or folder) that holds this split; single files have none."""
    path = Path(str(data))
    if path.is_file():
        return False
    if path.is_dir():
        return any(path.glob(f"Guard_*_{split}.csv"))
    return is_hub_id(str(data))


def to_items(frame: pd.DataFrame) -> list[ModerationItem]:
    """The moderation items of a normalized frame, in row order."""
    responses = frame["response"] if "response" in frame else [None] * len(frame)
    return [ModerationItem(prompt=p, response=r if isinstance(r, str) else None)
            for p, r in zip(frame["prompt"], responses, strict=True)]
