"""One split of a dataset's claims by patient, shared by the claim features and the rules.

Claim features and the patient-local audit rules depend on a patient's own claims only, so
on large datasets both run patient partition by patient partition.  Splitting the claims,
their lines and the patient registry is one streaming pass that writes them to Parquet
(:func:`medfraud.dataset.spill_partitions`); :func:`split_by_patient` makes that pass once
so that ``build_features(..., partitions=)`` and ``evaluate_rules(..., partitions=)`` of
the same window share it instead of each writing its own.  The rules read history before
their window, so a shared split starts at the first claim::

    with split_by_patient(dataset, end=end) as partitions:
        features = build_features(dataset, (start, end), partitions=partitions)
        hits = evaluate_rules(dataset, window=(start, end), partitions=partitions)

A consumer given a split that misses some claim it needs (it ends too early, or starts
after the rules' history) ignores it and splits for itself.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from medfraud.dataset import PARTITION_SEED, Dataset, patient_partition, spill_partitions

Window = tuple[date, date] | None
# Claims per patient partition: a partition's claims, lines and intermediate frames are
# held in memory at once (~0.2 GiB per 250k claims for the features).
CLAIMS_PER_PARTITION = 250_000
# Columns a split adds to the claims (dropped by consumers that do not read them).
ROW_COLUMN = "_row"
ROSTER_COLUMN = "_roster_facility"
SPLIT_TABLES = ("claims", "claim_lines", "patients")


@dataclass(frozen=True)
class PatientPartitions:
    """Claims dated ``start``..``end`` (inclusive, None = unbounded), their claim lines and
    the patient registry, split into patient-hash partitions.

    Attributes
    ----------
    start, end : the service dates of the split claims.
    n_claims : claims in the split.
    parts : one mapping per non-empty partition: ``claims`` (the contract's columns plus
        ``_row``, UInt32, the claim's position among the split claims in the table's
        order, and, when the split was made with the duty roster, ``_roster_facility``,
        the roster's facility of the claim's doctor that day), ``claim_lines`` (the lines
        of those claims) and ``patients`` (the registry rows of the partition's patients),
        each a lazy Parquet scan.
    with_roster : whether the claims carry ``_roster_facility`` (the claim features need
        it; a split made with ``roster=False`` serves the audit rules only).
    """

    start: date | None
    end: date | None
    n_claims: int
    parts: list[dict[str, pl.LazyFrame]]
    with_roster: bool = False

    def covers(self, start: date | None, end: date | None) -> bool:
        """Whether every claim dated ``start``..``end`` is in the split."""
        return ((self.start is None or (start is not None and self.start <= start))
                and (self.end is None or (end is not None and end <= self.end)))


def with_roster_facility(claims: pl.LazyFrame, roster: pl.LazyFrame) -> pl.LazyFrame:
    """``claims`` with :data:`ROSTER_COLUMN`: the facility ``roster`` (the contract's
    duty_roster) lists for the claim's doctor on its service date, null when the doctor is
    not rostered that day.  (doctor_id, date) is unique in a valid roster: the left join
    adds no rows."""
    on_duty = roster.select("doctor_id", pl.col("date").alias("service_date"),
                            pl.col("facility_id").alias(ROSTER_COLUMN))
    return claims.join(on_duty, on=["doctor_id", "service_date"], how="left")


def sort_by_column(frame: pl.DataFrame, key: str, *, multithreaded: bool = True
                   ) -> pl.DataFrame:
    """``frame.sort(key)`` gathering one column at a time; ``frame`` is emptied.

    For the largest frames of a build (the claim frame, reassembled from the partitions in
    claim order; a rule's hits over every partition): sorting one whole would hold two
    copies at once, column by column holds one copy plus one column (when the caller keeps
    no other frame sharing the columns).  ``multithreaded=False`` sorts the key on one
    thread (on a string key a multithreaded sort costs ~twice the CPU).
    """
    order = frame.select(pl.arg_sort_by(key, multithreaded=multithreaded)).to_series()
    names = frame.columns
    sorted_columns = []
    for name in names:
        # One chunk first: a gather over the partitions' chunks looks up each row's chunk,
        # ~2.5x the CPU of the copy plus a gather over one (polars 2.1).
        sorted_columns.append(frame.drop_in_place(name).rechunk().gather(order))
    return pl.DataFrame(sorted_columns)


@functools.lru_cache(maxsize=64)
def service_dates(start: date | None, end: date | None) -> pl.Expr:
    """``start <= service_date <= end`` (a None bound is open; both None: every row);
    cached per window, since every rule of a call filters by it."""
    bounds = []
    if start is not None:
        bounds.append(pl.col("service_date") >= start)
    if end is not None:
        bounds.append(pl.col("service_date") <= end)
    if not bounds:
        return pl.lit(True)
    return bounds[0] if len(bounds) == 1 else pl.all_horizontal(bounds)


def claim_join_key(claims: pl.LazyFrame) -> pl.Expr:
    """Join key of claim_id for a join of lines with ``claims``: its 64-bit hash (a hash
    join on integers, about half the cost of one on the strings) when the hashes of
    ``claims`` are all distinct, else claim_id itself, so the join stays exact."""
    hashed = pl.col("claim_id").hash(PARTITION_SEED)
    counts = claims.select(hashed.n_unique().alias("hashes"), pl.len().alias("claims")) \
        .collect(engine="streaming")
    return hashed if counts.item(0, "hashes") == counts.item(0, "claims") else pl.col("claim_id")


@contextmanager
def split_by_patient(tables: Dataset | Mapping[str, pl.LazyFrame], start: date | None = None,
                     end: date | None = None, *, window: Window = None,
                     claims_per_partition: int | None = None, roster: bool = True
                     ) -> Iterator[PatientPartitions | None]:
    """Split the claims dated ``start``..``end`` (or ``window``), their lines and the patient
    registry by patient hash, in one streaming pass to Parquet in a temporary folder that
    lives as long as the context.

    Parameters
    ----------
    tables : a dataset, or contract tables by name (``claims``, ``claim_lines``,
        ``patients`` and, with ``roster``, ``duty_roster``).
    start, end : service dates of the claims to split (inclusive; None = unbounded).
        Audit rules read history before their window: split from ``start=None`` for them.
    window : (start, end) instead of the two arguments.
    claims_per_partition : default :data:`CLAIMS_PER_PARTITION`.
    roster : join the duty roster's facility of each claim's doctor that day (the claim
        features read it; the roster grows with the doctors, so it is joined in this pass
        instead of once per partition).

    Yields
    ------
    :class:`PatientPartitions`, or None when the claims fit in one partition (each
    consumer then reads the tables directly).
    """
    if window is not None:
        start, end = window
    if isinstance(tables, Dataset):
        names = [*SPLIT_TABLES, *(["duty_roster"] if roster else [])]
        tables = {name: tables.scan(name) for name in names}
    per_part = claims_per_partition or CLAIMS_PER_PARTITION
    dated = tables["claims"].filter(service_dates(start, end))
    n_claims = dated.select(pl.len()).collect(engine="streaming").item()
    if n_claims <= per_part:
        yield None
        return
    n_parts = math.ceil(n_claims / per_part)
    part = patient_partition(n_parts)
    # Numbered before any join: a streaming join does not keep the scan's order.
    claims = dated.with_row_index(ROW_COLUMN)
    if roster:
        claims = with_roster_facility(claims, tables["duty_roster"])
    frames = {"claims": claims.with_columns(part)}
    if "claim_lines" in tables:
        key = claim_join_key(dated)
        owners = dated.select(key.alias("_ckey"), part)
        frames["claim_lines"] = (tables["claim_lines"].with_columns(key.alias("_ckey"))
                                 .join(owners, on="_ckey", how="inner").drop("_ckey"))
    if "patients" in tables:
        frames["patients"] = tables["patients"].with_columns(part)
    with tempfile.TemporaryDirectory(prefix="medfraud-partitions-") as folder:
        yield PatientPartitions(start, end, n_claims,
                                spill_partitions(frames, n_parts, Path(folder)), roster)
