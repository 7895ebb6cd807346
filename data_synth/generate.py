"""Orchestration: world → shards (honest behaviour + typologies) → contract tables on disk.

Shards are blocks of patients; each is simulated, converted and streamed into
:class:`medfraud.dataset.DatasetWriter` (one Parquet part per table per shard), so peak
memory depends on ``shard_claims``, not on the dataset size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from medfraud.dataset import DatasetWriter
from data_synth.config import SynthConfig, config_summary
from data_synth.finalize import claim_audits, entity_audits, opening_stock, shard_tables
from data_synth.normal import generate_normal, make_shard
from data_synth.shard import STREAM_TYPOLOGY_BASE
from data_synth.typologies import MODULES
from data_synth.typologies.inventory_mismatch import opening_exclusions
from data_synth.world import (
    World, build_world, doctors_frame, drugs_frame, duty_roster_frame, facilities_frame, pharmacies_frame,
    refresh_duty,
)

GENERATOR_VERSION = "1.0"
STREAM_PLAN, STREAM_OPENING, STREAM_ENTITY_AUDIT = 50, 51, 52


def shard_layout(config: SynthConfig) -> list[tuple[int, int]]:
    """(first patient, patient count) of each shard, sized to about ``shard_claims`` claims."""
    per_patient = config.expected_claims() / config.populations.patients
    size = max(1, math.ceil(config.shard_claims / per_patient))
    n = config.populations.patients
    return [(start, min(size, n - start)) for start in range(0, n, size)]


def plan_world(config: SynthConfig) -> World:
    """The world with every typology's dataset-level choices made (rings, target entities).

    Typologies without dataset-level state have no ``plan``; each typology's stream is
    seeded by its position, so skipping one does not change the others' draws.
    """
    world = build_world(config)
    for k, (name, module) in enumerate(MODULES.items()):
        plan = getattr(module, "plan", None)
        if plan is not None:
            plan(world, config.typologies[name], np.random.default_rng([config.seed, STREAM_PLAN, k]))
    refresh_duty(world)
    return world


def generate(config: SynthConfig, out: str | Path, *, overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None, backend: str = "local",
             ray_address: str | None = None) -> Path:
    """Generate a dataset for ``config`` into ``out`` atomically and return ``out``.

    Locally, shards run as a two-stage pipeline: the calling thread simulates shard
    ``k + 1`` while one background thread turns shard ``k`` into contract tables and
    writes them (numpy and polars release the GIL for most of that work).  At most two
    shards are alive at once, and every Parquet part is written by that single thread in
    a fixed order, so the output, and the digest, do not depend on thread timing.

    With ``backend="ray"`` each shard is simulated and turned into tables by a Ray task
    (the world is shipped once); this process writes the shards' tables in shard order as
    they arrive, with at most the cluster's CPUs + 1 shards in flight.  Every shard draws
    from its own seeded streams and reads the world only, so the dataset is byte-identical
    to the local one (same digest).

    Parameters
    ----------
    config : validated scenario (see :func:`data_synth.load_config`).
    out : destination folder; must be absent or empty unless ``overwrite``.
    overwrite : replace an existing dataset.
    progress : called as ``progress(done_shards, total_shards)`` after each shard.
    backend : ``"local"`` or ``"ray"`` (see :mod:`medfraud.distributed`).
    ray_address : with ``backend="ray"``, the cluster to join (None: a local one).

    Raises
    ------
    FileExistsError if ``out`` is non-empty and ``overwrite`` is False.
    """
    from medfraud.distributed import check_backend

    check_backend(backend)
    world = plan_world(config)
    layout = shard_layout(config)
    total_steps = len(layout) + 1
    spend = {"doctor": np.zeros(world.n_doctors), "pharmacy": np.zeros(world.n_pharmacies)}
    with DatasetWriter(out, overwrite=overwrite) as writer, ThreadPoolExecutor(1) as background:
        world_written = background.submit(_write_world, writer, world)
        if backend == "ray":
            from medfraud.distributed import imap_tasks, init_ray

            init_ray(ray_address)
            outputs = imap_tasks(_shard_task, [(index, first, count) for index, (first, count)
                                               in enumerate(layout)], shared=(world,))
            _wait(world_written, progress, 1, total_steps)
            for index, (output, hits) in enumerate(outputs):
                _write_shard(writer, output, spend)
                _merge_hits(world, hits)
                if progress:
                    progress(index + 2, total_steps)
        else:
            pending: Future | None = None
            for index, (first, count) in enumerate(layout):          # loop over shards
                shard = _simulate_shard(world, index, first, count)
                # Wait for the previous shard before queueing this one: bounds memory to
                # two shards.
                if pending is None:
                    _wait(world_written, progress, 1, total_steps)
                else:
                    _wait(pending, progress, index + 1, total_steps)
                pending = background.submit(_finish_shard, writer, shard, spend)
                del shard
            _wait(pending, progress, total_steps, total_steps)
        world_labels = [f for name, module in MODULES.items()
                        if (f := module.world_entities(world, config.typologies[name])) is not None]
        world_frame = (pl.concat([f.cast({"ring_id": pl.String}) for f in world_labels]) if world_labels
                       else pl.DataFrame(schema={"entity_type": pl.String, "entity_id": pl.String,
                                                 "typology": pl.String, "ring_id": pl.String}))
        world_frame = world_frame.unique(subset=["entity_type", "entity_id", "typology"], keep="first") \
            .sort(["entity_type", "entity_id", "typology"])
        writer.write("labels_entities", world_frame)
        writer.write("audited", _world_audits(world, world_frame, spend["doctor"], spend["pharmacy"]))
        return writer.finish(seed=config.seed, config=config_summary(config),
                             generator_version=GENERATOR_VERSION, extra={"shards": len(layout)})


def _wait(future: Future, progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    """Block until ``future`` is done (re-raising its error), then report ``done`` steps."""
    future.result()
    if progress:
        progress(done, total)


def _write_world(writer: DatasetWriter, world) -> None:
    """Registry tables, duty roster and opening stock (the first part of each)."""
    config = world.config
    writer.write("facilities", facilities_frame(world))
    writer.write("doctors", doctors_frame(world))
    writer.write("pharmacies", pharmacies_frame(world))
    writer.write("drugs", drugs_frame(world))
    writer.write("duty_roster", duty_roster_frame(world))
    writer.write("pharmacy_purchases",
                 opening_stock(world, np.random.default_rng([config.seed, STREAM_OPENING]),
                               opening_exclusions(world)))


def _simulate_shard(world: World, index: int, first: int, count: int):
    """Shard ``index`` (patients ``first … first + count - 1``): honest care, then every
    typology injected from its own seeded stream."""
    shard = make_shard(world, index, first, count)
    generate_normal(shard)
    for k, (name, module) in enumerate(MODULES.items()):  # loop over typologies
        module.inject(shard, world.config.typologies[name], shard.rng(STREAM_TYPOLOGY_BASE + k))
    return shard


def _shard_output(shard) -> tuple[list[tuple[str, pl.DataFrame]], np.ndarray, np.ndarray]:
    """One simulated shard as (table name, frame) pairs in write order, and its doctor and
    pharmacy spend (yuan, one entry per world doctor / pharmacy)."""
    world = shard.world
    tables = shard_tables(shard)
    internal = tables.pop("_claims_internal")
    labels = tables.pop("_labels_internal")
    audited = pl.concat([claim_audits(shard, internal, labels),
                         _patient_audits(shard, internal, tables)])
    doctor = np.bincount(internal["doc"].to_numpy(), internal["total"].to_numpy(),
                         minlength=world.n_doctors)
    ph = internal.filter(pl.col("ph") >= 0)
    pharmacy = np.bincount(ph["ph"].to_numpy(), ph["total"].to_numpy(),
                           minlength=world.n_pharmacies)
    return [*tables.items(), ("audited", audited)], doctor, pharmacy


def _shard_task(world: World, index: int, first: int, count: int):
    """The unit of work of a Ray task: :func:`_shard_output` of a freshly simulated shard,
    plus the shard's hits (``world.extra[name]["hit"]``, see :mod:`data_synth.typologies`).

    The world's numpy arrays arrive read-only (Ray's object store): each ``hit`` array is
    replaced by a zeroed writable one, and a shard writing another array fails loudly.  A
    write to one of the world's Python containers would be lost silently instead; the
    test that compares local and Ray digests guards against that.
    """
    hits = {name: np.zeros_like(state["hit"]) for name, state in world.extra.items()
            if isinstance(state, dict) and "hit" in state}
    extra = {name: ({**state, "hit": hits[name]} if name in hits else state)
             for name, state in world.extra.items()}
    output = _shard_output(_simulate_shard(dataclasses.replace(world, extra=extra), index,
                                           first, count))
    return output, hits


def _merge_hits(world: World, hits: dict[str, np.ndarray]) -> None:
    """OR a shard's hits (from :func:`_shard_task`) into this process's world."""
    for name, hit in hits.items():
        world.extra[name]["hit"] |= hit


def _write_shard(writer: DatasetWriter, output, spend: dict[str, np.ndarray]) -> None:
    """Write a shard's tables (from :func:`_shard_output`) and add its spend; shards must
    come in shard order (parts and floating-point sums then follow one fixed order)."""
    tables, doctor, pharmacy = output
    for table, frame in tables:
        writer.write(table, frame)
    spend["doctor"] += doctor
    spend["pharmacy"] += pharmacy


def _finish_shard(writer: DatasetWriter, shard, spend: dict[str, np.ndarray]) -> None:
    """Convert one simulated shard to contract tables, write them and add its spend.

    Runs on the background thread; ``spend`` (doctor and pharmacy totals, yuan) is only
    touched here until the main thread has waited for the last shard.
    """
    _write_shard(writer, _shard_output(shard), spend)


def _camouflage_of(world, typology: pl.Series) -> np.ndarray:
    camo = {n: t.camouflage for n, t in world.config.typologies.items()}
    return 1 - typology.replace_strict(camo, default=0.0, return_dtype=pl.Float64).to_numpy()


def _patient_audits(shard, internal: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    from data_synth.finalize import patient_ids

    spend = internal.group_by("pat").agg(pl.col("total").sum()).select(
        patient_ids(pl.col("pat")).alias("entity_id"), "total")
    ents = tables["labels_entities"].filter(pl.col("entity_type") == "patient").group_by("entity_id").agg(
        pl.col("typology").sort().first())
    frame = (tables["patients"].select(pl.col("patient_id").alias("entity_id"))
             .join(spend, on="entity_id", how="left").join(ents, on="entity_id", how="left")
             .sort("entity_id"))
    rng = shard.rng(STREAM_ENTITY_AUDIT)
    return entity_audits(rng, shard.world, "patient", frame["entity_id"],
                         frame["total"].fill_null(0.0).to_numpy(), frame["typology"],
                         _camouflage_of(shard.world, frame["typology"]))


def _world_audits(world, labels: pl.DataFrame, doctor_spend: np.ndarray,
                  pharmacy_spend: np.ndarray) -> pl.DataFrame:
    rng = np.random.default_rng([world.config.seed, STREAM_ENTITY_AUDIT])
    out = []
    for entity_type, ids, spend in (("doctor", world.doctor_ids, doctor_spend),
                                    ("pharmacy", world.pharmacy_ids, pharmacy_spend)):
        typ = labels.filter(pl.col("entity_type") == entity_type).group_by("entity_id").agg(
            pl.col("typology").sort().first())
        frame = pl.DataFrame({"entity_id": ids}).join(typ, on="entity_id", how="left", maintain_order="left")
        out.append(entity_audits(rng, world, entity_type, frame["entity_id"], spend, frame["typology"],
                                 _camouflage_of(world, frame["typology"])))
    return pl.concat(out)
