"""Scale-out past one process with Ray (the optional ``ray`` extra: ``pip install medfraud[ray]``).

One process is the default everywhere.  ``medfraud run EXPERIMENT --backend ray`` runs the
sweep points of an experiment as Ray tasks, each logging its detectors' MLflow runs under
the one parent run (see :func:`medfraud.experiment.run_experiment`);
``medfraud generate --backend ray`` simulates the generator's shards as Ray tasks (see
:func:`data_synth.generate`); ``medfraud score --backend ray`` scores a batch's chunks as
Ray tasks (see :func:`medfraud.serve.batch.score_file`).  Each gives the output one process
gives.  Ray is imported only when a Ray backend is asked for.
"""

from medfraud.distributed.ray_backend import (
    BACKENDS,
    check_backend,
    imap_tasks,
    init_ray,
    map_tasks,
)

__all__ = ["BACKENDS", "check_backend", "imap_tasks", "init_ray", "map_tasks"]
