"""The scoring input format check: every bad row is named by row, column and reason."""

from __future__ import annotations

import polars as pl
import pytest

from medfraud.dataset import conform
from medfraud.export.inputs import INPUT_COLUMNS, InputError, check_rows, rows_from_frames
from tests.contract_tables import valid_tables


@pytest.fixture()
def tables():
    return valid_tables()


@pytest.fixture()
def rows(tables):
    return rows_from_frames(conform("claims", tables["claims"]), conform("claim_lines", tables["claim_lines"]))


def _set(rows: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    """``rows`` with one cell replaced (row is 0-based)."""
    values = rows[column].to_list()
    values[row] = value
    return rows.with_columns(pl.Series(column, values, dtype=rows.schema[column] if value is None
                                       or not isinstance(value, str) or rows.schema[column] == pl.String
                                       else pl.String))


def test_valid_rows_pass_and_are_typed(rows, tables):
    batch = check_rows(rows, tables)
    assert batch.problems.height == 0
    assert batch.claims["claim_id"].to_list() == ["C1", "C2", "C3"]
    assert batch.lines.height == 3
    assert batch.claims.schema["service_date"] == pl.Date


def test_text_input_is_coerced(rows, tables):
    # A CSV read as text: every column a string, empty cells for nulls.
    text = rows.with_columns(pl.col(c).cast(pl.String).fill_null("") for c in rows.columns)
    text = text.with_columns(pl.col("cross_region").str.to_uppercase(),
                             pl.col("settled_at").str.replace(" ", "T"))
    batch = check_rows(text, tables)
    assert batch.problems.height == 0, batch.problems
    assert batch.claims.schema == conform("claims", batch.claims).schema
    assert batch.claims["pharmacy_id"].to_list() == ["R1", None, None]
    assert batch.lines["days_supply"].to_list() == [3, None, 2]


def test_missing_column_raises_naming_it(rows):
    with pytest.raises(InputError, match="column amount: missing column"):
        check_rows(rows.drop("amount"))


@pytest.mark.parametrize("column, value, reason", [
    ("total_amount", -5.0, "negative total_amount"),
    ("amount", -1.0, "negative amount"),
    ("quantity", -2.0, "negative quantity"),
    ("setting", "teleport", "setting must be one of"),
    ("service_date", "2024-13-45", "not a valid Date"),
    ("quantity", "many", "not a valid Float64"),
    ("line_no", "1.5", "not a valid Int32"),
    ("patient_id", None, "missing value in a required column"),
])
def test_bad_cell_rejects_its_claim(rows, tables, column, value, reason):
    if isinstance(value, str) and rows.schema[column] != pl.String:
        rows = rows.with_columns(pl.col(column).cast(pl.String))
    bad = _set(rows, 1, column, value)
    batch = check_rows(bad, tables)
    hit = batch.problems.filter(pl.col("column") == column)
    assert hit.height >= 1
    assert hit["row"].to_list()[0] == 2 and hit["claim_id"][0] == "C2"
    assert reason in hit["reason"][0]
    assert "C2" not in batch.claims["claim_id"].to_list()
    assert sorted(batch.claims["claim_id"].to_list()) == ["C1", "C3"]


def test_unknown_ids_are_rejected(rows, tables):
    bad = _set(_set(rows, 0, "patient_id", "P404"), 2, "item_code", "X999")
    problems = check_rows(bad, tables).problems
    assert set(zip(problems["row"], problems["column"])) >= {(1, "patient_id"), (3, "item_code")}
    assert problems.filter(pl.col("column") == "patient_id")["reason"][0].startswith("unknown patient_id P404")
    # Without a snapshot, ids are not checked.
    assert check_rows(bad).problems.height == 0


def test_whole_claim_rejected_and_every_row_reported(rows, tables):
    two_lines = pl.concat([rows, rows.filter(pl.col("claim_id") == "C1").with_columns(
        pl.lit(2, pl.Int32).alias("line_no"), pl.lit(-4.0).alias("amount"))])
    batch = check_rows(two_lines, tables)
    c1 = batch.problems.filter(pl.col("claim_id") == "C1").sort("row")
    assert c1["row"].to_list() == [1, 4]
    assert "another of its rows" in c1["reason"][0]
    assert batch.lines.filter(pl.col("claim_id") == "C1").height == 0


def test_claim_columns_must_agree_between_lines(rows, tables):
    extra = rows.filter(pl.col("claim_id") == "C1").with_columns(
        pl.lit(2, pl.Int32).alias("line_no"), pl.lit("D2").alias("doctor_id"))
    problems = check_rows(pl.concat([rows, extra]), tables).problems
    assert problems.filter(pl.col("column") == "doctor_id")["reason"].to_list() == [
        "differs between rows of the same claim"] * 2


def test_duplicate_line_is_rejected(rows, tables):
    problems = check_rows(pl.concat([rows, rows.head(1)]), tables).problems
    assert "duplicate (claim_id, line_no)" in problems["reason"].to_list()


def test_first_row_offsets_row_numbers(rows, tables):
    bad = _set(rows, 0, "amount", -1.0)
    assert check_rows(bad, tables, first_row=1001).problems["row"][0] == 1001


def test_input_error_message_names_row_and_column(rows, tables):
    with pytest.raises(InputError, match=r"row 2 \(claim C2\), column total_amount: negative total_amount"):
        check_rows(_set(rows, 1, "total_amount", -5.0), tables).raise_if_bad()


def test_input_columns_are_the_contract_claim_and_line_columns():
    assert list(INPUT_COLUMNS)[:18] == list(conform("claims", valid_tables()["claims"]).columns)
    assert "line_no" in INPUT_COLUMNS and "claim_id" in INPUT_COLUMNS


def test_generated_tiny_dataset_passes_the_input_check(tiny_dataset):
    """Every claim of the ``tiny`` preset, as input rows, is accepted against its own snapshot."""
    claims, lines = tiny_dataset.read("claims"), tiny_dataset.read("claim_lines")
    snapshot = {t: tiny_dataset.read(t) for t in ("patients", "doctors", "facilities", "pharmacies", "drugs")}
    batch = check_rows(rows_from_frames(claims, lines), snapshot)
    assert batch.problems.height == 0, batch.problems.head(5)
    assert batch.claims.height == claims.join(lines.select("claim_id").unique(), on="claim_id",
                                              how="semi").height


@pytest.mark.parametrize("ordered", [True, False])
def test_known_ids_by_binary_search_or_hash_agree(ordered):
    from medfraud.export.inputs import _known

    ids = pl.Series("id", [f"P{i:03d}" for i in range(0, 200, 2)])  # even numbers only
    ids = ids.sort() if ordered else ids.shuffle(seed=1)
    values = pl.Series("patient_id", ["P000", "P001", None, "P198", "P199", "A", "Z", "P100"])
    expected = [True, False, None, True, False, False, False, True]
    assert _known(values, ids).to_list() == expected
    assert _known(values.head(0), ids).to_list() == []
    assert _known(pl.concat([values] * 10), ids).to_list() == expected * 10  # hashed


# check_rows looks at inputs of _SCAN_FROM rows or more to skip work (stripping text that
# has no surrounding whitespace, grouping rows when a claim's rows are adjacent); these
# inputs must give exactly what the plain steps give.

def _spoiled_variants(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    i = pl.int_range(pl.len())
    spoiled = rows.with_columns(
        pl.when(i % 97 == 3).then(pl.lit("P404")).otherwise(pl.col("patient_id")).alias("patient_id"),
        pl.when(i % 89 == 5).then(None).otherwise(pl.col("amount")).alias("amount"),
        # a claim column differing between two lines of one claim
        pl.when(i % 101 == 7).then(pl.col("total_amount") + 1).otherwise(pl.col("total_amount"))
        .alias("total_amount"),
        # a repeated line_no (lines of that claim out of order)
        pl.when(i % 103 == 9).then(pl.lit(1, pl.Int32)).otherwise(pl.col("line_no")).alias("line_no"))
    text = spoiled.with_columns(pl.all().cast(pl.String))
    padded = text.with_columns(
        pl.when(i % 31 == 0).then(pl.lit(" ") + pl.col("doctor_id")).otherwise(pl.col("doctor_id"))
        .alias("doctor_id"),
        pl.when(i % 37 == 0).then(pl.col("amount") + pl.lit("\u00a0")).otherwise(pl.col("amount"))
        .alias("amount"),
        pl.when(i % 41 == 0).then(pl.lit("")).otherwise(pl.col("pharmacy_id")).alias("pharmacy_id"),
        pl.when(i % 43 == 0).then(pl.lit(" \t")).otherwise(pl.col("diagnosis_code")).alias("diagnosis_code"),
        pl.when(i % 47 == 0).then(pl.lit("")).otherwise(pl.col("service_date")).alias("service_date"),
        pl.when(i % 53 == 0).then(pl.lit("\n1")).otherwise(pl.col("line_no")).alias("line_no"))
    by_claim = [group for _id, group in spoiled.group_by("claim_id", maintain_order=True)]
    return {
        "clean": rows,
        "spoiled": spoiled,
        "text": text,
        "padded text": padded,
        "padded typed": rows.with_columns(
            pl.when(i % 31 == 0).then(pl.col("doctor_id") + pl.lit(" ")).otherwise(pl.col("doctor_id"))
            .alias("doctor_id"),
            pl.when(i % 41 == 0).then(pl.lit("")).otherwise(pl.col("region")).alias("region")),
        "rows of a claim apart": spoiled.sample(fraction=1.0, shuffle=True, seed=1),
        "claims in descending order": pl.concat(by_claim[::-1]),
        "a null claim id": spoiled.with_columns(
            pl.when(i == 11).then(None).otherwise(pl.col("claim_id")).alias("claim_id")),
        "lines out of order": rows.with_columns(pl.col("line_no").reverse().over("claim_id")),
    }


@pytest.fixture(scope="module")
def many_rows(tiny_dataset):
    claims, lines = tiny_dataset.read("claims"), tiny_dataset.read("claim_lines")
    snapshot = {t: tiny_dataset.read(t) for t in ("patients", "doctors", "facilities", "pharmacies", "drugs")}
    return rows_from_frames(claims, lines).head(6000), snapshot


@pytest.mark.parametrize("variant", ["clean", "spoiled", "text", "padded text", "padded typed",
                                     "rows of a claim apart", "claims in descending order",
                                     "a null claim id", "lines out of order"])
def test_looking_at_the_input_first_changes_no_result(many_rows, variant, monkeypatch):
    from polars.testing import assert_frame_equal

    import medfraud.export.inputs as inputs

    rows, snapshot = many_rows
    frame = _spoiled_variants(rows)[variant]
    monkeypatch.setattr(inputs, "_SCAN_FROM", frame.height + 1)
    plain = check_rows(frame, snapshot, first_row=11)
    monkeypatch.setattr(inputs, "_SCAN_FROM", 1)
    scanned = check_rows(frame, snapshot, first_row=11)
    for part in ("claims", "lines", "problems"):
        assert_frame_equal(getattr(scanned, part), getattr(plain, part), check_exact=True)
    if variant not in ("clean", "lines out of order"):
        assert plain.problems.height, "the variant should spoil something"


def test_text_state_finds_whitespace_and_blanks(monkeypatch):
    import medfraud.export.inputs as inputs

    monkeypatch.setattr(inputs, "_SCAN_FROM", 1)
    frame = pl.DataFrame({"plain": ["a", "b c", None], "lead": [" a", "b", "c"],
                          "trail_nbsp": ["a\u00a0", "b", "c"], "non_ascii": ["é", "b", "c"],
                          "blank": ["", "b", None], "spaces": ["  ", "b", "c"]})
    state = inputs._text_state(frame, frame.columns)
    # non-ASCII edges are stripped too (conservatively: stripping them changes nothing)
    assert state.untrimmed == {"lead", "trail_nbsp", "non_ascii", "spaces"}
    assert state.with_blanks == {"blank"}
    monkeypatch.setattr(inputs, "_SCAN_FROM", 10)
    assert inputs._text_state(frame, frame.columns) is None


def test_row_order_marks_repeated_lines_of_adjacent_claims(monkeypatch):
    import medfraud.export.inputs as inputs

    monkeypatch.setattr(inputs, "_SCAN_FROM", 1)
    typed = pl.DataFrame({"claim_id": ["a", "a", "b", "b", "b", "c"],
                          "line_no": [1, 2, 2, 1, 2, None]}, schema_overrides={"line_no": pl.Int32})
    order = inputs._RowOrder.of(typed)
    assert (order.contiguous, order.sorted, order.lines_ascending) == (True, True, False)
    assert order.repeated_line.to_list() == [False, False, True, False, True, False]
    apart = inputs._RowOrder.of(typed.with_columns(pl.Series("claim_id", ["a", "b", "a", "b", "b", "c"])))
    assert not apart.contiguous and apart.repeated_line is None
    descending = inputs._RowOrder.of(typed.reverse().filter(pl.col("claim_id") != "b"))
    assert (descending.contiguous, descending.sorted) == (True, False)
