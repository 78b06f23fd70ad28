"""Moderate a corpus on Ray Data: one actor per replica holds one loaded `FlexGuard` and judges whole batches.

`moderate_dataset(ds, prompt_column=...)` adds to every row `score`, `tier`, `categories`, `refusal`, `error` and
one `flagged_<name>` column per strictness. A row that cannot be judged (a null or non-text cell, empty, too long,
a backend failure) keeps its place with its `error`, its flagged columns following `on_error`: nothing is dropped
and no batch fails for a row. `corpus_files` reads and writes Parquet, JSONL or CSV (`flexguard moderate`).
Ray is imported only when a dataset is built, so the core runs without the `[ray]` extra.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import FlexGuard, RiskScore, Strictness, Thresholds, check_on_error, decide, resolve_strictness
from .scorer import checked_backend

if TYPE_CHECKING:
    import pyarrow
    import ray.data

logger = logging.getLogger(__name__)

DEFAULT_STRICTNESS: tuple[str, ...] = ("strict", "moderate", "loose")
DEFAULT_BATCH_SIZE = 512
"""Rows per actor call and per block (large blocks are split, so one big file still spreads over every actor);
repeated texts are scored once within it. Large enough to fill an LLM backend's batch."""
RESULT_COLUMNS: tuple[str, ...] = ("score", "tier", "categories", "refusal", "error")
FLAG_PREFIX = "flagged_"

GuardFactory = Callable[[], FlexGuard]
"""Builds the guard inside each actor (a picklable, zero-argument callable)."""
StrictnessList = Strictness | Sequence[Strictness | tuple[str, Strictness]]


def flag_columns(strictness: StrictnessList) -> dict[str, Thresholds]:
    """Column name → thresholds, resolved once (a policy file is read here, not in every actor).

    One strictness or a list; a `(name, strictness)` pair names its column `flagged_<name>`, otherwise the name is
    the strictness's label as an identifier ("strict" → `flagged_strict`, 30 → `flagged_30`, "policy.json#strict"
    → `flagged_policy_json_strict`).

    Raises:
        ValueError: a bad strictness or column name, or two strictnesses making the same column.
    """
    specs = list(strictness) if isinstance(strictness, (list, tuple)) else [strictness]
    columns: dict[str, Thresholds] = {}
    for spec in specs:
        name, spec = spec if isinstance(spec, tuple) and len(spec) == 2 else (None, spec)
        thresholds = resolve_strictness(spec)
        name = re.sub(r"[^0-9a-z]+", "_", thresholds.label.lower()).strip("_") if name is None else name
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"strictness: column name {name!r} must be letters, digits and '_'")
        if FLAG_PREFIX + name in columns:
            raise ValueError(f"strictness: two make the column {FLAG_PREFIX + name!r}; name them (name, strictness)")
        columns[FLAG_PREFIX + name] = thresholds
    if not columns:
        raise ValueError("strictness: give at least one")
    return columns


def guard_factory(model: str | None = None, backend: str = "auto", *, num_cpus: float = 1.0,
                  **load_options: Any) -> GuardFactory:
    """What each actor calls to load its guard: `FlexGuard.load(model, backend, **load_options)`. Checked here,
    on the driver: a bad option is one error now, not an actor failing to start on every node.

    The embedded scorer's onnxruntime threads default to `num_cpus` (an actor's share of the cores).

    Raises:
        TypeError: an option neither the facade nor the backend takes (naming both lists).
        ValueError: an unknown backend.
    """
    name = checked_backend(model, backend, load_options)
    if name == "lite":
        load_options.setdefault("threads", max(1, int(num_cpus)))
    return functools.partial(FlexGuard.load, model, backend, **load_options)


def check_columns(names: Sequence[str], prompt_column: str, response_column: str | None,
                  flags: Mapping[str, Thresholds]) -> None:
    """ValueError unless the named columns are among `names` and none of the columns moderation writes is."""
    for column in (prompt_column, response_column):
        if column is not None and column not in names:
            raise ValueError(f"no column {column!r}; the data has {', '.join(names) or 'none'}")
    taken = sorted(set(names) & {*RESULT_COLUMNS, *flags})
    if taken:
        raise ValueError(f"the data already has {', '.join(taken)}, which moderation writes; rename first")


