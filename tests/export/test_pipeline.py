"""ScoringPipeline: scores, bands, reasons, validation, persistence."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from medfraud.dataset import Dataset
from medfraud.export.inputs import InputError
from medfraud.export.pipeline import ScoringPipeline
from medfraud.labels import Labels
from tests.export.factory import holdout_frames


@pytest.fixture(scope="module")
def holdout(exported):
    return holdout_frames(exported["dataset"])


@pytest.fixture(scope="module")
def scores(pipeline, holdout):
    return pipeline.score(*holdout)


def test_scores_schema_and_ranges(scores, holdout):
    claims, _ = holdout
    assert scores.schema == pl.Schema({"claim_id": pl.String, "risk": pl.Float64, "band": pl.String,
                                       "reasons": pl.List(pl.String)})
    assert scores["claim_id"].to_list() == claims["claim_id"].to_list()
    assert scores["risk"].is_between(0.0, 1.0).all()
    assert set(scores["band"].unique()) <= {"low", "medium", "high"}


def test_bands_follow_risk_and_budget(scores):
    by_band = scores.group_by("band").agg(pl.col("risk").min().alias("lo"), pl.col("risk").max().alias("hi"),
                                         pl.len().alias("n"))
    band = {r["band"]: r for r in by_band.iter_rows(named=True)}
    assert band["high"]["lo"] >= band["medium"]["hi"] >= band["medium"]["lo"] >= band["low"]["hi"]
    # Cut at the training top 1 % / 5 %: the held-out shares are near, not far from, those.
    assert band["high"]["n"] / scores.height < 0.05
    assert (band["high"]["n"] + band["medium"]["n"]) / scores.height < 0.15


def test_fraud_ranks_above_normal_claims(scores, exported):
    labels = Labels.from_dataset(Dataset(exported["dataset"]))
    y = labels.target("claim", scores["claim_id"]).to_numpy()
    risk = scores["risk"].to_numpy()
    assert risk[y == 1].mean() > 3 * risk[y == 0].mean()
    high = scores.filter(pl.col("band") == "high")
    assert high["reasons"].list.len().min() >= 1  # every alert says why


def test_order_of_input_claims_is_kept(pipeline, holdout):
    claims, lines = holdout
    sample = claims.head(60).sample(fraction=1.0, shuffle=True, seed=5)
    out = pipeline.score(sample, lines.join(sample.select("claim_id"), on="claim_id", how="semi"))
    assert out["claim_id"].to_list() == sample["claim_id"].to_list()


def test_scoring_is_deterministic_and_round_trips(pipeline, holdout, tmp_path):
    claims, lines = holdout
    claims = claims.head(200)
    first = pipeline.score(claims, lines)
    assert pipeline.score(claims, lines).equals(first)
    pipeline.save(tmp_path / "copy")
    again = ScoringPipeline.load(tmp_path / "copy").score(claims, lines)
    assert again.equals(first)
    with pytest.raises(FileExistsError):
        pipeline.save(tmp_path / "copy")


def test_unknown_patient_is_an_input_error(pipeline, holdout):
    claims, lines = holdout
    bad = claims.head(2).with_columns(pl.lit("P_NOBODY").alias("patient_id"))
    with pytest.raises(InputError, match="unknown patient_id P_NOBODY"):
        pipeline.score(bad, lines)


def test_claim_without_lines_is_an_input_error(pipeline, holdout):
    claims, lines = holdout
    with pytest.raises(InputError, match="no lines"):
        pipeline.score(claims.head(3), lines.filter(pl.col("claim_id") == claims["claim_id"][0]))


def test_history_claim_can_be_rescored(pipeline, exported):
    ds = Dataset(exported["dataset"])
    claims = ds.scan("claims").filter(pl.col("service_date") < pl.date(2024, 2, 1)).head(5).collect()
    lines = ds.scan("claim_lines").join(claims.lazy().select("claim_id"), on="claim_id", how="semi").collect()
    out = pipeline.score(claims, lines)
    assert out["claim_id"].to_list() == claims["claim_id"].to_list()
    assert np.isfinite(out["risk"].to_numpy()).all()


def test_single_claim_scores_like_in_a_batch_of_unrelated_claims(pipeline, holdout):
    claims, lines = holdout
    one = claims.head(1)
    others = claims.filter((pl.col("patient_id") != one["patient_id"][0])
                           & (pl.col("doctor_id") != one["doctor_id"][0])).head(30)
    alone = pipeline.score(one, lines)
    together = pipeline.score(pl.concat([others, one]), lines).filter(pl.col("claim_id") == one["claim_id"][0])
    assert together["risk"][0] == pytest.approx(alone["risk"][0], abs=1e-12)


@pytest.mark.parametrize("when", ["holdout", "history"])
def test_rules_on_the_batch_history_give_the_full_history_hits(pipeline, holdout, exported, when):
    """Pruning the rule history to the batch's patients, doctors and DRG diagnoses is exact."""
    from medfraud.rules import evaluate_tables

    if when == "holdout":
        claims, lines = holdout
    else:  # re-scoring claims that are also in the snapshot's history
        ds = Dataset(exported["dataset"])
        claims = ds.scan("claims").filter(pl.col("service_date").is_between(
            pl.date(2024, 3, 1), pl.date(2024, 3, 31))).collect()
        lines = ds.read("claim_lines").join(claims.select("claim_id"), on="claim_id", how="semi")

    def hits(batch: pl.DataFrame, prune: bool) -> pl.DataFrame:
        batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
        window = (batch["service_date"].min(), batch["service_date"].max())
        out = evaluate_tables(pipeline.rule_tables(batch, batch_lines, prune=prune), pipeline.catalogue,
                              window, missing="skip")
        return out.join(batch.select(pl.col("claim_id").alias("id")), on="id", how="semi").sort("rule_id", "id")

    # A small batch (few patients and doctors, so most history is pruned) holding hit claims
    # and DRG stays (whose diagnosis's other stays come in without lines).
    hit_ids = hits(claims, prune=False)["id"].unique(maintain_order=True).head(3)
    stays = claims.filter(pl.col("drg_weight").is_not_null()
                          & ~pl.col("claim_id").is_in(hit_ids.implode())).head(2)
    assert stays.height == 2
    batch = pl.concat([claims.filter(pl.col("claim_id").is_in(hit_ids.implode())), stays,
                       claims.filter(~pl.col("claim_id").is_in(pl.concat([hit_ids, stays["claim_id"]])
                                                                .implode())).head(2)])
    kept = pipeline.rule_tables(batch, lines, prune=True)["claims"].select(pl.len()).collect().item()
    assert kept < pipeline.context["claims"].height / 2
    full = hits(batch, prune=False)
    assert full.height >= 3
    assert hits(batch, prune=True).equals(full)


