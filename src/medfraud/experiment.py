"""Run an experiment: data -> split -> features + rules (+ graph) -> detectors -> metrics -> MLflow.

:func:`run_experiment` is what ``medfraud run`` calls.  For each sweep point (one point
without a sweep) it

1. finds the dataset folder (generating a preset with the injected ``generate`` callable
   when the folder is missing) and validates it against the contract;
2. builds the split (``config.split``) with the experiment seed;
3. builds features on the train window and on the test window (test features use the
   train window as reference, so peer statistics never look at test data), evaluates the
   audit rules on each window and builds the claims graph when a graph family is used;
4. fits every detector on train with labels restricted to the train side of the split,
   ensembles after their members, scores the test window;
5. evaluates each detector per typology at every level it scores: its own level and, for
   claim-level detectors, every entity level (an entity's score is the maximum of its
   test claims' scores), on the test-side ids only;
6. logs one MLflow child run per detector and sweep point (see :mod:`medfraud.tracking`).

With ``backend="ray"`` the sweep points run side by side as Ray tasks
(:mod:`medfraud.distributed`): the datasets are found or generated first, in this process,
then each task runs steps 2-6 of one point and logs its child runs under the same parent.
A point's results do not depend on the backend.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from medfraud import tracking
from medfraud.config import DatasetConfig, DetectorConfig, ExperimentConfig
from medfraud.dataset import Dataset
from medfraud.detectors.base import Detector, make_detector
from medfraud.features.frameset import FeatureSet
from medfraud.labels import TYPOLOGY_LEVEL, Labels
from medfraud.partitions import PatientPartitions, split_by_patient
from medfraud.schema import LEVEL_ID, LEVELS, TYPOLOGIES, validate

GRAPH_FAMILIES = frozenset({"gnn", "graph_tree", "ring"})
# Claim context columns that carry each entity level's id (see FeatureSet).
ROLLUP_LEVELS = ("patient", "doctor", "pharmacy", "facility")
ProgressFn = Callable[[str, int, int], None]
GenerateFn = Callable[[DatasetConfig, int, Path], Path]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes
    ----------
    metrics : one row per (sweep point, detector, evaluated level, typology) with columns
        point (String, "" without a sweep), detector, family, level (the evaluated level),
        scored_level (the detector's own level), typology, then one Float64 column per
        metric (auprc, auroc, rec_at_k…, as :func:`evaluate_scores` names them).
    parent_run_id : the MLflow parent run.
    child_run_ids : ``"<detector>"`` or ``"<detector>[<point>]"`` -> MLflow run id.
    config : the resolved experiment config.
    """

    metrics: pl.DataFrame
    parent_run_id: str
    child_run_ids: dict[str, str] = field(default_factory=dict)
    config: ExperimentConfig | None = None