def _malformed(value: Any, column: str | None, *, optional: bool) -> str | None:
    """Why a cell cannot be judged as text, or None (a null reply is prompt mode, as in `flexguard score -`)."""
    if value is None or (isinstance(value, float) and value != value):  # pandas writes a missing text as NaN
        return None if optional else f"column {column!r} is null: nothing to judge"
    if not isinstance(value, str):
        return f"column {column!r} holds {type(value).__name__}, not text: not judged"
    return None


class GuardBatches:
    """A Ray Data callable class: one loaded `FlexGuard` per actor, judging `pyarrow.Table` batches.

    `moderate_dataset` is the usual way in; place it in a pipeline of your own with
    `ds.map_batches(GuardBatches, fn_constructor_kwargs=..., batch_format="pyarrow", compute=...)`.

    Args:
        prompt_column: the column holding the user prompt.
        response_column: the column holding the reply (response mode); a null reply judges the prompt.
        flags: column name → thresholds (`flag_columns`; default strict, moderate and loose).
        on_error: what an undecided row's flagged columns say: "block" (True) or "allow" (False).
        guard: builds the guard in the actor (`guard_factory`; default the embedded scorer).

    Raises:
        ValueError: on_error "raise" (one row would fail its whole batch) or unknown; per batch, a named column
            that is missing or a column that moderation writes already there.

    Example:
        >>> import pyarrow as pa
        >>> judge = GuardBatches("text")
        >>> judge(pa.table({"text": ["How do I bake bread?", None]}))["error"].to_pylist()
        [None, "column 'text' is null: nothing to judge"]
    """

    def __init__(self, prompt_column: str, response_column: str | None = None,
                 flags: Mapping[str, Thresholds] | None = None, on_error: str = "block",
                 guard: GuardFactory | None = None) -> None:
        self.on_error = check_on_error(on_error)
        if self.on_error == "raise":
            raise ValueError("on_error='raise' would fail a whole batch for one row; use 'block' or 'allow' "
                             "(the error column names every undecided row)")
        self.prompt_column, self.response_column = prompt_column, response_column
        self.flags = dict(flags) if flags is not None else flag_columns(DEFAULT_STRICTNESS)
        self.guard = (guard or FlexGuard.load)()

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        check_columns(batch.column_names, self.prompt_column, self.response_column, self.flags)
        prompts = batch.column(self.prompt_column).to_pylist()
        replies = batch.column(self.response_column).to_pylist() if self.response_column else [None] * len(prompts)
        unique: dict[tuple[str, str | None], int] = {}
        rows: list[int | RiskScore] = []
        for prompt, reply in zip(prompts, replies, strict=True):
            problem = (_malformed(prompt, self.prompt_column, optional=False)
                       or _malformed(reply, self.response_column, optional=True))
            if problem is not None:
                rows.append(RiskScore.failure(problem, scorer=self.guard.backend.name))
            else:
                rows.append(unique.setdefault((prompt, reply), len(unique)))
        risks = self._score([{"prompt": p, "response": r} for p, r in unique])
        per_row = [risks[row] if isinstance(row, int) else row for row in rows]
        for name, (kind, values) in self._columns(per_row).items():
            batch = batch.append_column(name, pa.array(values, type=kind))
        return batch

    def _score(self, items: list[dict[str, Any]]) -> list[RiskScore]:
        """One result per item; whatever the guard raises becomes every item's error, never the batch's."""
        if not items:
            return []
        try:  # a cascade escalates around the first strictness's lines
            return self.guard.score_batch(items, next(iter(self.flags.values())))
        except Exception as error:  # noqa: BLE001 - one row must never fail the batch; each keeps the error
            logger.warning("the guard failed a batch of %d items (%s); each keeps the error", len(items),
                           type(error).__name__)
            text = str(error).strip().splitlines()
            reason = f"guard failed: {text[0] if text else type(error).__name__}"
            return [RiskScore.failure(reason, scorer=self.guard.backend.name)] * len(items)

    def _columns(self, risks: list[RiskScore]) -> dict[str, tuple[Any, list[Any]]]:
        import pyarrow as pa

        columns: dict[str, tuple[Any, list[Any]]] = {
            "score": (pa.float64(), [r.score if r.ok else None for r in risks]),
            "tier": (pa.string(), [r.tier.value if r.ok else None for r in risks]),
            "categories": (pa.list_(pa.string()), [list(r.categories) for r in risks]),
            "refusal": (pa.float64(), [r.refusal for r in risks]),
            "error": (pa.string(), [_error(r) for r in risks]),
        }
        for name, thresholds in self.flags.items():
            columns[name] = (pa.bool_(), [decide(r, thresholds, self.on_error).flagged for r in risks])
        return columns