@pytest.mark.parametrize("when", ["holdout", "history"])
def test_feature_tables_give_the_whole_snapshot_claim_features(pipeline, holdout, exported, when):
    """A batch's claim features from its own slice of the snapshot (feature_tables: no
    snapshot claim of its dates for a held-out batch, some for claims re-scored from the
    history) equal those computed with the whole snapshot beside it."""
    from medfraud.dataset import InMemoryDataset
    from medfraud.features import build_features

    if when == "holdout":
        claims, lines = holdout
    else:
        ds = Dataset(exported["dataset"])
        claims = ds.scan("claims").filter(pl.col("service_date").is_between(
            pl.date(2024, 3, 1), pl.date(2024, 3, 31))).collect()
        lines = ds.read("claim_lines")
    batch = claims.head(40)
    batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
    window = (batch["service_date"].min(), batch["service_date"].max())
    ids = batch.select("claim_id")
    whole = dict(pipeline.context)
    whole["claims"] = pl.concat([pipeline.context["claims"].join(ids, on="claim_id", how="anti"),
                                 batch], how="vertical_relaxed")
    whole["claim_lines"] = pl.concat([pipeline.context["claim_lines"].join(ids, on="claim_id",
                                                                           how="anti"),
                                      batch_lines], how="vertical_relaxed")

    def claim_features(tables) -> pl.DataFrame:
        features = build_features(InMemoryDataset({t: f.lazy() for t, f in tables.items()}),
                                  window, levels=("claim",), params=pipeline.feature_params,
                                  claim_reference=pipeline.claim_reference)
        return features.frame("claim").join(ids, on="claim_id", how="semi").sort("claim_id")

    sliced = pipeline.feature_tables(batch, batch_lines)
    assert (sliced["claims"].select(pl.len()).collect().item() > batch.height) == (when == "history")
    got = claim_features({t: f.collect() for t, f in sliced.items()})
    assert got.height == batch.height
    from polars.testing import assert_frame_equal

    assert_frame_equal(got, claim_features(whole), check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_pruned_history_keeps_the_drg_statistics_of_the_batch_diagnoses(pipeline, holdout):
    """The stays of a batch's DRG diagnoses come in without lines: a DRG rule loose enough to
    fire on the small test dataset hits the same claims as on the full history."""
    from medfraud.rules import evaluate_tables
    from medfraud.rules.catalogue import RuleCatalogue

    doc = pipeline.catalogue.model_dump()
    drg_rules = [r for r in doc["rules"] if r["kind"] == "drg_upcoding"]
    assert drg_rules
    for rule in drg_rules:
        rule["params"].update(quantile=0.5, ratio=0.5, min_cases=5)  # all stays weigh alike
    catalogue = RuleCatalogue.model_validate({**doc, "rules": drg_rules})
    claims, lines = holdout
    stays = claims.filter(pl.col("drg_weight").is_not_null())

    def hits(batch: pl.DataFrame, prune: bool) -> pl.DataFrame:
        batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
        window = (batch["service_date"].min(), batch["service_date"].max())
        out = evaluate_tables(pipeline.rule_tables(batch, batch_lines, prune=prune), catalogue,
                              window, missing="skip")
        return out.join(batch.select(pl.col("claim_id").alias("id")), on="id", how="semi").sort("id")

    batch = stays.head(2)  # fewer stays than min_cases: the history must bring their peers
    full = hits(batch, prune=False)
    assert full.height > 0
    assert hits(batch, prune=True).equals(full)


def test_sorted_index_finds_the_rows_a_filter_finds():
    from datetime import date

    from medfraud.export.pipeline import _SortedIndex

    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"key": rng.choice(["a", "b", "c", "d", "e"], 200).tolist(),
                          "day": [date(2024, 1, 1 + int(d)) for d in rng.integers(0, 28, 200)],
                          "row": np.arange(200)})
    by_key, by_day = _SortedIndex(frame, "key"), _SortedIndex(frame, "day", drop=True)
    for values in (["b", "d"], ["a", "a", None, "zz"], []):
        got = by_key.rows_of(pl.Series(values, dtype=pl.String))
        expected = frame.filter(pl.col("key").is_in(pl.Series(values, dtype=pl.String).implode()))
        assert sorted(got["row"].to_list()) == sorted(expected["row"].to_list())
    window = (date(2024, 1, 5), date(2024, 1, 9))
    got = by_day.between(window)
    assert "day" not in got.columns
    assert sorted(got["row"].to_list()) == frame.filter(
        pl.col("day").is_between(*window))["row"].sort().to_list()
    assert by_day.between((date(2025, 1, 1), date(2025, 2, 1))).height == 0


