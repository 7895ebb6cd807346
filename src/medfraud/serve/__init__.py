"""Scoring with an exported model: batch files (:mod:`medfraud.serve.batch`) and the REST
service (:mod:`medfraud.serve.app`).

Public API::

    score_file(pipeline, input_path, output_path, *, chunk_size=200_000, max_bad_share=0.01)
        -> BatchReport
    create_app(pipeline, info, *, max_body_bytes=1_000_000, max_claims=100) -> FastAPI

Both take a :class:`medfraud.export.pipeline.ScoringPipeline` loaded with
:func:`medfraud.export.model_io.load_pipeline`; neither imports mlflow.  See docs/export.md.
"""
