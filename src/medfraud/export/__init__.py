"""Export: the scoring pipeline as an MLflow pyfunc model; loading; model card.

Public API::

    ScoringPipeline.score(claims, lines) -> DataFrame[claim_id, risk, band, reasons]
    ScoringPipeline.save(dir) / ScoringPipeline.load(dir)
    build_pipeline(dataset, detectors, train, *, train_window, holdout, labels, name, ...)
    export_run(name=..., run_id=... | experiment=..., out=None, uri=None) -> ExportResult
    load_pipeline(path_or_uri) -> (ScoringPipeline, ModelInfo)
    check_rows(rows, snapshot=None) -> CheckedBatch          # the input-format check

Only this package and ``medfraud.tracking`` import mlflow; the MLflow-facing modules
(``model_io``, ``from_run``, ``pyfunc_model``) import it, the others do not.  See
docs/export.md.
"""

from medfraud.export.inputs import INPUT_COLUMNS, CheckedBatch, InputError, check_rows
from medfraud.export.pipeline import ScoringPipeline

__all__ = ["INPUT_COLUMNS", "CheckedBatch", "InputError", "ScoringPipeline", "build_pipeline",
           "check_rows", "export_run", "load_pipeline"]


def __getattr__(name: str):
    # Lazy: importing medfraud.export must not import mlflow or the feature stack.
    if name == "build_pipeline":
        from medfraud.export.build import build_pipeline

        return build_pipeline
    if name == "export_run":
        from medfraud.export.from_run import export_run

        return export_run
    if name == "load_pipeline":
        from medfraud.export.model_io import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'medfraud.export' has no attribute {name!r}")