def _error(risk: RiskScore) -> str | None:
    if not risk.ok:
        return risk.error
    return None if risk.partial_error is None else f"part of the text could not be judged: {risk.partial_error}"


def moderate_dataset(ds: ray.data.Dataset, *, prompt_column: str, response_column: str | None = None,
                     strictness: StrictnessList = DEFAULT_STRICTNESS, on_error: str = "block",
                     model: str | None = None, backend: str = "auto", guard: GuardFactory | None = None,
                     concurrency: int | tuple[int, int] | None = None, num_cpus: float = 1.0,
                     num_gpus: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     **load_options: Any) -> ray.data.Dataset:
    """`ds` with the guard's verdict on every row (lazy, like every Ray Data transform).

    Each actor loads its guard once (`guard_factory`): the embedded scorer on CPU actors by default, an LLM
    backend on GPU actors with `num_gpus=1`, or the OpenAI backend in front of vLLM servers. Ray restarts an
    actor that dies and runs its batch again (Ray Data's actor pools default to `max_restarts=-1` and
    `max_task_retries=-1`); a batch's rows come out once, when its call returns, in any order.
    A fixed pool that reserves every CPU leaves none for reading and writing, and Ray Data then waits forever:
    on a CPU-only machine give actors a fraction (`num_cpus=0.5`) or leave `concurrency` to Ray.

    Args:
        ds: the rows to judge.
        prompt_column: the column with the user prompt.
        response_column: the column with the reply (response mode); a null reply judges the prompt alone.
        strictness: one strictness or a list (`flag_columns`), one `flagged_<name>` column each.
        on_error: "block" (undecided rows are flagged) or "allow".
        model, backend, **load_options: as `FlexGuard.load` (default: the embedded CPU scorer).
        guard: a picklable zero-argument callable building the guard in each actor, instead of model/backend.
        concurrency: actors: a fixed number, a (min, max) autoscaling range, or None (Ray's autoscaling pool).
        num_cpus, num_gpus: reserved per actor.
        batch_size: rows per call and per block; repeated (prompt, reply) pairs in it are scored once.

    Raises:
        ValueError: a bad strictness, on_error or batch_size, guard given with model/backend/options, or (when
            Ray knows the schema without reading) a missing column.
        TypeError: an option neither the facade nor the backend takes.

    Example:
        >>> import ray
        >>> ds = ray.data.from_items([{"text": "How do I bake bread?"}])
        >>> moderate_dataset(ds, prompt_column="text").take(1)[0]["flagged_strict"]  # doctest: +SKIP
        False
    """
    import ray.data

    flags = flag_columns(strictness)
    if check_on_error(on_error) == "raise":
        raise ValueError("on_error='raise' would fail a whole batch for one row; use 'block' or 'allow'")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if guard is not None and (model is not None or backend != "auto" or load_options):
        raise ValueError("give either guard or model/backend/options, not both")
    guard = guard or guard_factory(model, backend, num_cpus=num_cpus, **load_options)
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        check_columns(schema.names, prompt_column, response_column, flags)
    pool = ({"size": concurrency} if isinstance(concurrency, int) else
            {"min_size": concurrency[0], "max_size": concurrency[1]} if concurrency else {"min_size": 1})
    return ds.repartition(target_num_rows_per_block=batch_size).map_batches(
        GuardBatches, batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(**pool),
        num_cpus=num_cpus, num_gpus=num_gpus,
        fn_constructor_kwargs={"prompt_column": prompt_column, "response_column": response_column,
                               "flags": flags, "on_error": on_error, "guard": guard})


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_STRICTNESS", "GuardBatches", "check_columns", "flag_columns",
           "guard_factory", "moderate_dataset"]
