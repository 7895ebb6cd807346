"""The shard pipeline (background finalise + write) and the dense claim look-ups of Shard."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import polars as pl
import pytest

import data_synth
from data_synth.generate import plan_world, shard_layout
from data_synth.normal import generate_normal, make_shard
from data_synth.typologies import MODULES

generate_module = importlib.import_module("data_synth.generate")
SHARDED = ["shard_claims=1500"]


def test_progress_reports_every_step_in_order(tmp_path):
    config = data_synth.load_config("tiny", seed=7, overrides=SHARDED)
    calls = []
    data_synth.generate(config, tmp_path / "ds", progress=lambda done, total: calls.append((done, total)))
    total = len(shard_layout(config)) + 1
    assert total >= 4
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_background_error_propagates_and_leaves_nothing(tmp_path, monkeypatch):
    real = generate_module.shard_tables

    def failing(shard):
        if shard.index == 1:
            raise RuntimeError("boom in shard 1")
        return real(shard)

    monkeypatch.setattr(generate_module, "shard_tables", failing)
    config = data_synth.load_config("tiny", seed=7, overrides=SHARDED)
    with pytest.raises(RuntimeError, match="boom in shard 1"):
        data_synth.generate(config, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []          # neither the dataset nor its temporary folder


@pytest.fixture(scope="module")
def labelled_shard():
    """Shard 0 of the tiny preset after every typology (labels, copies and removals)."""
    config = data_synth.load_config("tiny", seed=7)
    world = plan_world(config)
    first, count = shard_layout(config)[0]
    shard = make_shard(world, 0, first, count)
    generate_normal(shard)
    for k, (name, module) in enumerate(MODULES.items()):
        module.inject(shard, config.typologies[name], shard.rng(100 + k))
    assert shard.labels
    return shard


def test_honest_mask_matches_isin(labelled_shard):
    shard = labelled_shard
    expected = ~np.isin(shard.claims["claim_no"].to_numpy(), shard.fraud_claim_nos())
    got = shard.honest_mask()
    assert got.dtype == bool and got.shape == (shard.claims.height,)
    np.testing.assert_array_equal(got, expected)
    assert 0 < (~got).sum() < len(got)


def test_first_lines_matches_reference(labelled_shard):
    shard = labelled_shard
    item_ok = np.zeros(len(shard.world.item_price), bool)
    item_ok[: len(shard.world.drug_price)] = True
    rows, nos = shard.first_lines(item_ok)
    claim_no = shard.lines["claim_no"].to_numpy()
    honest = shard.claims["claim_no"].to_numpy()[shard.honest_mask()]
    candidates = np.flatnonzero(item_ok[shard.lines["item"].to_numpy()] & np.isin(claim_no, honest))
    ref_nos, first = np.unique(claim_no[candidates], return_index=True)
    np.testing.assert_array_equal(nos, ref_nos)
    np.testing.assert_array_equal(rows, candidates[first])


def test_claim_columns_gathers_in_request_order_and_rejects_unknown(labelled_shard):
    shard = labelled_shard
    nos = shard.claims["claim_no"].to_numpy()[::-7][:50]
    got = shard.claim_columns(nos, ["pat", "day"])
    expected = pl.DataFrame({"claim_no": nos}).join(shard.claims.select("claim_no", "pat", "day"),
                                                    on="claim_no", how="left", maintain_order="left")
    assert got.equals(expected)
    dropped = shard.claims["claim_no"][0]
    without_first = dataclasses.replace(shard, claims=shard.claims.slice(1))
    with pytest.raises(KeyError, match="not in claims"):
        without_first.claim_columns(np.array([dropped], np.int64), ["day"])