def test_sorted_index_few_and_many_values_find_the_same_rows(monkeypatch):
    """rows_of searches few string values with numpy and many with polars: both give the
    filter's rows in the same order, for non-ASCII keys (byte order = code point order)
    and for keys holding nulls (which only polars can search)."""
    from medfraud.export import pipeline as module

    rng = np.random.default_rng(5)
    alphabet = ["a", "b", "z", "é", "医", "保", "😀", "A", "0", " "]
    keys = ["".join(rng.choice(alphabet, int(n))) for n in rng.integers(1, 4, 500)]
    for with_nulls in (False, True):
        column = [None if with_nulls and i % 50 == 0 else k for i, k in enumerate(keys)]
        frame = pl.DataFrame({"key": column, "row": np.arange(500)})
        index = module._SortedIndex(frame, "key")
        values = pl.Series([*rng.choice(keys, 40).tolist(), "nope", None], dtype=pl.String)
        expected = frame.filter(pl.col("key").is_in(values.implode()))["row"].sort().to_list()
        few = index.rows_of(values)
        monkeypatch.setattr(module, "FEW_KEYS", 0)
        many = index.rows_of(values)
        monkeypatch.undo()
        assert few.equals(many)
        assert sorted(few["row"].to_list()) == expected
        assert index.holds_any(values) and not index.holds_any(pl.Series(["nope", None]))


