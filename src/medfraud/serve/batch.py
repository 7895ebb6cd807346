"""Batch scoring: a Parquet or CSV file of claim-line rows -> one score row per claim.

The input is the scoring input format (:mod:`medfraud.export.inputs`: one row per claim
line, claim columns repeated).  The file is streamed in chunks of about ``chunk_size``
rows (Parquet read by polars a row group at a time, CSV by the ``pyarrow.csv`` streaming
reader, every CSV column read as text and then coerced), so memory stays flat; a chunk never
splits a claim (the rows of the last claim of a chunk are carried into the next one).
The rows of one claim must be contiguous: a claim id seen again after its claim was
scored is rejected as a duplicate.

Every rejected row is written, with its 1-based row number (header not counted), claim
id, column and reason, to ``<output>.rejects.csv``; nothing is dropped silently.  The
output (claim_id, risk, band, reasons; CSV joins the reasons with "; ") is written to a
temporary file and renamed into place only when the share of bad rows is at most
``max_bad_share``; otherwise :class:`TooManyBadRows` is raised and no output exists.

With ``backend="ray"`` the chunks are read, checked and written here as above, and scored
by Ray tasks (:func:`medfraud.distributed.imap_tasks`), in order: the same output.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from medfraud.export.inputs import INPUT_COLUMNS, PROBLEM_SCHEMA, InputError, missing_columns

ProgressFn = Callable[[int, int | None], None]  # (rows done, total rows or None)


class TooManyBadRows(RuntimeError):
    """More than ``max_bad_share`` of the input rows were rejected; no output was written."""


@dataclass
class BatchReport:
    """Outcome of :func:`score_file`.

    Attributes
    ----------
    rows : input rows read.
    claims : claims scored (rows in the output).
    bad_rows : rows rejected (listed in ``rejects``).
    output : the output file (None when nothing was written).
    rejects : the rejects file (None when no row was rejected).
    seconds : wall time.
    """

    rows: int
    claims: int
    bad_rows: int
    output: Path | None
    rejects: Path | None
    seconds: float

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"{path}: unknown file type {suffix!r}; use .parquet or .csv")


def total_rows(path: Path) -> int | None:
    """Row count from Parquet metadata (None for CSV: unknown without reading)."""
    if _format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def iter_batches(path: Path, chunk_size: int) -> Iterator[pl.DataFrame]:
    """Stream ``path`` as polars frames of about ``chunk_size`` rows (input columns only)."""
    if _format(path) == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        missing = missing_columns(file.schema_arrow.names)
        if missing:
            raise InputError(_missing_frame(missing))
        groups = [file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups)]
        yield from _parquet_batches(path, groups, chunk_size)
        return
    import pyarrow.csv as pcsv

    read_options = pcsv.ReadOptions(block_size=max(1 << 20, chunk_size * 256))
    names = pcsv.open_csv(path, read_options=read_options).schema.names  # header only
    missing = missing_columns(names)
    if missing:
        raise InputError(_missing_frame(missing))
    # Text in, typed by check_rows: a bad cell becomes a reported problem, not a crash.
    reader = pcsv.open_csv(
        path, read_options=read_options,
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                            include_columns=list(INPUT_COLUMNS),
                                            strings_can_be_null=True))
    pending: list[pl.DataFrame] = []
    size = 0
    for batch in reader:
        frame = pl.from_arrow(batch)
        pending.append(frame)
        size += frame.height
        if size >= chunk_size:
            yield pl.concat(pending)
            pending, size = [], 0
    if pending:
        yield pl.concat(pending)


def _parquet_batches(path: Path, group_rows: list[int], chunk_size: int) -> Iterator[pl.DataFrame]:
    """The input columns of a Parquet file whose row groups have ``group_rows`` rows, as
    frames of ``chunk_size`` rows (the last one shorter), holding at most a chunk and a row
    group in memory.

    Polars decodes Parquet in about a third of the CPU time of pyarrow + ``pl.from_arrow``.
    Each row group is read once, whole (slicing a file across a row group decodes it again
    for every slice).
    """
    scan = pl.scan_parquet(path, glob=False, hive_partitioning=False).select(list(INPUT_COLUMNS))
    pending: list[pl.DataFrame] = []
    size = start = 0
    for rows in group_rows:
        if rows:
            pending.append(scan.slice(start, rows).collect())
            size += rows
            start += rows
        while size >= chunk_size:
            frame = pl.concat(pending) if len(pending) > 1 else pending[0]
            yield frame.head(chunk_size)
            rest = frame.slice(chunk_size)
            pending, size = ([rest] if rest.height else []), rest.height
    if size:
        yield pl.concat(pending) if len(pending) > 1 else pending[0]


def _missing_frame(missing: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"row": [None] * len(missing), "claim_id": [None] * len(missing),
                         "column": missing,
                         "reason": [f"missing column (expected {INPUT_COLUMNS[c]})" for c in missing]},
                        schema=PROBLEM_SCHEMA)


def claim_chunks(batches: Iterator[pl.DataFrame]) -> Iterator[tuple[int, pl.DataFrame]]:
    """Re-cut row batches so no claim spans two chunks; yields (first row number, chunk)."""
    carry: pl.DataFrame | None = None
    first_row = 1
    for batch in batches:
        frame = batch if carry is None else pl.concat([carry, batch], how="vertical_relaxed")
        if frame.height == 0:
            continue
        last_id = frame["claim_id"][-1]
        # The trailing run of rows with the last claim id may continue in the next batch.
        ids = frame["claim_id"]
        tail = int((ids.cast(pl.String) != str(last_id)).arg_true().max() or -1) + 1 \
            if last_id is not None else frame.height
        if tail == 0:  # the whole frame is one claim: keep collecting
            carry = frame
            continue
        chunk, carry = frame.head(tail), frame.slice(tail)
        yield first_row, chunk
        first_row += chunk.height
    if carry is not None and carry.height:
        yield first_row, carry


def _checked_chunks(pipeline, input_path: Path, chunk_size: int
                    ) -> Iterator[tuple[int, pl.DataFrame, object]]:
    """(input rows, rejected-row problems, checked batch) of each claim-whole chunk.

    A claim id already scored in an earlier chunk is rejected here, before its chunk is
    scored (the rows of one claim must be contiguous).
    """
    seen = pl.Series("claim_id", [], dtype=pl.String)
    seen_max = ""  # the largest id in `seen`
    for first_row, chunk in claim_chunks(iter_batches(input_path, chunk_size)):
        batch = pipeline.check(chunk, first_row=first_row)
        problems = batch.problems
        # Ids all above those scored so far (always so in a file sorted by claim id)
        # cannot repeat one: skip hashing every id seen.
        if seen.len() and batch.claims.height and batch.claims["claim_id"].min() <= seen_max:
            repeated = batch.claims.filter(pl.col("claim_id").is_in(seen.implode()))
            if repeated.height:
                problems, batch = _reject_repeated(chunk, first_row, repeated, problems, batch)
        if batch.claims.height:
            ids = batch.claims["claim_id"].cast(pl.String)
            seen = pl.concat([seen, ids])
            seen_max = max(seen_max, ids.max())
        yield chunk.height, problems, batch


def _score_batch(pipeline, claims: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame | None:
    """Scores of one checked batch (None when it holds no valid claim); a Ray task's unit."""
    return pipeline.score(claims, lines, validate=False) if claims.height else None


