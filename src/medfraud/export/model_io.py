"""MLflow side of the export: save the pyfunc model, register it, resolve and load it.

The model folder (``models/<name>/``) is a standard MLflow model written with "models from
code": ``python_model`` is the file :mod:`medfraud.export.pyfunc_model` and the whole
:class:`~medfraud.export.pipeline.ScoringPipeline` folder is the artifact ``pipeline``
(``artifacts/pipeline/`` inside the model).  Nothing is pickled.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from medfraud.config import DEFAULT_TRACKING_URI
from medfraud.export.model_card import card_markdown
from medfraud.export.pipeline import ScoringPipeline

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
CHAMPION = "champion"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


@dataclass
class ModelInfo:
    """Where a loaded model came from (shown by the REST ``/version``).

    Attributes
    ----------
    name : model name.
    version : registry version, or None for a model loaded from a folder.
    uri : what the caller asked for (path or ``models:/...``).
    path : local model folder.
    data_digest : digest of the training dataset.
    """

    name: str
    version: str | None
    uri: str
    path: Path
    data_digest: str


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def pip_requirements() -> list[str]:
    """medfraud's runtime dependencies pinned to the installed versions (medfraud excluded).

    The scoring model runs medfraud's own code, so a downstream environment installs the
    medfraud wheel; these pins reproduce the library versions the model was exported with.
    """
    requirements = importlib.metadata.requires("medfraud") or []
    pins = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        match = _REQ_NAME.match(requirement)
        if not match:
            continue
        name = match.group(1)
        marker = requirement.split(";", 1)[1].strip() if ";" in requirement else ""
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}" + (f"; {marker}" if marker else ""))
        except importlib.metadata.PackageNotFoundError:
            pins.append(requirement.split(";")[0].strip())
    return sorted(pins, key=str.lower)


def input_example(pipeline: ScoringPipeline, claims: pl.DataFrame, lines: pl.DataFrame,
                  max_claims: int = 4) -> pl.DataFrame:
    """A few input-format rows covering each care setting present (for signature inference)."""
    from medfraud.export.inputs import rows_from_frames

    chosen = claims.unique("setting", keep="first", maintain_order=True).head(max_claims)
    rows = pyfunc_rows(rows_from_frames(chosen, lines))
    pipeline.check(rows).raise_if_bad()
    return rows


def pyfunc_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Input-format rows with dates as ISO-8601 strings, the pyfunc signature's form.

    Strings travel unchanged through CSV, JSON (MLflow serving) and pandas, where native
    date types do not (MLflow refuses to convert a string column to datetime); line_no is
    int64 and days_supply float64, as pandas reads them.
    """
    return rows.with_columns(
        # pandas' default integer is int64 and a nullable integer becomes float64 (NaN).
        pl.col("line_no").cast(pl.Int64), pl.col("days_supply").cast(pl.Float64),
        *[pl.col(c).dt.strftime("%Y-%m-%d") for c, t in rows.schema.items() if t == pl.Date],
        *[pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S") for c, t in rows.schema.items()
          if isinstance(t, pl.Datetime)])


