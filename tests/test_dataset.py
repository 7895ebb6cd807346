from __future__ import annotations

import json

import polars as pl
import pytest

from medfraud.dataset import Dataset, DatasetWriter, write_dataset
from medfraud.schema import TABLES, validate
from tests.contract_tables import valid_tables


def test_write_then_read_round_trips_every_table(tmp_path):
    tables = valid_tables()
    out = write_dataset(tmp_path / "ds", tables, seed=3, config={"a": 1})
    ds = Dataset(out)
    for name, frame in tables.items():
        got = ds.read(name)
        assert got.columns == list(TABLES[name].columns)
        assert got.height == frame.height
    assert ds.manifest["seed"] == 3
    assert ds.manifest["row_counts"]["claims"] == 3
    assert isinstance(ds.scan("claims"), pl.LazyFrame)


def test_writing_is_atomic_on_failure(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out) as writer:
            writer.write("patients", valid_tables()["patients"])
            raise RuntimeError("crash mid-write")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.tmp")]


def test_incomplete_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="never written"):
        with DatasetWriter(tmp_path / "ds") as writer:
            writer.write("patients", valid_tables()["patients"])
            writer.finish(seed=0, config={})
    assert not (tmp_path / "ds").exists()


def test_refuses_non_empty_destination_unless_overwrite(tmp_path):
    out = write_dataset(tmp_path / "ds", valid_tables())
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(out, valid_tables())
    write_dataset(out, valid_tables(), overwrite=True, seed=9)
    assert Dataset(out).manifest["seed"] == 9


def test_same_tables_give_same_digest_and_change_changes_it(tmp_path):
    a = Dataset(write_dataset(tmp_path / "a", valid_tables()))
    b = Dataset(write_dataset(tmp_path / "b", valid_tables()))
    assert a.digest == b.digest
    tables = valid_tables()
    tables["claims"] = tables["claims"].with_columns(pl.col("total_amount") * 1.0001)
    c = Dataset(write_dataset(tmp_path / "c", tables))
    assert c.digest != a.digest


def test_conform_rejects_missing_column(tmp_path):
    tables = valid_tables()
    tables["claims"] = tables["claims"].drop("region")
    with pytest.raises(KeyError, match="region"):
        write_dataset(tmp_path / "ds", tables)


def test_unknown_table_names_the_known_ones(tmp_path):
    ds = Dataset(write_dataset(tmp_path / "ds", valid_tables()))
    with pytest.raises(KeyError, match="claims"):
        ds.scan("claimz")


def test_manifest_is_json_with_contract_fields(tmp_path):
    out = write_dataset(tmp_path / "ds", valid_tables(), seed=1, config={"x": [1, 2]})
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("contract_version", "generator_version", "seed", "config", "config_hash",
                "row_counts", "table_digests", "content_digest"):
        assert key in manifest
    assert validate(out).ok


def test_in_memory_dataset_reads_like_a_folder(tmp_path):
    from medfraud.dataset import InMemoryDataset

    tables = valid_tables()
    mem = InMemoryDataset({"claims": tables["claims"], "patients": tables["patients"].lazy()})
    folder = Dataset(write_dataset(tmp_path / "ds", tables))
    assert mem.read("claims").equals(folder.read("claims"))
    assert mem.has("patients") and not mem.has("drugs")
    with pytest.raises(FileNotFoundError, match="drugs"):
        mem.scan("drugs")
    with pytest.raises(KeyError, match="claimz"):
        InMemoryDataset({"claimz": tables["claims"]})
