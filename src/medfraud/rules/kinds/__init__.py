"""Vectorised rule kinds, one module per group; importing this package registers them all."""

from medfraud.rules.kinds import billing, identity, prescribing, providers, stays  # noqa: F401