class _Progress:
    def __init__(self, callback: ProgressFn | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def step(self, message: str, steps: int = 1) -> None:
        self.done += steps
        if self.callback is not None:
            self.callback(message, self.done, self.total)


# --------------------------------------------------------------------------- data

def ensure_dataset(dataset: DatasetConfig, seed: int, generate: GenerateFn | None = None) -> Path:
    """Folder of the configured dataset, generating a missing preset, validated.

    Parameters
    ----------
    dataset : the ``dataset`` block.
    seed : experiment seed, also the generator seed.
    generate : ``generate(dataset, seed, out) -> Path`` called when a preset's folder is
        missing (the CLI passes one backed by ``data_synth``; the library never imports it).

    Raises
    ------
    FileNotFoundError when the folder is missing and cannot be generated;
    medfraud.schema.DataError when the dataset breaks the contract.
    """
    path = dataset.resolved_path(seed)
    if not (path / "manifest.json").is_file():
        if dataset.preset is None:
            raise FileNotFoundError(f"dataset.path {path} is not a dataset folder (no manifest.json)")
        if generate is None:
            raise FileNotFoundError(
                f"dataset for preset {dataset.preset!r} is missing at {path}; generate it with "
                f"`medfraud generate` or run through `medfraud run`, which generates it")
        path = Path(generate(dataset, seed, path))
    validate(path).raise_if_failed()
    return path


def restrict_labels(labels: Labels, split: Any, dataset: Dataset, side: str) -> Labels:
    """The labels a detector may learn from: those the split puts on ``side``.

    A labelled claim belongs to ``side`` by ``split.mask`` (its service date and, for a
    grouped split, its grouping entity or else its patient); a labelled entity by
    ``split.assign`` (a temporal split keeps every entity label: entities have no date).
    """
    claim_ids = pl.concat([labels.claims["claim_id"],
                           labels.audited.filter(pl.col("entity_type") == "claim")["entity_id"]])
    columns = ["claim_id", "service_date", "patient_id"]
    if split.grouped:
        columns = list(dict.fromkeys(columns + [LEVEL_ID[split.group_level]]))
    claims = (dataset.scan("claims").select(columns)
              .filter(pl.col("claim_id").is_in(claim_ids.unique().implode())).collect())
    kept_claims = claims.filter(split.mask("claim", claims, side))["claim_id"]
    kept = [pl.DataFrame({"entity_type": "claim", "entity_id": kept_claims},
                         schema={"entity_type": pl.String, "entity_id": pl.String})]
    entity_rows = pl.concat([labels.entities.select("entity_type", "entity_id"),
                             labels.audited.select("entity_type", "entity_id")]).unique()
    for level in LEVELS[1:]:
        ids = entity_rows.filter(pl.col("entity_type") == level)["entity_id"]
        if split.grouped:
            ids = ids.filter((split.assign(level, ids) == side).fill_null(False))
        kept.append(pl.DataFrame({"entity_type": level, "entity_id": ids},
                                 schema={"entity_type": pl.String, "entity_id": pl.String}))
    keep = pl.concat(kept)
    return Labels(labels.claims.join(kept_claims.to_frame("claim_id"), on="claim_id", how="semi"),
                  labels.entities.join(keep, on=["entity_type", "entity_id"], how="semi"),
                  labels.audited.join(keep, on=["entity_type", "entity_id"], how="semi"))


def side_of(features: FeatureSet, split: Any, side: str) -> FeatureSet:
    """``features`` with every frame restricted to the rows ``split`` puts on ``side``."""
    frames = {lvl: frame.filter(split.mask(lvl, frame, side)) for lvl, frame in features.frames.items()}
    empty = [lvl for lvl, frame in frames.items() if frame.height == 0]
    if empty:
        raise ValueError(f"split {split.name}: no {side} rows at level(s) {empty}; "
                         f"check split.params (test_fraction, train_fraction, group_level)")
    return FeatureSet(frames, features.columns, features.window, features.rule_hits,
                      features.graph, dict(features.meta))


def make_split(config: ExperimentConfig, dataset: Dataset, labels: Labels | None = None) -> Any:
    """The configured split (``medfraud.evaluate.splits``), seeded by the experiment.

    With ``split.keep_rings_together`` the ring ids of ``labels.entities`` are passed as
    groups to grouped splits (evaluation knowledge: it decides sides, never features).
    """
    from medfraud.evaluate import splits

    builder = {"temporal": splits.temporal_split, "grouped": splits.entity_grouped_split,
               "temporal_grouped": splits.temporal_grouped_split}[config.split.kind]
    params = dict(config.split.params)
    accepted = inspect.signature(builder).parameters
    if "seed" in accepted:
        params.setdefault("seed", config.seed)
    if "groups" in accepted and config.split.keep_rings_together and labels is not None:
        rings = (labels.entities.filter(pl.col("ring_id").is_not_null())
                 .select("entity_id", pl.col("ring_id").alias("group_id")).unique())
        if rings.height:
            params.setdefault("groups", rings)
    return builder(dataset, **params)


def window_partitions(dataset: Dataset, *windows: Any
                      ) -> AbstractContextManager[PatientPartitions | None]:
    """One split of ``dataset`` by patient (:func:`medfraud.partitions.split_by_patient`)
    holding what the features and rules of every window need: the claims from the first
    (the rules read history) to the latest window end."""
    ends = [None if window is None else window[1] for window in windows]
    return split_by_patient(dataset, end=None if None in ends else max(ends))


def build_window_features(config: ExperimentConfig, dataset: Dataset, window: Any,
                          reference_window: Any = None, catalogue: Any = None,
                          with_graph: bool = False,
                          partitions: PatientPartitions | None = None) -> FeatureSet:
    """Features, rule hits and (optionally) the graph of one window.

    ``partitions`` : a :func:`window_partitions` split shared with other windows; by
    default one is made here when the rules run (features and rules then share it).
    """
    if partitions is None and catalogue is not None:
        with window_partitions(dataset, window) as own:
            return _window_features(config, dataset, window, reference_window, catalogue,
                                    with_graph, own)
    return _window_features(config, dataset, window, reference_window, catalogue, with_graph,
                            partitions)


def _window_features(config: ExperimentConfig, dataset: Dataset, window: Any,
                     reference_window: Any, catalogue: Any, with_graph: bool,
                     partitions: PatientPartitions | None) -> FeatureSet:
    from medfraud.features import FeatureParams, build_features

    params = FeatureParams(**config.features.params) if config.features.params else None
    features = build_features(dataset, window, levels=tuple(config.features.levels),
                              reference_window=reference_window, params=params,
                              partitions=partitions)
    if catalogue is not None:
        from medfraud.rules import evaluate_rules

        features.rule_hits = evaluate_rules(dataset, catalogue, window=window,
                                            partitions=partitions)
    if with_graph:
        from medfraud.graph.build import build_claims_graph

        features.graph = build_claims_graph(dataset, features, window)
    return features


# --------------------------------------------------------------------------- detectors

def _detector_order(detectors: dict[str, DetectorConfig]) -> list[str]:
    """Detector names with every ensemble after its members (config order otherwise)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"detectors: members form a cycle through {name!r}")
        visiting.add(name)
        for member in detectors[name].members:
            visit(member)
        visiting.discard(name)
        order.append(name)

    for name in detectors:
        visit(name)
    return order


def build_detector(cfg: DetectorConfig, seed: int, fitted: dict[str, Detector]) -> Detector:
    """Instantiate a detector from its block; seed it and hand an ensemble its members."""
    from medfraud import detectors  # noqa: F401  (importing the package registers every family)
    from medfraud.detectors.base import REGISTRY

    params = dict(cfg.params)

    if cfg.family not in REGISTRY:
        raise KeyError(f"unknown detector family {cfg.family!r}; known: {sorted(REGISTRY)}")
    cls = REGISTRY[cfg.family]
    # A family takes a seed when its constructor names one, or when it declares it among
    # the parameters its **params accepts (``defaults`` / ``own_keys``).
    accepted = set(inspect.signature(cls.__init__).parameters)
    accepted |= set(getattr(cls, "defaults", {}) or {}) | set(getattr(cls, "own_keys", ()) or ())
    for seed_name in ("seed", "random_state"):
        if seed_name in accepted:
            params.setdefault(seed_name, seed)
    if cfg.members:
        params["members"] = [fitted[m] for m in cfg.members]
    return make_detector(cfg.family, level=cfg.level, **params)


def rollup_scores(scores: pl.DataFrame, claims: pl.DataFrame, level: str) -> pl.DataFrame:
    """Entity scores from claim scores: the maximum over the entity's claims.

    Parameters
    ----------
    scores : claim score frame (id, score, reasons).
    claims : claim feature frame holding ``claim_id`` and ``LEVEL_ID[level]``.
    level : entity level to roll up to.

    Returns
    -------
    Score frame (id, score, reasons) at ``level``; reasons are those of the top claim.
    """
    id_col = LEVEL_ID[level]
    joined = (claims.select(pl.col("claim_id").alias("id"), pl.col(id_col).alias("entity"))
              .join(scores, on="id", how="inner").filter(pl.col("entity").is_not_null()))
    return (joined.sort("score", descending=True, nulls_last=True)
            .group_by("entity", maintain_order=True)
            .agg(pl.col("score").first(), pl.col("reasons").first())
            .rename({"entity": "id"}))


def _level_typologies(level: str) -> list[str]:
    return [t for t in TYPOLOGIES if TYPOLOGY_LEVEL[t] == level]


def evaluate_detector(scores_by_level: dict[str, pl.DataFrame], labels: Labels,
                      in_scope: dict[str, pl.Series], budgets: list[float],
                      amounts: dict[str, pl.DataFrame]) -> dict[str, float]:
    """``{"<level>.<typology>.<metric>": value}`` over every level scored.

    Each level is evaluated for ``all`` (any fraud) and for the typologies judged at it
    (``TYPOLOGY_LEVEL``), never for a data-dependent set, so two runs scoring the same
    levels log the same keys (NaN where the test side holds no positive).  Besides the
    metrics of :func:`evaluate_scores`, ``prevalence`` (share of positives in scope: the
    AUPRC of a random ranking) is reported for each (level, typology).
    """
    from medfraud.evaluate.metrics import ALL, evaluate_scores

    out: dict[str, float] = {}
    for level, scores in scores_by_level.items():
        typologies = _level_typologies(level)
        out.update(evaluate_scores(scores, level, labels, in_scope[level], typologies=typologies,
                                   budgets=tuple(budgets), amounts=amounts.get(level)))
        ids = in_scope[level].alias(LEVEL_ID[level])
        any_fraud = labels.target(level, ids, None)
        for typology in (ALL, *typologies):
            target = labels.target(level, ids, None if typology == ALL else typology)
            if typology != ALL:  # same scope as evaluate_scores: other typologies left out
                target = target.filter((target == 1) | (any_fraud == 0))
            out[f"{level}.{typology}.prevalence"] = float(target.mean()) if len(target) else float("nan")
    return out


def metrics_table(metrics: dict[str, float], budgets: list[float], **columns: str) -> pl.DataFrame:
    """``{"level.typology.metric": v}`` -> one row per (level, typology), ``columns`` first."""
    from medfraud.evaluate.report import metrics_table as wide_table

    wide = wide_table(metrics, tuple(budgets))
    return wide.with_columns(pl.lit(v, dtype=pl.String).alias(k) for k, v in columns.items()).select(
        *columns, pl.exclude(*columns))


# --------------------------------------------------------------------------- the run

def _point_label(point: dict[str, Any]) -> str:
    """``{"dataset.camouflage": 0.3}`` -> ``"camouflage=0.3"`` (full keys when last parts clash)."""
    short = [k.rsplit(".", 1)[-1] for k in point]
    names = short if len(set(short)) == len(short) else list(point)
    return ",".join(f"{n}={v}" for n, v in zip(names, point.values()))


def run_experiment(config: ExperimentConfig, *, progress: ProgressFn | None = None,
                   generate: GenerateFn | None = None, backend: str = "local",
                   ray_address: str | None = None) -> ExperimentResult:
    """Run every sweep point of ``config`` and track it in MLflow.

    Parameters
    ----------
    config : a validated experiment (see :func:`medfraud.config.load_experiment`).
    progress : ``progress(message, done, total)`` called after each step (with
        ``backend="ray"``: after each dataset, then once per finished point).
    generate : dataset generator for missing presets (see :func:`ensure_dataset`).
    backend : ``"local"`` (one point after another in this process) or ``"ray"`` (the
        points of a sweep as Ray tasks; see :mod:`medfraud.distributed`).
    ray_address : with ``backend="ray"``: the cluster to connect to (None: start a local
        one on this machine's cores).

    Returns
    -------
    ExperimentResult with the metrics table and the MLflow run ids.
    """
    from medfraud.distributed import check_backend

    check_backend(backend)
    points = config.sweep_points()
    if config.dataset.preset is None and not (Path(config.dataset.path) / "manifest.json").is_file():
        # Fail before any MLflow run exists: nothing could be generated anyway.
        raise FileNotFoundError(f"dataset.path {config.dataset.path} is not a dataset folder "
                                "(no manifest.json)")
    steps_per_point = 4 + len(config.detectors)
    bar = _Progress(progress, len(points) * steps_per_point)
    # Absolute: a Ray worker may run in another folder.
    uri = tracking.absolute_uri(config.tracking.resolved_uri())
    tables, children = [], {}
    with tracking.start_run(config.name, experiment=config.experiment_name, uri=uri,
                            tags={tracking.TAG_KIND: "experiment",
                                  **tracking.standard_tags(config.seed)}) as parent:
        parent.log_params(config.flat_params())
        parent.log_text(config.to_yaml(), "config/experiment.yaml")
        point_configs = [config.at_point(point) if point else config for point in points]
        point_labels = [_point_label(point) for point in points]
        if backend == "ray" and len(points) > 1:
            from medfraud.distributed import init_ray, map_tasks

            # Datasets first, here: points sharing a preset share its folder, which two
            # tasks must not generate at once.
            paths = []
            for point_config, label in zip(point_configs, point_labels, strict=True):
                paths.append(ensure_dataset(point_config.dataset, point_config.seed,
                                            generate).resolve())
                bar.step(f"dataset {paths[-1].name} [{label}]")
            init_ray(ray_address)
            results = map_tasks(
                _run_point_task,
                [(point_config, point, label, path, uri, parent.run_id)
                 for point_config, point, label, path
                 in zip(point_configs, points, point_labels, paths, strict=True)],
                on_done=lambda i: bar.step(f"point {point_labels[i]} done", steps_per_point - 1))
        else:
            results = []
            for point_config, point, label in zip(point_configs, points, point_labels,
                                                  strict=True):
                path = ensure_dataset(point_config.dataset, point_config.seed, generate)
                bar.step(f"dataset {path.name}{f' [{label}]' if label else ''}")
                if len(points) == 1:
                    dataset = Dataset(path)
                    parent.set_tags({"dataset.digest": dataset.digest, "dataset.path": str(path)})
                    _log_dataset(parent, dataset)
                results.append(_run_point(point_config, point, label, bar, path,
                                          parent.run_id, single=len(points) == 1))
        for table, runs in results:
            tables.append(table)
            children.update(runs)
        metrics = pl.concat(tables, how="diagonal_relaxed")
        parent.log_frame(metrics, "metrics/metrics_table.parquet")
        if config.tracking.plots and len(points) > 1 and len(points[0]) == 1:
            _log_sweep_plot(parent, metrics, points)
    return ExperimentResult(metrics, parent.run_id, children, config)


def _run_point_task(config: ExperimentConfig, point: dict[str, Any], label: str, path: Path,
                    uri: str, parent_run_id: str) -> tuple[pl.DataFrame, dict[str, str]]:
    """:func:`_run_point` in a Ray worker: its child runs go to ``uri`` under the parent."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return _run_point(config, point, label, _Progress(None, 0), path, parent_run_id,
                      single=False)


def _log_sweep_plot(parent: tracking.TrackedRun, metrics: pl.DataFrame,
                    points: list[dict[str, Any]]) -> None:
    """AUPRC against the swept value per typology and detector (``plots/sweep_<key>.png``)."""
    from medfraud.evaluate import plots

    (key,) = points[0]
    try:
        x_values = {_point_label(p): float(p[key]) for p in points}
    except (TypeError, ValueError):
        return  # a non-numeric sweep has no curve
    name = key.rsplit(".", 1)[-1]
    parent.log_figure(plots.plot_sweep(metrics, x_values, name, TYPOLOGY_LEVEL),
                      f"plots/sweep_{name}.png")


def _run_point(config: ExperimentConfig, point: dict[str, Any], label: str, bar: _Progress,
               path: Path, parent_run_id: str,
               single: bool) -> tuple[pl.DataFrame, dict[str, str]]:
    """Steps 2-6 of one sweep point on its validated dataset at ``path``; its detectors'
    runs are children of ``parent_run_id``.  ``single``: the experiment has one point (the
    dataset is logged on the parent, not on each child)."""
    where = f" [{label}]" if label else ""
    dataset = Dataset(path)
    labels = Labels.from_dataset(dataset)

    split = make_split(config, dataset, labels)
    train_labels = restrict_labels(labels, split, dataset, "train")
    bar.step(f"split {config.split.kind}{where}")

    catalogue = None
    if config.rules.enabled:
        from medfraud.rules import load_catalogue

        catalogue = load_catalogue(config.rules.catalogue)
    with_graph = any(d.family in GRAPH_FAMILIES for d in config.detectors.values())
    # Each side keeps only its own rows: with a grouped split the train window also holds
    # claims of test-side doctors, which must neither train nor be scored as train.
    # One split by patient serves the features and rules of both windows.
    with window_partitions(dataset, split.train_window, split.test_window) as partitions:
        train = side_of(build_window_features(config, dataset, split.train_window, None,
                                              catalogue, with_graph, partitions), split, "train")
        bar.step(f"train features{where}")
        test = side_of(build_window_features(config, dataset, split.test_window,
                                             split.train_window, catalogue, with_graph,
                                             partitions), split, "test")
        bar.step(f"test features{where}")
    in_scope = {lvl: test.ids(lvl) for lvl in test.levels}
    amounts = _amounts(test)
    fitted: dict[str, Detector] = {}
    tables, runs = [], {}
    for name in _detector_order(config.detectors):
        cfg = config.detectors[name]
        run_name = f"{name}[{label}]" if label else name
        tags = {tracking.TAG_KIND: "detector", tracking.TAG_DETECTOR: name,
                tracking.TAG_FAMILY: cfg.family, tracking.TAG_LEVEL: cfg.level,
                "dataset.digest": dataset.digest, **tracking.standard_tags(config.seed)}
        if label:
            tags[tracking.TAG_POINT] = label
        with tracking.start_run(run_name, parent=parent_run_id, tags=tags) as child:
            child.log_params({f"detector.{k}": v for k, v in
                              _flat(cfg.model_dump(mode="json")).items()})
            child.log_params({f"sweep.{k}": v for k, v in point.items()})
            child.log_params({"dataset.path": str(path), "split.kind": config.split.kind})
            if not single:
                _log_dataset(child, dataset)
            detector = build_detector(cfg, config.seed, fitted)
            detector.fit(train, train_labels)
            fitted[name] = detector
            scores = _scores_by_level(detector, test)
            metrics = evaluate_detector(scores, labels, in_scope, config.metrics.budgets, amounts)
            child.log_metrics(metrics, prefix="test")
            _log_artifacts(child, config, detector, scores, labels, in_scope, test)
            runs[run_name] = child.run_id
        tables.append(metrics_table(metrics, config.metrics.budgets, point=label, detector=name, family=cfg.family,
                                    scored_level=cfg.level))
        bar.step(f"detector {name}{where}")
    return pl.concat(tables, how="diagonal_relaxed"), runs


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    from medfraud.config import flatten

    return flatten(tree)


def _scores_by_level(detector: Detector, test: FeatureSet) -> dict[str, pl.DataFrame]:
    scores = detector.score(test)
    out = {detector.level: scores}
    if detector.level == "claim":
        claims = test.frame("claim")
        for level in ROLLUP_LEVELS:
            if level in test.levels and LEVEL_ID[level] in claims.columns:
                out[level] = rollup_scores(scores, claims, level)
    return out


def _amounts(test: FeatureSet) -> dict[str, pl.DataFrame]:
    """Money at stake per id (fund_paid, yuan) for the money-recovered metrics."""
    if "claim" not in test.levels or "fund_paid" not in test.frame("claim").columns:
        return {}
    claims = test.frame("claim")
    out = {"claim": claims.select(pl.col("claim_id").alias("id"), pl.col("fund_paid").alias("amount"))}
    for level in ROLLUP_LEVELS:
        if LEVEL_ID[level] in claims.columns:
            out[level] = (claims.group_by(LEVEL_ID[level]).agg(pl.col("fund_paid").sum().alias("amount"))
                          .rename({LEVEL_ID[level]: "id"}).drop_nulls("id"))
    return out


def _log_dataset(run: tracking.TrackedRun, dataset: Dataset) -> None:
    counts = dataset.manifest.get("row_counts", {})
    summary = pl.DataFrame({"table": list(counts), "rows": pl.Series(list(counts.values()), dtype=pl.Int64)})
    for context in ("train", "test"):
        run.log_dataset(summary, name=dataset.path.name, source=str(dataset.path.resolve()),
                        digest=dataset.digest, context=context)
    run.log_json(dataset.manifest, "dataset/manifest.json")


def _log_artifacts(run: tracking.TrackedRun, config: ExperimentConfig, detector: Detector,
                   scores: dict[str, pl.DataFrame], labels: Labels,
                   in_scope: dict[str, pl.Series], test: FeatureSet) -> None:
    own = scores[detector.level].filter(pl.col("id").is_in(in_scope[detector.level].implode()))
    top = own.sort("score", descending=True, nulls_last=True).head(config.audit.top_k)
    if detector.level == "claim" and "claim" in test.levels:
        context = [c for c in ("claim_id", "patient_id", "doctor_id", "pharmacy_id", "facility_id",
                               "service_date", "total_amount", "fund_paid")
                   if c in test.frame("claim").columns]
        top = top.join(test.frame("claim").select(context).rename({"claim_id": "id"}), on="id",
                       how="left", maintain_order="left")
    # The audit team reviews ceil(budget × rows in scope) alerts; flag those in the table.
    audit_k = max(1, math.ceil(config.audit.budget * own.height))
    top = top.with_row_index("rank", offset=1).with_columns(
        (pl.col("rank") <= audit_k).alias("within_audit_budget"))
    run.log_params({"audit.k": audit_k})
    run.log_frame(top, "alerts/top_alerts.parquet")
    if hasattr(detector, "feature_importance"):
        importance = detector.feature_importance()
        if isinstance(importance, pl.DataFrame):
            run.log_frame(importance, "importance/feature_importance.parquet")
    if hasattr(detector, "to_state"):
        try:
            state = detector.to_state()
        except NotImplementedError:
            state = None
        if state is not None:
            run.log_state(detector.name.replace("@", "_"), state)
    if config.tracking.plots:
        _log_plots(run, detector, scores[detector.level], labels, in_scope)


def _log_plots(run: tracking.TrackedRun, detector: Detector, scores: pl.DataFrame,
               labels: Labels, in_scope: dict[str, pl.Series]) -> None:
    """PR and ROC curves per typology and the score histogram, at the detector's level."""
    from medfraud.evaluate import plots

    level = detector.level
    typologies = _level_typologies(level)
    args = (scores, level, labels, in_scope[level])
    run.log_figure(plots.plot_pr_curves(*args, typologies, title=f"{detector.name}: precision-recall"),
                   f"plots/pr_{level}.png")
    run.log_figure(plots.plot_roc_curves(*args, typologies, title=f"{detector.name}: ROC"),
                   f"plots/roc_{level}.png")
    run.log_figure(plots.plot_score_histogram(*args, title=f"{detector.name}: scores"),
                   f"plots/hist_{level}.png")