def _scored(pipeline, checked: Iterator[tuple[int, pl.DataFrame, object]], backend: str,
            ray_address: str | None) -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame | None]]:
    """(input rows, problems, scores or None) of each checked chunk, in input order."""
    if backend == "local":
        for rows, problems, batch in checked:
            yield rows, problems, _score_batch(pipeline, batch.claims, batch.lines)
        return
    from collections import deque

    from medfraud.distributed import imap_tasks, init_ray

    init_ray(ray_address)
    # The chunks' rows and problems wait here, in order, for their scores.
    waiting: deque = deque()

    def arguments():
        for rows, problems, batch in checked:
            waiting.append((rows, problems))
            yield batch.claims, batch.lines

    for scores in imap_tasks(_score_batch, arguments(), shared=(pipeline,)):
        rows, problems = waiting.popleft()
        yield rows, problems, scores


def score_file(pipeline, input_path: str | Path, output_path: str | Path, *, chunk_size: int = 200_000,
               max_bad_share: float = 0.01, progress: ProgressFn | None = None,
               backend: str = "local", ray_address: str | None = None) -> BatchReport:
    """Score a batch file with a :class:`~medfraud.export.pipeline.ScoringPipeline`.

    Parameters
    ----------
    pipeline : the loaded scoring pipeline.
    input_path : Parquet or CSV file in the scoring input format.
    output_path : .parquet or .csv destination (written atomically).
    chunk_size : rows per chunk (memory bound; also the context in which claims see each other).
    max_bad_share : largest tolerated share of rejected rows, in [0, 1].
    progress : called with (rows done, total rows or None) after each chunk.
    backend : ``"local"``, or ``"ray"``: this process reads and checks the chunks and writes
        the output; Ray tasks score them (the pipeline shipped once), at most the cluster's
        CPUs + 1 chunks in flight.  The output is the same.
    ray_address : with ``backend="ray"``, the cluster to join (None: a local one).

    Returns
    -------
    BatchReport.

    Raises
    ------
    InputError when required columns are missing; TooManyBadRows when more than
    ``max_bad_share`` of the rows are bad (the rejects file is still written).
    """
    import time

    from medfraud.distributed import check_backend

    start = time.perf_counter()
    check_backend(backend)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    if not 0.0 <= max_bad_share <= 1.0:
        raise ValueError(f"max_bad_share must be in [0, 1], got {max_bad_share}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_format = _format(output_path)
    rejects_path = output_path.with_name(output_path.name + ".rejects.csv")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output_path.with_name(f".{output_path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp_rejects = rejects_path.with_name(f".{rejects_path.name}.tmp-{uuid.uuid4().hex[:8]}")
    total = total_rows(input_path)
    rows = claims = bad = 0
    writer = rejects_fh = None
    try:
        checked = _checked_chunks(pipeline, input_path, chunk_size)
        for chunk_rows, problems, scores in _scored(pipeline, checked, backend, ray_address):
            if scores is not None:
                writer = _write_scores(writer, tmp_out, out_format, scores)
                claims += scores.height
            if problems.height:
                if rejects_fh is None:
                    rejects_fh = open(tmp_rejects, "w", encoding="utf-8", newline="")
                    rejects_fh.write("row,claim_id,column,reason\n")
                problems.write_csv(rejects_fh, include_header=False)
                bad += problems["row"].drop_nulls().n_unique()
            rows += chunk_rows
            if progress:
                progress(rows, total)
        if writer is None:  # no valid claim at all: still write an empty, typed output
            from medfraud.export.pipeline import empty_scores

            writer = _write_scores(None, tmp_out, out_format, empty_scores())
        _close(writer)
        writer = None
        if rejects_fh is not None:
            rejects_fh.close()
            rejects_fh = None
            os.replace(tmp_rejects, rejects_path)
        elif rejects_path.exists():
            rejects_path.unlink()  # a stale file from an earlier run would mislead
        share = bad / rows if rows else 0.0
        if share > max_bad_share:
            raise TooManyBadRows(
                f"{bad} of {rows} input rows ({share:.2%}) are bad, more than --max-bad-share "
                f"{max_bad_share:.2%}; no output written; see {rejects_path}")
        os.replace(tmp_out, output_path)
    finally:
        _close(writer)
        if rejects_fh is not None:
            rejects_fh.close()
        for leftover in (tmp_out, tmp_rejects):
            if leftover.exists():
                leftover.unlink()
    return BatchReport(rows, claims, bad, output_path, rejects_path if bad else None,
                       time.perf_counter() - start)


def _reject_repeated(chunk: pl.DataFrame, first_row: int, repeated: pl.DataFrame,
                     problems: pl.DataFrame, batch):
    """Reject claims whose id was already scored in an earlier chunk (non-contiguous rows)."""
    ids = repeated["claim_id"]
    positions = (chunk.with_row_index("_i").filter(pl.col("claim_id").cast(pl.String).is_in(ids.implode()))
                 .select((pl.col("_i").cast(pl.Int64) + first_row).alias("row"),
                         pl.col("claim_id").cast(pl.String)))
    extra = positions.with_columns(pl.lit("claim_id").alias("column"),
                                   pl.lit("claim id already scored earlier in the file (rows of one "
                                          "claim must be contiguous)").alias("reason"))
    problems = pl.concat([problems, extra.cast(PROBLEM_SCHEMA)]).sort("row", nulls_last=True)
    batch.claims = batch.claims.filter(~pl.col("claim_id").is_in(ids.implode()))
    batch.lines = batch.lines.filter(~pl.col("claim_id").is_in(ids.implode()))
    return problems, batch


def _write_scores(writer, path: Path, out_format: str, scores: pl.DataFrame):
    """Append a score frame to the open output (opening it on first use)."""
    if out_format == "parquet":
        import pyarrow.parquet as pq

        table = scores.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
        return writer
    flat = scores.with_columns(pl.col("reasons").list.join("; "))
    if writer is None:
        writer = open(path, "w", encoding="utf-8", newline="")
        flat.write_csv(writer, include_header=True)
    else:
        flat.write_csv(writer, include_header=False)
    return writer


def _close(writer) -> None:
    if writer is not None:
        writer.close()
