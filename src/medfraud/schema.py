"""The data contract: table schemas, constraints and ``validate``.

A dataset is a folder with one sub-folder of Parquet files per table and a
``manifest.json`` (see :mod:`medfraud.dataset`).  This module is the single place
where the tables, their polars dtypes and their constraints are declared; every
other module trusts a dataset that passed :func:`validate`.

Checks are expressed as lazy polars queries so validation streams over datasets
larger than memory.  Every failure is collected (not only the first) as a
:class:`Problem` naming table, column, number of bad rows and one example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

CONTRACT_VERSION = 1

Str = pl.String
Date = pl.Date
Ts = pl.Datetime("us")
F64 = pl.Float64
I32 = pl.Int32
I8 = pl.Int8
Bool = pl.Boolean


@dataclass(frozen=True)
class TableSpec:
    """One table of the contract.

    Attributes
    ----------
    columns : column name -> polars dtype, in canonical order.
    nullable : columns allowed to hold nulls (all others must not).
    key : columns that identify a row uniquely (empty: no key).
    foreign_keys : (column, parent table, parent column); null children are allowed.
    required : False for tables a user's own dataset may omit (the label tables).
    """

    columns: dict[str, pl.DataType]
    nullable: frozenset[str] = frozenset()
    key: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str, str], ...] = ()
    required: bool = True


TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        {"patient_id": Str, "sex": Str, "birth_date": Date, "death_date": Date,
         "region": Str, "insurance_type": Str, "chronic": Bool},
        nullable=frozenset({"death_date"}),
        key=("patient_id",),
    ),
    "facilities": TableSpec(
        {"facility_id": Str, "level": I8, "ownership": Str, "region": Str},
        key=("facility_id",),
    ),
    "doctors": TableSpec(
        {"doctor_id": Str, "facility_id": Str, "department": Str, "title": Str,
         "credit_points": I32},
        key=("doctor_id",),
        foreign_keys=(("facility_id", "facilities", "facility_id"),),
    ),
    "pharmacies": TableSpec(
        {"pharmacy_id": Str, "region": Str, "chain_id": Str},
        nullable=frozenset({"chain_id"}),
        key=("pharmacy_id",),
    ),
    "drugs": TableSpec(
        {"drug_code": Str, "name": Str, "category": Str, "unit_price": F64,
         "max_daily_units": F64, "reimbursable": Bool, "sex_restriction": Str,
         "min_age": I32, "max_age": I32, "restricted_level": I8},
        nullable=frozenset({"sex_restriction", "min_age", "max_age", "restricted_level"}),
        key=("drug_code",),
    ),
    "claims": TableSpec(
        {"claim_id": Str, "patient_id": Str, "doctor_id": Str, "facility_id": Str,
         "pharmacy_id": Str, "setting": Str, "service_date": Date, "admit_date": Date,
         "discharge_date": Date, "diagnosis_code": Str, "drg_group": Str,
         "drg_weight": F64, "total_amount": F64, "fund_paid": F64, "self_paid": F64,
         "region": Str, "cross_region": Bool, "settled_at": Ts},
        nullable=frozenset({"pharmacy_id", "admit_date", "discharge_date", "drg_group",
                            "drg_weight"}),
        key=("claim_id",),
        foreign_keys=(
            ("patient_id", "patients", "patient_id"),
            ("doctor_id", "doctors", "doctor_id"),
            ("facility_id", "facilities", "facility_id"),
            ("pharmacy_id", "pharmacies", "pharmacy_id"),
        ),
    ),
    "claim_lines": TableSpec(
        {"claim_id": Str, "line_no": I32, "item_type": Str, "item_code": Str,
         "quantity": F64, "days_supply": I32, "unit_price": F64, "amount": F64},
        nullable=frozenset({"days_supply"}),
        key=("claim_id", "line_no"),
        foreign_keys=(("claim_id", "claims", "claim_id"),),
    ),
    "prescriptions": TableSpec(
        {"rx_id": Str, "claim_id": Str, "doctor_id": Str, "patient_id": Str,
         "pharmacy_id": Str, "issued_at": Ts, "filled_at": Ts, "channel": Str},
        nullable=frozenset({"filled_at"}),
        key=("rx_id",),
        foreign_keys=(
            ("claim_id", "claims", "claim_id"),
            ("doctor_id", "doctors", "doctor_id"),
            ("patient_id", "patients", "patient_id"),
            ("pharmacy_id", "pharmacies", "pharmacy_id"),
        ),
    ),
    # Opening stock is a purchase row dated on the first day with supplier_id "OPENING".
    "pharmacy_purchases": TableSpec(
        {"pharmacy_id": Str, "drug_code": Str, "purchase_date": Date, "quantity": F64,
         "supplier_id": Str},
        foreign_keys=(
            ("pharmacy_id", "pharmacies", "pharmacy_id"),
            ("drug_code", "drugs", "drug_code"),
        ),
    ),
    "duty_roster": TableSpec(
        {"doctor_id": Str, "facility_id": Str, "date": Date},
        key=("doctor_id", "date"),
        foreign_keys=(
            ("doctor_id", "doctors", "doctor_id"),
            ("facility_id", "facilities", "facility_id"),
        ),
    ),
    "labels_claims": TableSpec(
        {"claim_id": Str, "typology": Str, "ring_id": Str},
        nullable=frozenset({"ring_id"}),
        key=("claim_id", "typology"),
        foreign_keys=(("claim_id", "claims", "claim_id"),),
        required=False,
    ),
    "labels_entities": TableSpec(
        {"entity_type": Str, "entity_id": Str, "typology": Str, "ring_id": Str},
        nullable=frozenset({"ring_id"}),
        key=("entity_type", "entity_id", "typology"),
        required=False,
    ),
    # A partial, biased audit sample: entity_type is "claim" or an entity level.
    "audited": TableSpec(
        {"entity_type": Str, "entity_id": Str, "audited_on": Date, "is_fraud": Bool,
         "typology": Str},
        nullable=frozenset({"typology"}),
        key=("entity_type", "entity_id"),
        required=False,
    ),
}

LABEL_TABLES = ("labels_claims", "labels_entities", "audited")

LEVELS = ("claim", "patient", "doctor", "pharmacy", "facility")
LEVEL_ID = {
    "claim": "claim_id",
    "patient": "patient_id",
    "doctor": "doctor_id",
    "pharmacy": "pharmacy_id",
    "facility": "facility_id",
}
ID_PREFIX = {"patient": "P", "doctor": "D", "facility": "F", "pharmacy": "R", "claim": "C"}

SETTINGS = ("outpatient", "inpatient", "pharmacy", "online")
ITEM_TYPES = ("drug", "exam", "treatment", "bed", "material")
CHANNELS = ("in_hospital", "flowed", "online")
TYPOLOGIES = (
    "collusion_ring",
    "phantom_patient",
    "over_prescription",
    "split_hospitalization",
    "upcoding",
    "frequent_card_swiping",
    "ghost_bed",
    "inventory_mismatch",
    "doctor_absent",
    "duplicate_billing",
)

# Value constraints: (table, column, description, predicate that is True for a *bad* row).
# Null values never count as bad here; null checks are separate.
_col = pl.col
RANGE_CHECKS: tuple[tuple[str, str, str, pl.Expr], ...] = (
    ("facilities", "level", "level must be 1, 2 or 3", ~_col("level").is_between(1, 3)),
    ("patients", "sex", "sex must be 'M' or 'F'", ~_col("sex").is_in(["M", "F"])),
    ("patients", "death_date", "death_date before birth_date",
     _col("death_date") < _col("birth_date")),
    ("drugs", "unit_price", "negative unit_price", _col("unit_price") < 0),
    ("drugs", "max_daily_units", "max_daily_units must be > 0", _col("max_daily_units") <= 0),
    ("drugs", "restricted_level", "restricted_level must be 1, 2 or 3",
     ~_col("restricted_level").is_between(1, 3)),
    ("claims", "setting", f"setting must be one of {SETTINGS}", ~_col("setting").is_in(SETTINGS)),
    ("claims", "total_amount", "negative total_amount", _col("total_amount") < 0),
    ("claims", "fund_paid", "negative fund_paid", _col("fund_paid") < 0),
    ("claims", "self_paid", "negative self_paid", _col("self_paid") < 0),
    ("claims", "fund_paid", "fund_paid + self_paid differs from total_amount by more than 0.01",
     ((_col("fund_paid") + _col("self_paid")) - _col("total_amount")).abs() > 0.01),
    ("claims", "discharge_date", "discharge_date before admit_date",
     _col("discharge_date") < _col("admit_date")),
    ("claims", "drg_weight", "negative drg_weight", _col("drg_weight") < 0),
    ("claim_lines", "item_type", f"item_type must be one of {ITEM_TYPES}",
     ~_col("item_type").is_in(ITEM_TYPES)),
    ("claim_lines", "quantity", "negative quantity", _col("quantity") < 0),
    ("claim_lines", "unit_price", "negative unit_price", _col("unit_price") < 0),
    ("claim_lines", "amount", "negative amount", _col("amount") < 0),
    ("claim_lines", "days_supply", "negative days_supply", _col("days_supply") < 0),
    ("prescriptions", "filled_at", "filled_at before issued_at",
     _col("filled_at") < _col("issued_at")),
    ("prescriptions", "channel", f"channel must be one of {CHANNELS}",
     ~_col("channel").is_in(CHANNELS)),
    ("pharmacy_purchases", "quantity", "negative quantity", _col("quantity") < 0),
    ("doctors", "credit_points", "negative credit_points", _col("credit_points") < 0),
)


class DataError(ValueError):
    """Raised when a dataset breaks the contract; ``problems`` lists every failure."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [f"dataset failed validation with {len(problems)} problem(s):"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    """One contract violation: where it is, how many rows, one example."""

    table: str
    column: str | None
    message: str
    bad_rows: int = 0
    example: str | None = None

    def __str__(self) -> str:
        where = self.table + (f".{self.column}" if self.column else "")
        count = f" ({self.bad_rows} bad row(s))" if self.bad_rows else ""
        example = f"; example: {self.example}" if self.example else ""
        return f"{where}: {self.message}{count}{example}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate`: problems (empty when valid) and row counts."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            raise DataError(self.problems)


def _example(frame: pl.LazyFrame, columns: list[str]) -> str | None:
    row = frame.select(columns).head(1).collect()
    if row.height == 0:
        return None
    return json.dumps(row.row(0, named=True), default=str, ensure_ascii=False)


def _count(frame: pl.LazyFrame) -> int:
    return int(frame.select(pl.len()).collect().item())


def _scan_table(path: Path, table: str) -> tuple[pl.LazyFrame | None, Problem | None]:
    """Open a table folder lazily; return a Problem instead when it cannot be read."""
    folder = path / table
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None, Problem(table, None, f"table is missing: no Parquet files in {folder}")
    for file in files:
        try:
            pl.read_parquet_schema(file)
        except Exception as exc:  # polars raises several types for corrupt files
            return None, Problem(table, None, f"{file.name} is not a readable Parquet file ({exc})")
    return pl.scan_parquet(files), None


def validate(path: str | Path) -> ValidationReport:
    """Check a dataset folder against the contract and return every problem found.

    Parameters
    ----------
    path : dataset folder (holding ``manifest.json`` and one folder per table).

    Returns
    -------
    ValidationReport with ``problems`` empty when the dataset is valid and
    ``row_counts`` for each readable table.
    """
    path = Path(path)
    report = ValidationReport(path)
    problems = report.problems
    if not path.is_dir():
        problems.append(Problem("<dataset>", None, f"{path} is not a folder"))
        return report

    frames: dict[str, pl.LazyFrame] = {}
    for table, spec in TABLES.items():
        folder = path / table
        if not spec.required and not folder.exists():
            continue
        frame, problem = _scan_table(path, table)
        if problem:
            problems.append(problem)
            continue
        schema = frame.collect_schema()
        structurally_ok = True
        for column, dtype in spec.columns.items():
            if column not in schema:
                problems.append(Problem(table, column, f"missing column (expected {dtype})"))
                structurally_ok = False
            elif schema[column] != dtype:
                problems.append(Problem(table, column, f"wrong dtype {schema[column]}, expected {dtype}"))
                structurally_ok = False
        extra = [c for c in schema if c not in spec.columns]
        if extra:
            problems.append(Problem(table, extra[0], f"unexpected column(s) {extra}"))
        if not structurally_ok:
            continue
        frames[table] = frame
        rows = _count(frame)
        report.row_counts[table] = rows
        if rows == 0 and spec.required:
            problems.append(Problem(table, None, "table is empty"))
            continue
        problems.extend(_check_nulls(table, spec, frame))
        problems.extend(_check_key(table, spec, frame))

    for table, column, message, bad in RANGE_CHECKS:
        if table in frames:
            problems.extend(_check_predicate(table, column, message, frames[table], bad))

    for table, frame in frames.items():
        for column, parent, parent_column in TABLES[table].foreign_keys:
            if parent in frames:
                problems.extend(_check_foreign_key(table, column, frame, parent, parent_column,
                                                   frames[parent]))
    problems.extend(_check_manifest(path, report.row_counts))
    return report


def _check_nulls(table: str, spec: TableSpec, frame: pl.LazyFrame) -> list[Problem]:
    required = [c for c in spec.columns if c not in spec.nullable]
    counts = frame.select([pl.col(c).null_count() for c in required]).collect().row(0, named=True)
    out = []
    for column, n in counts.items():
        if n:
            example = _example(frame.filter(pl.col(column).is_null()), list(spec.columns))
            out.append(Problem(table, column, "null values in a required column", n, example))
    return out


def _check_key(table: str, spec: TableSpec, frame: pl.LazyFrame) -> list[Problem]:
    if not spec.key:
        return []
    key = list(spec.key)
    dups = frame.group_by(key).agg(pl.len().alias("n")).filter(pl.col("n") > 1)
    n_rows = int(dups.select(pl.col("n").sum()).collect().item() or 0)
    if not n_rows:
        return []
    return [Problem(table, ",".join(key), f"duplicate key ({', '.join(key)})", n_rows,
                    _example(dups, key + ["n"]))]


def check_values(table: str, frame: pl.LazyFrame, columns: tuple[str, ...] | None = None
                 ) -> list[Problem]:
    """The value checks of :data:`RANGE_CHECKS` on one table's rows (``columns``: only the
    checks of these columns; None: all of the table's).

    For callers handed tables that may not have passed :func:`validate` (a library call on
    a user's frame), to report a bad value the way ``medfraud validate`` does.
    """
    return [problem for check_table, column, message, bad in RANGE_CHECKS
            if check_table == table and (columns is None or column in columns)
            for problem in _check_predicate(table, column, message, frame, bad)]


def _check_predicate(table: str, column: str, message: str, frame: pl.LazyFrame,
                     bad: pl.Expr) -> list[Problem]:
    offending = frame.filter(bad.fill_null(False))
    n = _count(offending)
    if not n:
        return []
    return [Problem(table, column, message, n, _example(offending, list(TABLES[table].columns)))]


def _check_foreign_key(table: str, column: str, frame: pl.LazyFrame, parent: str,
                       parent_column: str, parent_frame: pl.LazyFrame) -> list[Problem]:
    orphans = frame.filter(pl.col(column).is_not_null()).join(
        parent_frame.select(pl.col(parent_column).alias(column)).unique(), on=column, how="anti"
    )
    n = _count(orphans)
    if not n:
        return []
    return [Problem(table, column, f"{n} row(s) reference a {parent}.{parent_column} that does not exist",
                    n, _example(orphans, list(TABLES[table].columns)))]


def _check_manifest(path: Path, row_counts: dict[str, int]) -> list[Problem]:
    from medfraud.dataset import MANIFEST, content_digest, table_digest  # dataset imports schema

    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return [Problem("manifest", None, f"missing {MANIFEST} in {path}")]
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        return [Problem("manifest", None, f"{MANIFEST} is not valid JSON ({exc})")]
    out = []
    for key in ("contract_version", "row_counts", "table_digests", "content_digest", "seed",
                "config_hash"):
        if key not in manifest:
            out.append(Problem("manifest", key, "missing field"))
    if out:
        return out
    if manifest["contract_version"] != CONTRACT_VERSION:
        out.append(Problem("manifest", "contract_version",
                           f"contract version {manifest['contract_version']} is not {CONTRACT_VERSION}"))
    for table, rows in row_counts.items():
        declared = manifest["row_counts"].get(table)
        if declared != rows:
            out.append(Problem("manifest", "row_counts",
                               f"{table} has {rows} rows but the manifest says {declared}"))
    for table in row_counts:
        declared = manifest["table_digests"].get(table)
        actual = table_digest(path, table)
        if declared != actual:
            out.append(Problem("manifest", "table_digests",
                               f"{table} files have digest {actual[:12]}… but the manifest says "
                               f"{str(declared)[:12]}… (files changed after writing)"))
    if manifest["content_digest"] != content_digest(manifest["table_digests"]):
        out.append(Problem("manifest", "content_digest",
                           "content_digest does not match the manifest's table_digests"))
    return out
