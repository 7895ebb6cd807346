"""MLflow "models from code" definition of the medfraud scoring model.

``mlflow.pyfunc.save_model(python_model=<this file>, artifacts={"pipeline": <folder>})``
copies this file into the model; MLflow runs it at load time, so no Python object is
pickled.  The wrapper only converts pandas <-> polars at the boundary and calls
:class:`medfraud.export.pipeline.ScoringPipeline`:

* input: a pandas DataFrame in the scoring input format (one row per claim line, the
  claim's columns repeated; see :mod:`medfraud.export.inputs`);
* output: a pandas DataFrame with one row per claim: claim_id, risk (float64 in [0, 1]),
  band (low | medium | high), reasons (the reason list joined with "; ").

Invalid input raises :class:`medfraud.export.inputs.InputError` naming row, column and reason.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

REASON_SEPARATOR = "; "


class MedfraudScoringModel(PythonModel):
    """pyfunc wrapper around a saved :class:`~medfraud.export.pipeline.ScoringPipeline`."""

    def load_context(self, context) -> None:
        from medfraud.export.pipeline import ScoringPipeline

        self.pipeline = ScoringPipeline.load(context.artifacts["pipeline"])

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import polars as pl

        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"medfraud model input must be a pandas DataFrame, got "
                            f"{type(model_input).__name__}")
        rows = pl.from_pandas(model_input.reset_index(drop=True))
        batch = self.pipeline.check(rows)
        batch.raise_if_bad()
        scores = self.pipeline.score(batch.claims, batch.lines, validate=False)
        return scores.with_columns(pl.col("reasons").list.join(REASON_SEPARATOR)).to_pandas()


mlflow.models.set_model(MedfraudScoringModel())