def test_warm_builds_the_lazy_scoring_state(exported, holdout):
    from medfraud.export.model_io import load_pipeline

    fresh, _info = load_pipeline(exported["model_dir"])
    lightgbm = next(p.detector for p in fresh.detectors if p.family == "lightgbm")
    assert getattr(lightgbm, "_explainer", None) is None and fresh._claim_reference is None
    fresh.warm()
    assert lightgbm._explainer is not None and fresh._claim_reference is not None
    claims, lines = holdout
    assert fresh.score(claims, lines).equals(load_pipeline(exported["model_dir"])[0].score(claims, lines))


def _conflicting_batches(claims: pl.DataFrame, n: int = 6) -> list[tuple[pl.DataFrame, dict]]:
    """Batches of claims that share a patient or a doctor-day (at other places) with
    another claim of the batch, with lanes that separate them (greedy, as the REST batcher
    does), plus a few unrelated claims in lane 0."""
    shared = (claims.with_columns(pl.len().over("patient_id").alias("by_patient"),
                                  pl.struct("facility_id", "setting").n_unique()
                                  .over("doctor_id", "service_date").alias("places"))
              .filter((pl.col("by_patient") > 1) | (pl.col("places") > 1)))
    groups = (shared.group_by("patient_id", maintain_order=True).agg("claim_id")
              .get_column("claim_id").to_list()[:n])
    batches = []
    for k, group in enumerate(groups):
        others = claims.filter(~pl.col("claim_id").is_in(shared["claim_id"].implode())) \
            .slice(5 * k, 5)
        batch = pl.concat([claims.filter(pl.col("claim_id").is_in(group[:3])), others])
        lanes, keys = {}, []
        for row in batch.iter_rows(named=True):
            day, place = (row["doctor_id"], row["service_date"]), (row["facility_id"], row["setting"])
            lane = next((i for i, (patients, days) in enumerate(keys)
                         if row["patient_id"] not in patients and days.get(day, place) == place),
                        None)
            if lane is None:
                keys.append((set(), {}))
                lane = len(keys) - 1
            keys[lane][0].add(row["patient_id"])
            keys[lane][1][day] = place
            lanes[row["claim_id"]] = lane
        if len(set(lanes.values())) > 1:
            batches.append((batch, lanes))
    return batches


def test_lanes_score_each_lane_as_if_alone(pipeline, holdout):
    """Claims sharing a patient or a doctor-day, put in separate lanes of one call, score
    exactly as each lane does alone; in one lane they would see each other."""
    claims, lines = holdout
    batches = _conflicting_batches(claims)
    assert len(batches) >= 3
    coupled = 0
    for batch, lanes in batches:
        batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
        together = pipeline.score(batch, batch_lines, lanes=lanes)
        assert together["claim_id"].to_list() == batch["claim_id"].to_list()
        one_lane = pipeline.score(batch, batch_lines)
        for lane in set(lanes.values()):
            ids = pl.Series([c for c, k in lanes.items() if k == lane]).implode()
            part = batch.filter(pl.col("claim_id").is_in(ids))
            alone = pipeline.score(part, batch_lines.filter(pl.col("claim_id").is_in(ids)))
            got = together.join(alone, on="claim_id", suffix="_alone")
            assert got.height == part.height
            assert (got["risk"] - got["risk_alone"]).abs().max() <= 1e-12
            assert got["reasons"].to_list() == got["reasons_alone"].to_list()
            mixed = one_lane.join(alone, on="claim_id", suffix="_alone")
            coupled += int((mixed["risk"] - mixed["risk_alone"]).abs().max() > 1e-12)
    assert coupled > 0  # without lanes some claims do see each other


