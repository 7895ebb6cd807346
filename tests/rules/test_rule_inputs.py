"""Helpers of the rule kinds: run-masked window functions, narrowed lines, _several."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rules_testkit import claim, line, make_tables

from medfraud.rules.inputs import CLAIM_COLUMNS, RuleInputs, cum_max_in_runs, run_starts, shift_in_runs


def _sorted_frame(seed: int, n: int = 2_000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, n // 3, n)
    frame = pl.DataFrame({
        "patient": pl.Series([f"P{k}" for k in keys]).set(pl.Series(rng.random(n) < 0.02), None),
        "condition": rng.choice(["I10", "E11", "J18"], n),
        "day": [date(2024, 1, 1) + timedelta(days=int(d)) for d in rng.integers(-400, 400, n)],
        "days": rng.integers(-5, 90, n).astype(np.int32)})
    return frame.sort("patient", "condition", "day")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_masked_helpers_equal_window_functions(seed):
    frame = _sorted_frame(seed)
    starts = run_starts("patient", "condition")
    got = frame.select(
        shift_in_runs(pl.col("day"), starts).alias("previous"),
        cum_max_in_runs(pl.col("day"), starts).cast(pl.Int32).cast(pl.Date).alias("latest"),
        shift_in_runs(cum_max_in_runs(pl.col("days"), starts), starts).alias("days_before"))
    want = frame.select(
        pl.col("day").shift(1).over("patient", "condition").alias("previous"),
        pl.col("day").cum_max().over("patient", "condition").alias("latest"),
        pl.col("days").cum_max().shift(1).over("patient", "condition").cast(pl.Int64)
        .alias("days_before"))
    assert got.equals(want)
    # Null keys form one run, as in over(): the first null-patient row starts it.
    assert frame.select(run_starts("patient").sum()).item() == frame["patient"].n_unique()


def test_narrowed_lines_equal_filtered_lines():
    tables = make_tables([claim("C1", "2024-03-01"), claim("C2", "2024-04-01")],
                         [line("C1", quantity=2), line("C1", quantity=2),
                          line("C2", quantity=1)])
    lazy = {name: frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            for name, frame in tables.items()}
    inputs = RuleInputs(lazy, None, date(2024, 3, 31))
    keep = pl.col("quantity") > 1
    narrowed = inputs.lines(["drug"], narrow=keep).collect().sort("claim_id", "line_no")
    filtered = inputs.lines(["drug"]).filter(keep).collect().sort("claim_id", "line_no")
    assert narrowed.equals(filtered)
    assert narrowed["claim_id"].to_list() == ["C1", "C1"]  # C2 is after the window end


def test_several_facility_days_equals_n_unique():
    # Over the window's claims in the settings; a null facility counts as one more value.
    rng = np.random.default_rng(3)
    n = 3_000
    claims = pl.DataFrame({
        "claim_id": [f"C{i}" for i in range(n)],
        "doctor_id": rng.choice(["D1", "D2", "D3", "D4"], n),
        "facility_id": pl.Series(rng.choice(["F1", "F2", "F10"], n))
        .set(pl.Series(rng.random(n) < 0.05), None),
        "setting": rng.choice(["outpatient", "inpatient", "pharmacy"], n),
        "service_date": [date(2024, 1, 1) + timedelta(days=int(d))
                         for d in rng.integers(0, 400, n)],
    })
    claims = claims.with_columns(pl.lit(None).alias(c) for c in CLAIM_COLUMNS
                                 if c not in claims.columns)
    window = (date(2024, 3, 1), date(2024, 12, 31))
    inputs = RuleInputs({"claims": claims.lazy()}, *window)
    got = inputs.several_facility_days(("outpatient", "inpatient")).collect()
    want = (claims.filter(pl.col("setting").is_in(["outpatient", "inpatient"]),
                          pl.col("service_date").is_between(*window))
            .group_by("doctor_id", "service_date").agg(pl.col("facility_id").n_unique())
            .filter(pl.col("facility_id") > 1).drop("facility_id"))
    key = ["doctor_id", "service_date"]
    assert_frame_equal(got.sort(key), want.sort(key))
    assert 0 < got.height < claims.select(key).unique().height
    # A partition's inputs read it from the whole window's, computed once for all.
    population = RuleInputs({"claims": claims.lazy()}, *window, memoize=False)
    part = RuleInputs({"claims": claims.head(10).lazy()}, *window, population=population)
    assert_frame_equal(part.several_facility_days(("outpatient", "inpatient")).collect()
                       .sort(key), want.sort(key))
    assert any(k.startswith("window_stat:") for k in population._shared)


def test_drug_sales_combine_over_disjoint_parts():
    from medfraud.rules.engine import DRUG_SALES_KINDS, PATIENT_LOCAL_KINDS
    from medfraud.rules.inputs import combine_drug_sales, drug_sales

    assert not DRUG_SALES_KINDS & PATIENT_LOCAL_KINDS  # only cross-patient kinds need it
    rng = np.random.default_rng(5)
    n = 4_000
    lines = pl.DataFrame({
        "pharmacy_id": pl.Series(rng.choice(["R1", "R2", "R3"], n))
        .set(pl.Series(rng.random(n) < 0.1), None),
        "item_code": rng.choice(["G1", "G2"], n),
        "quantity": rng.integers(1, 30, n).astype(float),
        "service_date": [date(2024, 1, 1) + timedelta(days=int(d))
                         for d in rng.integers(0, 300, n)]})
    whole = drug_sales(lines.lazy()).collect().sort("pharmacy_id", "drug_code")
    parts = [drug_sales(lines.slice(i, 1_000).lazy()).collect() for i in range(0, n, 1_000)]
    combined = combine_drug_sales(parts).sort("pharmacy_id", "drug_code")
    assert combined.equals(whole)
    assert whole.height == 6 and whole["sold"].sum() == lines.drop_nulls("pharmacy_id")[
        "quantity"].sum()


def test_cached_parameter_frames_and_filters():
    from medfraud.rules.inputs import is_in, mapping_frame, value_frame

    # Built once per parameter value, reused by every call (and thread).
    assert is_in("setting", ["a", "b"]) is is_in("setting", ("a", "b"))
    assert is_in("setting", ["a"]) is not is_in("setting", ["a", "b"])
    frame = pl.DataFrame({"setting": ["a", "b", "c", None]})
    assert frame.filter(is_in("setting", {"b": 1, "c": 2}))["setting"].to_list() == ["b", "c"]
    assert frame.filter(is_in("setting", []))["setting"].to_list() == []
    mapping = {"K1": ["x", "y"], "K2": ["z"]}
    got = mapping_frame(mapping, "k", "v")
    assert got is mapping_frame(dict(mapping), "k", "v")
    assert got.collect().rows() == [("K1", "x"), ("K1", "y"), ("K2", "z")]
    assert mapping_frame({}, "k", "v").collect().schema == {"k": pl.String, "v": pl.String}
    caps = value_frame({"drug": 3, "exam": 1.5}, "item_type", "cap", pl.Float64).collect()
    assert caps.rows() == [("drug", 3.0), ("exam", 1.5)]
    assert caps.schema == {"item_type": pl.String, "cap": pl.Float64}


@pytest.mark.parametrize("small", [False, True])
def test_window_claims_and_shared_lines(small):
    tables = make_tables([claim("C1", "2024-02-01"), claim("C2", "2024-03-01"),
                          claim("C3", "2024-04-01")],
                         [line("C1"), line("C2"), line("C2", 2, item_type="exam"), line("C3")])
    lazy = {name: frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            for name, frame in tables.items()}
    inputs = RuleInputs(lazy, date(2024, 2, 15), date(2024, 3, 31), small=small)
    # History before the window stays in claims(); only window_claims() drops it.
    assert sorted(inputs.claims().collect()["claim_id"]) == ["C1", "C2"]
    got = inputs.window_claims(["claim_id", "service_date"]).collect()
    assert got["claim_id"].to_list() == ["C2"] and got.columns == ["claim_id", "service_date"]
    drugs = inputs.lines(["drug"]).collect().sort("claim_id", "line_no")
    assert drugs["claim_id"].to_list() == ["C1", "C2"]  # C3 is after the window end
    assert set(drugs.columns) >= {"item_type", "patient_id", "setting", "service_date"}
    assert inputs.lines(["exam"]).collect()["claim_id"].to_list() == ["C2"]
    assert ("lines_context" in inputs._shared) == small  # materialised for small inputs only


def _lazy(tables):
    return {name: frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            for name, frame in tables.items()}


def _sorted(frame: pl.LazyFrame) -> pl.DataFrame:
    frame = frame.collect()
    return frame.select(sorted(frame.columns)).sort(pl.all())


def test_indexed_lines_equal_joined_lines():
    # Lines of a claim after the window end, of no claim at all and of a drug missing from
    # the catalogue; history before the window start (kept unless ``since`` drops it).
    tables = make_tables(
        [claim("C1", "2024-02-01"), claim("C2", "2024-03-01", patient="P2"),
         claim("C3", "2024-04-01")],
        [line("C1"), line("C1", 2, item_type="exam", item_code="E1"), line("C2"),
         line("C2", 2, item_code="G9"), line("C3"), line("C404")])
    window = (date(2024, 2, 15), date(2024, 3, 31))
    indexed = RuleInputs(_lazy(tables), *window, engine="in-memory", index_lines=True)
    joined = RuleInputs(_lazy(tables), *window, engine="in-memory")
    assert indexed._line_index() is not None
    for since in (None, window[0]):
        for types in (None, ["drug"], ["exam"]):
            assert _sorted(indexed.lines(types, since=since)).equals(
                _sorted(joined.lines(types, since=since)))
        assert _sorted(indexed.drug_lines(since)).equals(_sorted(joined.drug_lines(since)))
        columns = ["claim_id", "patient_id", "item_code", "service_date", "amount"]
        assert _sorted(indexed.drug_lines(since, columns)).equals(
            _sorted(joined.drug_lines(since, columns)))
    assert _sorted(indexed.drug_sales()).equals(_sorted(joined.drug_sales()))
    assert indexed.lines(since=window[0]).collect()["claim_id"].to_list() == ["C2", "C2"]
    assert indexed.drug_lines().collect()["claim_id"].to_list() == ["C1", "C2"]  # not G9


def test_indexed_lines_fall_back_to_joins_on_a_repeated_claim_id():
    tables = make_tables([claim("C1", "2024-03-01"), claim("C2", "2024-03-02")],
                         [line("C1"), line("C2")])
    tables["claims"] = pl.concat([tables["claims"], tables["claims"].head(1)])
    inputs = RuleInputs(_lazy(tables), None, None, engine="in-memory", index_lines=True)
    assert inputs._line_index() is None
    assert sorted(inputs.lines().collect()["claim_id"]) == ["C1", "C1", "C2"]


@pytest.mark.parametrize("window", [None, (date(2024, 4, 17), date(2024, 9, 30))])
def test_window_scoped_line_kinds_equal_general_path(tiny_dataset, monkeypatch, window):
    # Line kinds read only the window's lines (and a refill's history only for keys
    # refilled in the window; a monthly cap the window start's month): same hits as the
    # one-rule-at-a-time general path, which reads every line.
    from medfraud.rules import Rule, RuleCatalogue, evaluate_rules, load_catalogue

    import medfraud.rules.engine as engine

    extra = [
        Rule(id="X01", name_zh="x", name_en="x", kind="frequency_limit", reason_code="X",
             stage="事中", severity=2, result_class="违规", level="claim",
             params={"max_quantity_by_item_type": {"drug": 20.0, "bed": 20.0},
                     "period": "1mo"}),
        Rule(id="X02", name_zh="x", name_en="x", kind="duplicate_charge", reason_code="X",
             stage="事中", severity=2, result_class="违规", level="claim",
             params={"scope": "patient_day", "identical_only": False}),
        Rule(id="X03", name_zh="x", name_en="x", kind="overlapping_refill", reason_code="X",
             stage="事中", severity=2, result_class="违规", level="claim",
             params={"tolerance_days": 0}),
        Rule(id="X04", name_zh="x", name_en="x", kind="quantity_over_days_limit",
             reason_code="X", stage="事中", severity=2, result_class="违规", level="claim",
             params={"emergency_departments": ["emergency", "internal"]}),
    ]
    catalogue = RuleCatalogue(rules=[*load_catalogue().enabled, *extra])
    monkeypatch.setattr(engine, "SMALL_INPUT_CLAIMS", 0)  # the indexed-lines path
    indexed = evaluate_rules(tiny_dataset, catalogue, window=window)
    monkeypatch.setattr(engine, "COLLECT_TOGETHER_BELOW", 0)  # lazy joins, rule by rule
    general = evaluate_rules(tiny_dataset, catalogue, window=window)
    assert indexed.height > 0
    assert set(indexed.filter(pl.col("rule_id").cat.starts_with("X"))["rule_id"]) == {
        "X01", "X02", "X03", "X04"}
    assert indexed.equals(general)


def test_per_claim_amount_does_not_depend_on_line_order():
    """The lines' amounts sum to the same cents in any order (a float sum of 0.1, 0.2 and
    0.025, rounded to cents, gives 0.33 one way round and 0.32 the other)."""
    from medfraud.rules import load_catalogue
    from medfraud.rules.engine import _hit_columns, _layout
    from medfraud.rules.inputs import per_claim

    lines = pl.DataFrame({"claim_id": ["C1"] * 3, "service_date": [date(2024, 1, 1)] * 3,
                          "amount": [0.1, 0.2, 0.025]})
    catalogue = load_catalogue()
    rule = catalogue.rules[0]
    hit_columns = _hit_columns("claim", rule.id, rule.kind, rule.reason_code, 1, "事后", "违规",
                               _layout(catalogue))
    amounts = []
    for order in (lines, lines.reverse()):
        hits = per_claim(order.lazy(), pl.col("amount")).select(hit_columns).collect()
        amounts.append(hits["amount_at_stake"].item())
    assert amounts[0] == amounts[1]
    assert amounts[0] == pytest.approx(0.325, abs=0.0051)
