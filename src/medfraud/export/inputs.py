"""The scoring input format and its row-level check.

Every scoring entry point (the pyfunc model, ``medfraud score`` batch files and the REST
service) takes claims in one format: **one row per claim line, the claim's columns
repeated on each of its lines** (``claims`` joined with ``claim_lines`` on ``claim_id``).
The columns are the contract's (``medfraud.schema.TABLES``) claim columns followed by the
line columns of :data:`LINE_COLUMNS`; dtypes need only be *coercible* (CSV strings, pandas
objects), they are cast here.

:func:`check_rows` validates a frame of such rows and returns the typed, valid claims and
lines plus a table of problems, one row per (input row, column, reason).  A claim with
any bad row is rejected whole and each of its rows is reported, so nothing is dropped
silently.  Row numbers are 1-based positions among the data rows (the header of a CSV
file is not counted).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from medfraud.schema import RANGE_CHECKS, TABLES

CLAIM_COLUMNS: dict[str, pl.DataType] = dict(TABLES["claims"].columns)
LINE_COLUMNS: dict[str, pl.DataType] = {c: t for c, t in TABLES["claim_lines"].columns.items()
                                        if c != "claim_id"}
INPUT_COLUMNS: dict[str, pl.DataType] = {**CLAIM_COLUMNS, **LINE_COLUMNS}
NULLABLE = TABLES["claims"].nullable | TABLES["claim_lines"].nullable
REQUIRED = [c for c in INPUT_COLUMNS if c not in NULLABLE]

# Snapshot table and column each incoming id must exist in (unknown ids are rejected:
# the model has no profile to score them against).
ID_REFERENCES: dict[str, tuple[str, str]] = {
    "patient_id": ("patients", "patient_id"),
    "doctor_id": ("doctors", "doctor_id"),
    "facility_id": ("facilities", "facility_id"),
    "pharmacy_id": ("pharmacies", "pharmacy_id"),
    "item_code": ("drugs", "drug_code"),  # checked on drug lines only
}

PROBLEM_SCHEMA = {"row": pl.Int64, "claim_id": pl.String, "column": pl.String,
                  "reason": pl.String}
_ROW = "_row"
_REPEATED_LINE = "_repeated_line"
_TRUE = {"true": True, "t": True, "1": True, "yes": True, "false": False, "f": False,
         "0": False, "no": False}


class InputError(ValueError):
    """Incoming rows break the input format; ``problems`` has row, claim_id, column, reason.

    The message lists the first problems so a caller (or an HTTP client) sees where.
    """

    def __init__(self, problems: pl.DataFrame, total_rows: int | None = None, shown: int = 10):
        self.problems = problems
        bad_rows = problems["row"].drop_nulls().n_unique() if problems.height else 0
        head = f"{bad_rows} bad input row(s)" if bad_rows else "input rejected"
        if total_rows is not None and bad_rows:
            head += f" out of {total_rows}"
        lines = [head + ":"]
        for p in problems.head(shown).iter_rows(named=True):
            where = f"row {p['row']}" if p["row"] is not None else "input"
            claim = f" (claim {p['claim_id']})" if p["claim_id"] else ""
            lines.append(f"  - {where}{claim}, column {p['column']}: {p['reason']}")
        if problems.height > shown:
            lines.append(f"  ... and {problems.height - shown} more")
        super().__init__("\n".join(lines))


@dataclass
class CheckedBatch:
    """Outcome of :func:`check_rows`.

    Attributes
    ----------
    claims : valid claims, one row per claim, contract columns and dtypes.
    lines : their lines, contract ``claim_lines`` columns and dtypes.
    problems : row (Int64), claim_id, column, reason — one row per problem found; every
        row of a rejected claim appears at least once.
    rows : number of input rows checked.
    """

    claims: pl.DataFrame
    lines: pl.DataFrame
    problems: pl.DataFrame
    rows: int

    @property
    def bad_rows(self) -> int:
        return self.problems["row"].drop_nulls().n_unique() if self.problems.height else 0

    def raise_if_bad(self) -> None:
        if self.problems.height:
            raise InputError(self.problems, self.rows)


def missing_columns(columns: list[str]) -> list[str]:
    """Input columns absent from ``columns`` (nullable ones included: the format is fixed)."""
    return [c for c in INPUT_COLUMNS if c not in columns]


def _coerce(column: str, target: pl.DataType, source: pl.DataType,
            text: TextState | None = None) -> pl.Expr:
    """Expression casting ``column`` to ``target``; a value that cannot be read becomes null.

    Text is stripped of surrounding whitespace and a blank becomes null; ``text`` (see
    :func:`_text_state`) says when the values need neither, and the rewrite is skipped."""
    x = pl.col(column)
    if source == pl.Null:
        return x.cast(target)
    if source == pl.String:
        trimmed = text is not None and column not in text.untrimmed
        if not trimmed:
            x = x.str.strip_chars()
        if target == pl.String:
            if trimmed and column not in text.with_blanks:
                return x
            return pl.when(x == "").then(None).otherwise(x)
        if target == pl.Date:
            return x.str.to_date(strict=False)
        if target == pl.Datetime("us"):
            return x.str.to_datetime(time_unit="us", strict=False)
        if target == pl.Boolean:
            return x.str.to_lowercase().replace_strict(_TRUE, default=None, return_dtype=pl.Boolean)
        if target.is_integer():
            as_float = x.cast(pl.Float64, strict=False)
            return pl.when(as_float == as_float.floor()).then(as_float).cast(target, strict=False)
        return x.cast(target, strict=False)
    if source == target:
        return x
    if target.is_integer() and source.is_float():
        return pl.when(x == x.floor()).then(x).cast(target, strict=False)
    if target == pl.Date and isinstance(source, pl.Datetime):
        return x.dt.date()
    if target == pl.Datetime("us") and isinstance(source, pl.Datetime):
        if source.time_zone is not None:
            x = x.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return x.cast(target)
    return x.cast(target, strict=False)


def _raw(column: str) -> str:
    return f"_raw_{column}"


def _cast(source: pl.DataType, target: pl.DataType) -> bool:
    """Whether reading a ``source`` column as ``target`` converts values (and may fail).
    Text read as text cannot fail: blanks become null (see :func:`_coerce`)."""
    return source != target


# From this many rows, check_rows looks at the data first to pick cheaper steps that give
# the same result (see _text_state, _RowOrder); below it (a REST call's few rows) the
# looks would cost more than they save.
_SCAN_FROM = 3000  # the cost of the looks and their saving cross at about 2,500 rows


@dataclass(frozen=True)
class TextState:
    """What the text columns of an input need before they are read.

    ``untrimmed``: columns where some value may start or end with whitespace (they are
    stripped); ``with_blanks``: the others where some value is the empty string (blanks
    become null).  A column in neither is read as it is."""

    untrimmed: frozenset[str]
    with_blanks: frozenset[str]


# A value whose first and last bytes are printable ASCII (33..126, or DEL) has nothing to
# strip: whitespace is 9..13 and 32 in ASCII, and every non-ASCII character's bytes are >= 128.
_SAFE_EDGE_BYTES = (33, 127)


def _text_state(rows: pl.DataFrame, columns: list[str]) -> TextState | None:
    """Which String ``columns`` of ``rows`` need stripping or have blanks; None (treat
    every column as needing both) below :data:`_SCAN_FROM` rows.

    Reads the first and last byte of each value instead of stripping it: about a quarter
    of the cost of stripping and blank-testing every value.
    """
    if rows.height < _SCAN_FROM or not columns:
        return None
    low, high = _SAFE_EDGE_BYTES
    edges = rows.select(expr for i, column in enumerate(columns) for expr in (
        pl.col(column).cast(pl.Binary).bin.get(0, null_on_oob=True).alias(f"first{i}"),
        pl.col(column).cast(pl.Binary).bin.get(-1, null_on_oob=True).alias(f"last{i}")))
    unsafe = edges.select(((pl.all() < low) | (pl.all() > high)).any()).row(0)
    # An empty value has no first byte: more nulls among first bytes than among values.
    first_nulls = edges.select(pl.col(f"first{i}") for i in range(len(columns))).null_count().row(0)
    value_nulls = rows.select(columns).null_count().row(0)
    untrimmed = {c for i, c in enumerate(columns) if unsafe[2 * i] or unsafe[2 * i + 1]}
    with_blanks = {c for c, first, value in zip(columns, first_nulls, value_nulls)
                   if first > value and c not in untrimmed}
    return TextState(frozenset(untrimmed), frozenset(with_blanks))


class SnapshotIds:
    """The distinct ids of a snapshot table, sorted, for membership tests by binary search.

    A REST call's few values are searched with numpy over the ids as Python strings (built
    on the first such call): polars' fixed cost per step is most of a look-up of a few
    values.  Many values are searched, or hashed, by polars.
    """

    FEW = 256  # up to this many values are searched with numpy

    def __init__(self, ids: pl.Series):
        self.ids = ids.drop_nulls().unique().sort()
        self._objects: np.ndarray | None = None

    def __len__(self) -> int:
        return self.ids.len()

    def contains(self, values: pl.Series) -> pl.Series:
        """Boolean Series named like ``values``: whether each is one of the ids (null for null)."""
        if values.len() <= self.FEW and values.dtype == self.ids.dtype == pl.String:
            if self._objects is None:
                self._objects = self.ids.to_numpy()
            given = values.to_list()
            present = [v for v in given if v is not None]
            found = dict(zip(present, _sorted_member(self._objects, present)))
            return pl.Series(values.name, [None if v is None else found[v] for v in given],
                             dtype=pl.Boolean)
        return _known(values, self.ids)


def _sorted_member(sorted_objects: np.ndarray, values: list) -> list[bool]:
    """Whether each of ``values`` is in ``sorted_objects`` (ascending, no nulls)."""
    if not values or sorted_objects.size == 0:
        return [False] * len(values)
    wanted = np.array(values, dtype=object)
    position = np.minimum(np.searchsorted(sorted_objects, wanted), sorted_objects.size - 1)
    return (sorted_objects[position] == wanted).tolist()


def _known(values: pl.Series, ids: pl.Series | SnapshotIds) -> pl.Series:
    """Whether each value is one of ``ids`` (null for a null value).

    A few values against ids sorted ascending (the scoring pipeline keeps them so) are
    found by binary search: a REST call then costs what its claims cost, not a hash table
    of every id of the snapshot.  Many values are hashed (the faster way from about a
    quarter as many values as ids).
    """
    if isinstance(ids, SnapshotIds):
        return ids.contains(values)
    values = values.cast(ids.dtype)
    if ids.flags["SORTED_ASC"] and ids.null_count() == 0 and 4 * values.len() <= ids.len():
        if ids.len() == 0:
            return values.is_not_null() & False
        position = ids.search_sorted(values.fill_null(ids[0]), side="left").clip(upper_bound=ids.len() - 1)
        return (ids.gather(position) == values).alias(values.name)
    return values.is_in(ids.implode())


def _known_column(column: str) -> str:
    return f"_known_{column}"


def _checks(schema: Mapping[str, pl.DataType], known: list[str], text: TextState | None = None,
            repeats_marked: bool = False) -> list[tuple[str, pl.Expr, pl.Expr]]:
    """(column, condition true on a bad row, reason text of that row); ``known`` names the
    id columns checked against the snapshot (``_known_<column>``); ``text`` as in
    :func:`_coerce`; ``repeats_marked``: column ``_repeated_line`` marks the rows whose
    (claim_id, line_no) repeats (see :class:`_RowOrder`).  Conditions may use window
    functions over the whole input; reasons read the row only."""
    checks: list[tuple[str, pl.Expr, pl.Expr]] = []
    for column, dtype in INPUT_COLUMNS.items():
        if not _cast(schema[column], dtype):
            # Already the contract's type (typed Parquet, REST, text columns): nothing to
            # misread, and a blank string is already null (see _coerce).
            blank = pl.col(column).is_null()
        else:
            raw = pl.col(_raw(column))
            blank = raw.is_null()
            if schema[column] == pl.String:  # an empty CSV cell is a null
                if text is None or column in text.untrimmed:
                    blank = blank | (raw.str.strip_chars() == "")
                elif column in text.with_blanks:
                    blank = blank | (raw == "")
            checks.append((column, ~blank & pl.col(column).is_null(), pl.format(
                "value {} is not a valid " + str(dtype), raw.cast(pl.String).str.slice(0, 40))))
        if column in REQUIRED:
            checks.append((column, blank, pl.lit("missing value in a required column")))
    for table, column, message, bad in RANGE_CHECKS:
        if table in ("claims", "claim_lines"):
            checks.append((column, bad, pl.lit(message)))
    duplicate = pl.col(_REPEATED_LINE) if repeats_marked else _DUPLICATE_LINE
    checks.append(("line_no", duplicate, pl.lit("duplicate (claim_id, line_no)")))
    for column, (table, _key) in ID_REFERENCES.items():
        if column not in known:
            continue
        unknown = pl.col(column).is_not_null() & ~pl.col(_known_column(column))
        if column == "item_code":
            unknown = unknown & (pl.col("item_type") == "drug")
        checks.append((column, unknown, pl.format(
            f"unknown {column} {{}}: not in the model's {table} snapshot", pl.col(column))))
    return checks


# Claim columns repeated on every line of a claim (they must agree).
_REPEATED = [c for c in CLAIM_COLUMNS if c != "claim_id"]


@dataclass(frozen=True)
class _CheckPlan:
    """The expressions of a check for one input schema: building them is a measurable part
    of checking a REST call's few rows, so they are built once per schema."""

    checks: tuple[tuple[str, pl.Expr, pl.Expr], ...]  # see _checks
    conditions: tuple[pl.Expr, ...]  # _p<i>: Boolean, the row fails check i
    reasons: tuple[pl.Expr, ...]  # _p<i>: the reason text where _p<i> holds


