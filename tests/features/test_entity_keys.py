"""Entity levels group by integer keys of the ids (entity_keys): the hash path, the string
fallback on a collision (forced here) and a mix of both give the same frames."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.features.entities as entities_module
from medfraud.features import build_features
from medfraud.features.entities import KEY_COLUMN, entity_keys
from medfraud.schema import LEVEL_ID

_LEVELS = ("patient", "doctor", "pharmacy", "facility")


def _entity_frames(dataset, **kwargs):
    frames = build_features(dataset, levels=_LEVELS, **kwargs).frames
    return {level: frames[level] for level in _LEVELS}


def _sorted_hashes(dataset, level: str) -> list[int]:
    ids = dataset.scan("claims").select(LEVEL_ID[level]).drop_nulls().unique().collect()
    return sorted(ids.to_series().hash(entities_module.PARTITION_SEED).to_list())


@pytest.mark.parametrize("collide", [("patient", "doctor", "pharmacy", "facility"),
                                     ("patient", "pharmacy")])
def test_string_fallback_gives_the_same_entity_frames(toy_dataset, monkeypatch, collide):
    hashed = _entity_frames(toy_dataset)
    # Ids of the levels in ``collide`` are declared colliding (their keys become the ids).
    colliding = [_sorted_hashes(toy_dataset, level) for level in collide]
    fell_back = set()

    def all_distinct(hashes: pl.Series) -> bool:
        found = sorted(hashes.to_list())
        if found in colliding:
            fell_back.add(colliding.index(found))
            return False
        return True

    monkeypatch.setattr(entities_module, "_all_distinct", all_distinct)
    fallback = _entity_frames(toy_dataset)
    # (The patient level keys its own claims, the other levels the whole window's.)
    assert fell_back == set(range(len(collide)))
    for level in _LEVELS:
        assert_frame_equal(hashed[level], fallback[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


def test_fallback_on_tiny_with_window(tiny_dataset, monkeypatch):
    window = {"window": (date(2024, 4, 1), date(2024, 9, 30)),
              "reference_window": (date(2024, 1, 1), date(2024, 6, 30))}
    hashed = _entity_frames(tiny_dataset, **window)
    monkeypatch.setattr(entities_module, "_all_distinct", lambda hashes: False)
    fallback = _entity_frames(tiny_dataset, **window)
    for level in _LEVELS:
        assert_frame_equal(hashed[level], fallback[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


def test_entity_keys_null_ids_have_null_keys():
    claims = pl.DataFrame({"patient_id": ["p1", "p2", "p1"], "doctor_id": ["d1", None, "d1"],
                           "pharmacy_id": [None, None, "h1"], "facility_id": ["f1", "f1", "f2"]})
    keyed, ids = entity_keys(claims)
    keyed = keyed.collect()
    for level, key in KEY_COLUMN.items():
        id_col = LEVEL_ID[level]
        assert keyed.get_column(key).is_null().to_list() == \
            keyed.get_column(id_col).is_null().to_list()
        # The (key, id) table maps every key of the claims back to its id.
        back = keyed.select(key, id_col).drop_nulls().join(ids[level], on=key, how="left",
                                                           suffix="_mapped")
        assert back.get_column(id_col).to_list() == back.get_column(f"{id_col}_mapped").to_list()