def test_lane_copies_count_each_drg_stay_once(pipeline, holdout):
    """Lane copies repeat a patient's history; the DRG reference population of the laned
    call holds each original stay once, the same stays as the lanes' own populations."""
    from medfraud.rules.inputs import COPY_SEPARATOR, RuleInputs

    claims, lines = holdout
    for batch, lanes in _conflicting_batches(claims, n=12):
        lane = pipeline._lane_numbers(batch, lanes)
        batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
        tables = pipeline.lane_tables(lambda c, l: pipeline.rule_tables(c, l, prune=True),
                                      batch, batch_lines, lane)
        end = batch["service_date"].max()

        def stays(tables, copies):
            return RuleInputs(tables, end=end, claim_copies=copies).drg_reference_stays(
                ["claim_id", "drg_weight"]).filter(pl.col("drg_weight").is_not_null()).collect()

        with_copies, without = stays(tables, True), stays(tables, False)
        if with_copies.height == without.height:
            continue  # no stay in the copied history
        origins = with_copies["claim_id"].str.split(COPY_SEPARATOR).list.first()
        assert origins.n_unique() == with_copies.height
        alone = set()
        for k in lane.unique().to_list():
            part = batch.filter(lane == k)
            part_lines = batch_lines.join(part.select("claim_id"), on="claim_id", how="semi")
            alone |= set(stays(pipeline.rule_tables(part, part_lines, prune=True),
                               False)["claim_id"].to_list())
        assert set(origins.to_list()) == alone
        # A DRG rule loose enough to fire on the small dataset hits each lane's stays as
        # it does with the lane alone.
        from medfraud.rules import evaluate_tables
        from medfraud.rules.catalogue import RuleCatalogue

        doc = pipeline.catalogue.model_dump()
        drg_rules = [r for r in doc["rules"] if r["kind"] == "drg_upcoding"]
        for rule in drg_rules:
            rule["params"].update(quantile=0.5, ratio=0.5, min_cases=5)
        loose = RuleCatalogue.model_validate({**doc, "rules": drg_rules})
        window = (batch["service_date"].min(), end)
        ids = batch.select(pl.col("claim_id").alias("id"))
        laned = evaluate_tables(tables, loose, window, claim_copies=True).join(ids, on="id",
                                                                               how="semi")
        one_by_one = pl.concat([
            evaluate_tables(pipeline.rule_tables(batch.filter(lane == k), batch_lines, prune=True),
                            loose, window).join(ids, on="id", how="semi")
            for k in lane.unique().to_list()])
        assert laned.height > 0
        assert laned.sort("id").equals(one_by_one.sort("id"))
        return
    pytest.fail("no conflicting batch copies a DRG stay")


def test_lanes_need_a_history_scoped_catalogue_and_plain_ids(pipeline, holdout):
    claims, lines = holdout
    batch, lanes = _conflicting_batches(claims, n=1)[0]
    batch_lines = lines.join(batch.select("claim_id"), on="claim_id", how="semi")
    assert pipeline.isolates_lanes
    from medfraud.rules.inputs import COPY_SEPARATOR

    odd = batch.with_columns(pl.col("claim_id") + COPY_SEPARATOR)
    odd_lines = batch_lines.with_columns(pl.col("claim_id") + COPY_SEPARATOR)
    with pytest.raises(ValueError, match="separator"):
        pipeline.score(odd, odd_lines, validate=False,
                       lanes={c + COPY_SEPARATOR: k for c, k in lanes.items()})
    # One lane (all zero): no copies, the plain path.
    plain = pipeline.score(batch, batch_lines)
    assert pipeline.score(batch, batch_lines, lanes={c: 0 for c in lanes}).equals(plain)