def _add_check(checks: list, conditions: list, reasons: list, column: str, condition: pl.Expr,
               reason: pl.Expr) -> None:
    name = f"_p{len(checks)}"
    checks.append((column, condition, reason))
    conditions.append(condition.fill_null(False).alias(name))
    reasons.append(pl.when(pl.col(name)).then(reason.cast(pl.String)).alias(name))


@functools.lru_cache(maxsize=32)
def _typing_plan(schema_items: tuple[tuple[str, pl.DataType], ...], text: TextState | None
                 ) -> tuple[pl.Expr, ...]:
    """Contract-typed columns, raw copies of the columns that are cast, _claim_ref."""
    schema = dict(schema_items)
    return (*[_coerce(c, t, schema[c], text).alias(c) for c, t in INPUT_COLUMNS.items()],
            *[pl.col(c).alias(_raw(c)) for c, t in INPUT_COLUMNS.items() if _cast(schema[c], t)],
            pl.col("claim_id").cast(pl.String).alias("_claim_ref"))


@functools.lru_cache(maxsize=64)
def _check_plan(schema_items: tuple[tuple[str, pl.DataType], ...], known: tuple[str, ...],
                text: TextState | None, repeats_marked: bool) -> _CheckPlan:
    checks: list = []
    conditions: list = []
    reasons: list = []
    for column, condition, reason in _checks(dict(schema_items), list(known), text, repeats_marked):
        _add_check(checks, conditions, reasons, column, condition, reason)
    return _CheckPlan(tuple(checks), tuple(conditions), tuple(reasons))


