"""Fraud typologies: one module per typology of ``medfraud.schema.TYPOLOGIES``.

Every module exposes ``inject`` and ``world_entities``, a ``DEFAULT_PARAMS`` dict, and
``plan`` when the typology has dataset-level state:

``plan(world, cfg, rng)`` (optional)
    choose world-level fraudulent entities (doctors, pharmacies, facilities, rings) once
    per dataset and store them in ``world.extra[NAME]``; may edit the duty roster.
``inject(shard, cfg, rng)``
    add or alter claims of one shard and label them (``shard.label`` /
    ``shard.label_entities``), aiming at ``cfg.prevalence × honest claims`` labelled claims.
    It reads the world and writes nothing to it but ``world.extra[NAME]["hit"]`` (a Boolean
    array: which planned entities this shard made fraudulent; shards OR into it), so shards
    can be simulated apart and their hits merged (``data_synth.generate(backend="ray")``).
``world_entities(world, cfg)``
    entity labels for world-level entities that committed fraud (a polars frame or None).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from medfraud.schema import TYPOLOGIES

MODULES: dict[str, ModuleType] = {name: import_module(f"data_synth.typologies.{name}")
                                  for name in TYPOLOGIES}
DEFAULT_PARAMS: dict[str, dict] = {name: dict(module.DEFAULT_PARAMS) for name, module in MODULES.items()}

__all__ = ["MODULES", "DEFAULT_PARAMS"]
