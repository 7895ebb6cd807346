"""The exported MLflow model: layout, registry, parity with the in-process pipeline, isolation."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import polars as pl
import pytest

from medfraud.dataset import Dataset
from medfraud.export.inputs import InputError, rows_from_frames
from medfraud.export.model_io import pip_requirements, pyfunc_rows
from tests.export.factory import holdout_frames


def test_model_folder_layout(exported):
    model = exported["model_dir"]
    mlmodel = (model / "MLmodel").read_text()
    assert "python_function" in mlmodel and "pyfunc_model.py" in mlmodel
    assert not [p for p in model.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    pipeline = model / "artifacts" / "pipeline"
    for rel in ("pipeline.json", "rules.yaml", "calibration.json", "bands.json",
                "context/patients.parquet", "context/claims.parquet", "context/duty_roster.parquet",
                "profiles/iforest_doctor.parquet", "detectors/lightgbm.model.txt"):
        assert (pipeline / rel).is_file(), rel
    # LightGBM travels as its own text format.
    assert (pipeline / "detectors/lightgbm.model.txt").read_text().startswith("tree")
    assert (model / "input_example.json").is_file()


def test_model_card(exported):
    card = json.loads((exported["model_dir"] / "model_card.json").read_text())
    assert card["data"]["digest"] == Dataset(exported["dataset"]).digest
    assert card["run"]["run_id"] == exported["run_id"]
    assert set(card["typologies_covered"]) == {"over_prescription", "duplicate_billing", "doctor_absent"}
    assert 0.0 <= card["metrics"]["holdout"]["auprc"] <= 1.0
    assert card["metrics"]["run"]  # metrics logged by the run's detectors
    assert card["bands"]["high_share"] == 0.01 and card["bands"]["medium_share"] == 0.05
    assert card["known_limits"]
    text = (exported["model_dir"] / "MODEL_CARD.md").read_text()
    assert card["data"]["digest"] in text and "## Known limits" in text


def test_requirements_pin_the_wheel_dependencies(exported):
    reqs = [line.strip() for line in (exported["model_dir"] / "requirements.txt").read_text().splitlines()
            if line.strip()]
    assert f"polars=={pl.__version__}" in reqs
    assert not any(r.startswith("medfraud") for r in reqs)
    assert 'uvloop==' in " ".join(reqs) and all("; sys_platform" in r for r in reqs if r.startswith("uvloop"))
    assert sorted(reqs, key=str.lower) == [r for r in pip_requirements() if r in reqs]


def test_registered_as_champion(exported, monkeypatch):
    from mlflow.tracking import MlflowClient

    from medfraud.export.model_io import load_pipeline

    client = MlflowClient(tracking_uri=exported["uri"], registry_uri=exported["uri"])
    version = client.get_model_version_by_alias(exported["name"], "champion")
    assert str(version.version) == exported["version"]
    assert version.tags["source_run_id"] == exported["run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported["uri"])
    pipeline, info = load_pipeline(f"models:/{exported['name']}@champion")
    assert info.version == exported["version"] and info.name == exported["name"]
    assert info.data_digest == Dataset(exported["dataset"]).digest


def test_pyfunc_scores_equal_in_process_pipeline(exported):
    import mlflow.pyfunc

    claims, lines = holdout_frames(exported["dataset"])
    reference = pl.read_parquet(exported["in_process_scores"])
    model = mlflow.pyfunc.load_model(str(exported["model_dir"]))
    out = model.predict(pyfunc_rows(rows_from_frames(claims, lines)).to_pandas())
    assert list(out.columns) == ["claim_id", "risk", "band", "reasons"]
    assert out["claim_id"].tolist() == reference["claim_id"].to_list()
    assert np.max(np.abs(out["risk"].to_numpy() - reference["risk"].to_numpy())) <= 1e-6
    assert out["band"].tolist() == reference["band"].to_list()
    assert out["reasons"].tolist() == reference["reasons"].list.join("; ").to_list()
    assert set(out["band"]) <= {"low", "medium", "high"} and "high" in set(out["band"])


def test_pyfunc_rejects_bad_rows_naming_column(exported):
    import mlflow.pyfunc

    claims, lines = holdout_frames(exported["dataset"])
    rows = pyfunc_rows(rows_from_frames(claims.head(3), lines)).to_pandas()
    rows.loc[1, "amount"] = -10.0
    model = mlflow.pyfunc.load_model(str(exported["model_dir"]))
    with pytest.raises(InputError, match=r"row 2 .*column amount: negative amount"):
        model.predict(rows)


def test_model_loads_in_a_process_that_never_imports_medfraud(exported, tmp_path):
    claims, lines = holdout_frames(exported["dataset"])
    claims = claims.head(40)
    rows = pyfunc_rows(rows_from_frames(claims, lines))
    (tmp_path / "rows.json").write_text(rows.to_pandas().to_json(orient="split", index=False))
    script = textwrap.dedent(f"""
        import io, json, sys
        import mlflow
        import pandas as pd
        frame = pd.read_json(io.StringIO(open({str(tmp_path / 'rows.json')!r}).read()),
                             orient="split", convert_dates=False, dtype=False)
        model = mlflow.pyfunc.load_model({str(exported['model_dir'])!r})
        out = model.predict(frame)
        sys.stdout.write(out.to_json(orient="records"))
    """)
    assert "medfraud" not in script.replace(str(exported["model_dir"]), "")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.DataFrame(json.loads(done.stdout))
    reference = pl.read_parquet(exported["in_process_scores"]).head(40)
    assert out["claim_id"].tolist() == reference["claim_id"].to_list()
    assert np.max(np.abs(out["risk"].to_numpy() - reference["risk"].to_numpy())) <= 1e-6


def test_export_errors_name_the_problem(exported, tmp_path):
    from medfraud.export.from_run import ExportError, export_run

    with pytest.raises(ExportError, match="exactly one of"):
        export_run(name="x", uri=exported["uri"], out=tmp_path / "m")
    with pytest.raises(ExportError, match="not found"):
        export_run(name="x", run_id="0" * 32, uri=exported["uri"], out=tmp_path / "m")
    with pytest.raises(ExportError, match="no MLflow experiment"):
        export_run(name="x", experiment="no_such_experiment", uri=exported["uri"], out=tmp_path / "m")
    with pytest.raises(ExportError, match="not detectors of run"):
        export_run(name="x", run_id=exported["run_id"], uri=exported["uri"], out=tmp_path / "m",
                   detectors=["nope"])
    assert not (tmp_path / "m").exists()


def test_export_refuses_to_overwrite(exported):
    from medfraud.export.model_io import save_model

    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(None, exported["model_dir"], pl.DataFrame())