@dataclass(frozen=True)
class _RowOrder:
    """How the rows of a typed input are ordered, as far as cheap tests tell.

    ``contiguous``: the rows of each claim are adjacent (no null claim id); ``sorted``: and
    claim ids ascend; ``lines_ascending``: and line_no strictly ascends within each claim
    (null only on a claim's single row).  ``repeated_line``, when contiguous: Boolean (n,),
    the row's non-null (claim_id, line_no) is on another row too.  Not known (all False,
    None) below :data:`_SCAN_FROM` rows or when a claim's rows are apart.
    """

    contiguous: bool = False
    sorted: bool = False
    lines_ascending: bool = False
    repeated_line: pl.Series | None = field(default=None, repr=False)

    @staticmethod
    def of(typed: pl.DataFrame) -> _RowOrder:
        if typed.height < _SCAN_FROM:
            return _RowOrder()
        claim_ids = typed["claim_id"]
        if claim_ids.null_count():
            return _RowOrder()
        ascending = claim_ids.is_sorted()
        # Unsorted ids are still contiguous when there are as many runs as distinct ids.
        if not ascending and claim_ids.rle_id().max() + 1 != claim_ids.n_unique():
            return _RowOrder()
        line_no = pl.col("line_no")
        out_of_order = typed.select(
            ~(_NEW_CLAIM | (line_no > line_no.shift(1))).fill_null(True)).to_series()
        repeated = pl.repeat(False, typed.height, dtype=pl.Boolean, eager=True)
        if not out_of_order.any():
            return _RowOrder(True, ascending, True, repeated)
        # Lines in ascending order cannot repeat: group only the claims with lines out of order.
        suspects = claim_ids.filter(out_of_order).implode()
        rows = (typed.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_i"), "claim_id", line_no)
                .filter(pl.col("claim_id").is_in(suspects)))
        repeats = rows.filter(_DUPLICATE_LINE)
        return _RowOrder(True, ascending, False, repeated.scatter(repeats["_i"], True))