def save_model(pipeline: ScoringPipeline, out: str | Path, example: pl.DataFrame, *,
               overwrite: bool = False) -> Path:
    """Write ``pipeline`` as an MLflow pyfunc model folder at ``out`` (atomically).

    Parameters
    ----------
    pipeline : the scoring pipeline (its ``card`` becomes MODEL_CARD.md / model_card.json).
    out : destination folder; must not exist unless ``overwrite``.
    example : input-format rows; the input example and, with the pipeline's output on
        them, the signature (``mlflow.models.infer_signature``).
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipeline_dir = pipeline.save(staging / "pipeline")
        batch = pipeline.check(example)
        scores = pipeline.score(batch.claims, batch.lines, validate=False)
        output = scores.with_columns(pl.col("reasons").list.join("; ")).to_pandas()
        example_pd = example.to_pandas()
        signature = infer_signature(example_pd, output)
        model_dir = staging / "model"
        mlflow.pyfunc.save_model(
            path=str(model_dir), python_model=str(PYFUNC_CODE),
            artifacts={"pipeline": str(pipeline_dir)}, signature=signature,
            input_example=example_pd, pip_requirements=pip_requirements(),
            metadata={"medfraud_model_name": pipeline.name, "data_digest": pipeline.data_digest})
        if pipeline.card:
            (model_dir / "model_card.json").write_text(
                json.dumps(pipeline.card, indent=2, ensure_ascii=False), encoding="utf-8")
            (model_dir / "MODEL_CARD.md").write_text(card_markdown(pipeline.card), encoding="utf-8")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, trash)
            os.replace(model_dir, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(model_dir, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def register_model(model_dir: str | Path, name: str, *, uri: str | None = None,
                   alias: str = CHAMPION, tags: dict[str, str] | None = None) -> str:
    """Register the model folder as a new version of ``name`` and point ``alias`` at it.

    Returns
    -------
    The new version number (string).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    resolved = tracking_uri(uri)
    client = MlflowClient(tracking_uri=resolved, registry_uri=resolved)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="medfraud claim scoring model")
    source = Path(model_dir).resolve().as_uri()
    run_id = (tags or {}).get("source_run_id")
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags or {})
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def resolve_model(path_or_uri: str | Path) -> tuple[Path, str | None]:
    """Local folder of a model given as a folder or an MLflow URI (``models:/NAME@alias``,
    ``models:/NAME/3``, ``runs:/…``); returns (folder, registry version or None)."""
    text = str(path_or_uri)
    if "://" not in text and not text.startswith(("models:", "runs:")):
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"model {text} does not exist (give a model folder or a "
                                    "models:/NAME@champion URI)")
        return path, None
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    resolved = tracking_uri()
    version = None
    match = re.match(r"^models:/([^/@]+)(?:@([^/]+)|/(\d+))$", text)
    if match:
        name, alias, number = match.groups()
        client = MlflowClient(tracking_uri=resolved, registry_uri=resolved)
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        version = str(mv.version)
        if mv.source and mv.source.startswith("file://"):
            from urllib.parse import unquote, urlparse

            local = Path(unquote(urlparse(mv.source).path))
            if local.is_dir():  # a registered local folder: use it in place, no copy
                return local, version
    local = mlflow.artifacts.download_artifacts(artifact_uri=text, tracking_uri=resolved)
    return Path(local), version


def pipeline_folder(model_dir: Path) -> Path:
    """The pipeline folder inside a model folder (or the folder itself if it is one)."""
    if (model_dir / "pipeline.json").is_file():
        return model_dir
    candidate = model_dir / "artifacts" / "pipeline"
    if (candidate / "pipeline.json").is_file():
        return candidate
    raise FileNotFoundError(f"{model_dir} is neither a medfraud model folder (MLmodel + "
                            "artifacts/pipeline) nor a pipeline folder (pipeline.json)")


def load_pipeline(path_or_uri: str | Path) -> tuple[ScoringPipeline, ModelInfo]:
    """Load the :class:`ScoringPipeline` of a model folder or MLflow model URI, without pyfunc.

    Batch scoring and the REST service use this: they call the pipeline directly (polars
    in and out) instead of going through the pandas pyfunc boundary.
    """
    model_dir, version = resolve_model(path_or_uri)
    pipeline = ScoringPipeline.load(pipeline_folder(model_dir))
    return pipeline, ModelInfo(pipeline.name, version, str(path_or_uri), model_dir,
                               pipeline.data_digest)


def model_summary(info: ModelInfo, pipeline: ScoringPipeline) -> dict[str, Any]:
    """What ``/version`` returns."""
    from medfraud import __version__

    return {"model": info.name, "version": info.version, "uri": info.uri,
            "data_digest": info.data_digest, "medfraud": __version__,
            "detectors": [f"{p.name}@{p.level}" for p in pipeline.detectors],
            "created_at": pipeline.card.get("created_at")}