# True on a row whose non-null (claim_id, line_no) is on another row too.
_DUPLICATE_LINE = pl.col("line_no").is_not_null() & (pl.len().over("claim_id", "line_no") > 1)
# True on the first row of each claim when the rows of a claim are contiguous.
_NEW_CLAIM = pl.col("claim_id").ne_missing(pl.col("claim_id").shift(1))


def check_rows(rows: pl.DataFrame, snapshot: Mapping[str, pl.DataFrame | pl.Series] | None = None,
               *, first_row: int = 1) -> CheckedBatch:
    """Validate and type a frame of claim-line rows.

    Parameters
    ----------
    rows : (n rows) one row per claim line in the input format (see module docstring);
        any dtypes that can be read as the contract's.
    snapshot : table -> frame of the model's reference tables (or a Series of its ids, or
        :class:`SnapshotIds`); when given, ids must exist in them (:data:`ID_REFERENCES`).
    first_row : number of the first row of ``rows`` in the whole input (for chunked files).

    Returns
    -------
    CheckedBatch with the valid claims and lines and the problems found.

    Raises
    ------
    InputError when columns are missing (nothing can be checked row by row).
    """
    missing = missing_columns(rows.columns)
    if missing:
        problems = pl.DataFrame({"row": [None] * len(missing), "claim_id": [None] * len(missing),
                                 "column": missing,
                                 "reason": [f"missing column (expected {INPUT_COLUMNS[c]})"
                                            for c in missing]}, schema=PROBLEM_SCHEMA)
        raise InputError(problems, rows.height)
    n = rows.height
    ids = None
    if snapshot is not None:
        ids = {table: (frame if isinstance(frame, pl.Series | SnapshotIds) else frame[key])
               for _c, (table, key) in ID_REFERENCES.items() if table in snapshot
               for frame in [snapshot[table]]}
    schema = rows.select(list(INPUT_COLUMNS)).schema
    known = [column for column, (table, _key) in ID_REFERENCES.items() if ids and table in ids]
    text = _text_state(rows, [c for c in INPUT_COLUMNS if schema[c] == pl.String])
    typed = rows.select(pl.int_range(first_row, first_row + n, dtype=pl.Int64).alias(_ROW),
                        *_typing_plan(tuple(schema.items()), text))
    if known:
        typed = typed.with_columns(_known(typed[column], ids[ID_REFERENCES[column][0]])
                                   .alias(_known_column(column)) for column in known)
    order = _RowOrder.of(typed)
    if order.repeated_line is not None:
        typed = typed.with_columns(order.repeated_line.alias(_REPEATED_LINE))
    plan = _check_plan(tuple(schema.items()), tuple(known), text, order.repeated_line is not None)
    checks, conditions, reasons = list(plan.checks), list(plan.conditions), list(plan.reasons)
    # Claim columns repeated on each line must agree.  Finding the claims that disagree is
    # cheap (each row against the row before) when a claim's rows are adjacent, else one hash
    # per row; naming the column is then done on those few claims only.
    if order.contiguous:
        disagree = typed.select(~_NEW_CLAIM & pl.any_horizontal(
            pl.col(c).ne_missing(pl.col(c).shift(1)) for c in _REPEATED)).to_series()
    else:
        disagree = typed.select(pl.struct(_REPEATED).hash().n_unique().over("claim_id") > 1
                                ).to_series()
    if disagree.any():
        suspects = typed.filter(disagree)
        for column in _REPEATED:
            _add_check(checks, conditions, reasons, column,
                       pl.col("claim_id").is_in(suspects["claim_id"].implode())
                       & (pl.col(column).n_unique().over("claim_id") > 1),
                       pl.lit("differs between rows of the same claim"))
    # Conditions first, as booleans over every row (cheap); reason texts only for the rows
    # with a problem: on clean input the check is one pass of comparisons.
    failed = typed.select(conditions)
    bad_row = failed.select(pl.any_horizontal(pl.all())).to_series()
    if not bad_row.any():
        return _valid(typed.select(_ROW, "_claim_ref", *INPUT_COLUMNS),
                      pl.DataFrame(schema=PROBLEM_SCHEMA), n, order)
    # One chunk per column: on a chunk of a file made of several row groups, polars 2.1 panics
    # (binview index out of bounds) writing the reasons of the filtered rows otherwise.
    flagged = typed.with_columns(failed).filter(bad_row).rechunk().select(_ROW, "_claim_ref", *reasons)
    typed = typed.select(_ROW, "_claim_ref", *INPUT_COLUMNS)
    columns_of = pl.DataFrame({"_check": [f"_p{i}" for i in range(len(checks))],
                               "column": [c for c, _cond, _r in checks]})
    problems = (flagged.unpivot(index=[_ROW, "_claim_ref"], variable_name="_check", value_name="reason")
                .drop_nulls("reason")
                .join(columns_of, on="_check", how="left")
                .select(pl.col(_ROW).alias("row"), pl.col("_claim_ref").alias("claim_id"), "column",
                        "reason"))
    bad_claims = problems.select(pl.col("claim_id").alias("_claim_ref")).unique()
    # Rows of a rejected claim with no problem of their own are reported too.
    collateral = typed.join(bad_claims, on="_claim_ref", how="semi", nulls_equal=True).join(
        problems.select(pl.col("row").alias(_ROW)).unique(), on=_ROW, how="anti")
    if collateral.height:
        problems = pl.concat([problems, collateral.select(
            pl.col(_ROW).alias("row"), pl.col("_claim_ref").alias("claim_id"),
            pl.lit("claim_id").alias("column"),
            pl.lit("claim rejected because another of its rows is bad").alias("reason"))])
    problems = problems.sort("row", "column", nulls_last=True).cast(PROBLEM_SCHEMA)
    # Dropping whole claims keeps the order of the rows left, so `order` still holds.
    good = typed.filter(~pl.col("_claim_ref").is_in(bad_claims["_claim_ref"].implode(),
                                                    nulls_equal=True))
    return _valid(good, problems, n, order)


def _valid(good: pl.DataFrame, problems: pl.DataFrame, n: int, order: _RowOrder) -> CheckedBatch:
    """The claims and lines of the rows left after rejecting the bad claims (``order``:
    that of ``good``'s rows, see :class:`_RowOrder`)."""
    if order.contiguous:  # a claim's first row is the one after a row of another claim
        claims = good.filter(_NEW_CLAIM).select(list(CLAIM_COLUMNS))
    else:
        claims = good.select(list(CLAIM_COLUMNS)).unique("claim_id", keep="first",
                                                         maintain_order=True)
    lines = good.select("claim_id", *LINE_COLUMNS)
    if order.sorted and order.lines_ascending:  # already in (claim_id, line_no) order
        lines = lines.with_columns(pl.col("claim_id").set_sorted())
    else:
        lines = lines.sort("claim_id", "line_no")
    return CheckedBatch(claims, lines, problems, n)


def rows_from_frames(claims: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """Claims and their lines as input-format rows (claims without lines are dropped)."""
    return claims.select(list(CLAIM_COLUMNS)).join(
        lines.select("claim_id", *LINE_COLUMNS), on="claim_id", how="inner",
        maintain_order="left")
