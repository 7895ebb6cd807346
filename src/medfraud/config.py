"""Experiment configuration: pydantic models, YAML composition and dotted overrides.

An experiment YAML lists the reusable blocks it composes from ``configs/<group>/<name>.yaml``
(in the style of lightning-hydra-template) and then overrides what differs::

    defaults:
      - synth: small                 # dataset.preset = "small"
      - features: default            # features  <- configs/features/default.yaml
      - split: temporal_grouped      # split     <- configs/split/temporal_grouped.yaml
      - rules: default               # rules.catalogue = configs/rules/default.yaml
      - detectors: [rules, iforest]  # detectors.<name> <- configs/detectors/<name>.yaml
      - tracking: local              # tracking  <- configs/tracking/local.yaml
    name: quickstart
    seed: 7

Composition order: defaults (in list order), then the experiment body, then command-line
``--set key=value`` overrides (values parsed with ``yaml.safe_load``).  The result is
validated by :class:`ExperimentConfig`; every model forbids unknown keys and errors list
the valid ones.  See ``docs/experiments.md`` for the reference.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medfraud.schema import LEVELS, TYPOLOGIES

Level = Literal["claim", "patient", "doctor", "pharmacy", "facility"]
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Groups whose name selects something rather than merging a block (see _apply_default).
_SPECIAL_GROUPS = ("synth", "detectors", "rules")


class ConfigError(ValueError):
    """An experiment config is invalid: the message says which key, where, and what is valid."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Block):
    """Where the claims come from.

    Either ``preset`` (a ``data_synth`` preset generated on first use and cached at ``path``,
    default ``data/<preset>-seed<seed>[-<hash of overrides>]``) or ``path`` alone (an
    existing dataset folder in the data contract).  ``synth_overrides`` are the generator's
    dotted paths (``typologies.upcoding.prevalence: 0.02``), ``claims`` scales the
    populations, ``camouflage`` sets every typology's camouflage at once (what a sweep varies).
    """

    preset: str | None = None
    synth_overrides: dict[str, Any] = Field(default_factory=dict)
    camouflage: float | None = Field(default=None, ge=0, le=1)
    claims: int | None = Field(default=None, gt=0)
    path: str | None = None

    @field_validator("synth_overrides", mode="before")
    @classmethod
    def _overrides_as_mapping(cls, value: Any) -> Any:
        # Accept the generator's own ["key=value", ...] form as well as a mapping.
        if isinstance(value, list):
            out: dict[str, Any] = {}
            for item in value:
                if not isinstance(item, str) or "=" not in item:
                    raise ValueError(f"synth_overrides list items must be 'key=value', got {item!r}")
                key, raw = item.split("=", 1)
                _set_dotted(out, key.strip().split("."), yaml.safe_load(raw))
            return out
        return value

    @model_validator(mode="after")
    def _preset_or_path(self) -> DatasetConfig:
        if self.preset is None and self.path is None:
            raise ValueError("dataset needs 'preset' (generate) or 'path' (existing dataset folder)")
        if self.preset is None and (self.synth_overrides or self.claims or self.camouflage is not None):
            raise ValueError("dataset.synth_overrides/claims/camouflage need dataset.preset")
        return self

    def overrides_list(self) -> list[str]:
        """``synth_overrides`` as the generator's ``["dotted.key=value", ...]`` (sorted).

        ``camouflage`` expands to ``typologies.<t>.camouflage`` for every typology; an
        explicit per-typology value in ``synth_overrides`` wins.
        """
        flat = {}
        if self.camouflage is not None:
            flat = {f"typologies.{t}.camouflage": self.camouflage for t in TYPOLOGIES}
        flat.update(flatten(self.synth_overrides))
        return [f"{k}={json.dumps(v)}" for k, v in sorted(flat.items())]

    def variant(self) -> str:
        """Short hash of what changes the generated data besides preset and seed ("" if nothing)."""
        if not (self.overrides_list() or self.claims):
            return ""
        key = json.dumps({"o": self.overrides_list(), "c": self.claims}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    def resolved_path(self, seed: int) -> Path:
        """Folder of the dataset: ``path`` when given, else the preset's cache folder."""
        if self.path is not None:
            return Path(self.path)
        name = f"{self.preset}-seed{seed}"
        if self.variant():
            name += "-" + self.variant()
        return Path("data") / name


class FeaturesConfig(_Block):
    """Feature levels to build and parameters passed to ``build_features``."""

    levels: list[Level] = Field(default_factory=lambda: list(LEVELS))
    params: dict[str, Any] = Field(default_factory=dict)


class SplitConfig(_Block):
    """Train/test split: ``temporal`` (by service date), ``grouped`` (by entity) or both.

    ``params`` go to ``medfraud.evaluate.splits`` (``group_level``, ``test_fraction``,
    ``train_fraction``, ``train_months``…); the seed is the experiment's.
    ``keep_rings_together`` passes the labels' ring ids as groups to grouped splits so no
    fraud ring is divided between train and test.
    """

    kind: Literal["temporal", "grouped", "temporal_grouped"] = "temporal_grouped"
    keep_rings_together: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class RulesConfig(_Block):
    """Audit rules: ``catalogue`` is a YAML path, or null for the packaged catalogue."""

    enabled: bool = True
    catalogue: str | None = None


class DetectorConfig(_Block):
    """One detector: family (registry name), level scored, parameters, ensemble members."""

    family: str
    level: Level = "claim"
    params: dict[str, Any] = Field(default_factory=dict)
    members: list[str] = Field(default_factory=list)


class MetricsConfig(_Block):
    """Evaluation: audit budgets for precision/recall@k (fractions of the scored ids)."""

    budgets: list[float] = Field(default_factory=lambda: [0.01, 0.05])

    @field_validator("budgets")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [b for b in value if not 0 < b <= 1]
        if bad or not value:
            raise ValueError(f"budgets must be non-empty fractions in (0, 1], got {value}")
        return value


class AuditConfig(_Block):
    """The audit team's capacity: ``budget`` (fraction of claims reviewed), top-K table size."""

    budget: float = Field(default=0.01, gt=0, le=1)
    top_k: int = Field(default=100, gt=0)


class TrackingConfig(_Block):
    """MLflow: ``uri`` (null: ``$MLFLOW_TRACKING_URI`` or sqlite:///mlflow.db), experiment name."""

    uri: str | None = None
    experiment: str | None = None
    plots: bool = True

    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class ExperimentConfig(_Block):
    """A whole experiment.  ``sweep`` maps dotted paths to values; each grid point is a run."""

    name: str
    seed: int = 0
    dataset: DatasetConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    detectors: dict[str, DetectorConfig]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _members_exist(self) -> ExperimentConfig:
        if not self.detectors:
            raise ValueError("detectors is empty: configure at least one detector")
        for name, det in self.detectors.items():
            missing = [m for m in det.members if m not in self.detectors or m == name]
            if missing:
                raise ValueError(f"detectors.{name}.members names {missing}, which are not other "
                                 f"configured detectors ({sorted(self.detectors)})")
        unbuilt = {name: d.level for name, d in self.detectors.items()
                   if d.level not in self.features.levels}
        if unbuilt:
            raise ValueError(f"detectors score level(s) {unbuilt} that features.levels "
                             f"{self.features.levels} does not build")
        for path, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep.{path} has no values")
            if path.split(".")[0] == "sweep":
                raise ValueError(f"sweep.{path}: a sweep cannot sweep itself")
        return self

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def sweep_points(self) -> list[dict[str, Any]]:
        """Grid of the sweep (cartesian product, keys in config order); ``[{}]`` without a sweep."""
        if not self.sweep:
            return [{}]
        keys = list(self.sweep)
        return [dict(zip(keys, combo)) for combo in itertools.product(*self.sweep.values())]

    def at_point(self, point: Mapping[str, Any]) -> ExperimentConfig:
        """This config with one sweep point's values applied and ``sweep`` emptied."""
        raw = self.model_dump(mode="json")
        raw["sweep"] = {}
        for path, value in point.items():
            _apply_override(raw, path, value)
        config = _validate(raw, source=f"sweep point {dict(point)}")
        base, new = self.dataset, config.dataset
        if (base.preset and base.path and new.path == base.path
                and (new.variant(), new.preset, config.seed) != (base.variant(), base.preset, self.seed)):
            # An explicit cache folder must not serve two different generated datasets.
            config.dataset.path = f"{base.path}-{new.preset}-seed{config.seed}-{new.variant() or 'base'}"
        return config

    def to_yaml(self) -> str:
        """The resolved config as YAML (what is logged and what ``load_experiment`` reloads)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def flat_params(self, max_len: int = 250) -> dict[str, str]:
        """Dotted-key view of the config for MLflow params; long values are truncated."""
        out = {}
        for key, value in flatten(self.model_dump(mode="json")).items():
            text = value if isinstance(value, str) else json.dumps(value)
            out[key] = text if len(text) <= max_len else text[: max_len - 3] + "..."
        return out


# --------------------------------------------------------------------------- helpers

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is None and keys[-1] in node and _is_free_mapping_parent(keys):
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


def _is_free_mapping_parent(keys: list[str]) -> bool:
    # ``--set detectors.ensemble=null`` removes a detector instead of nulling its block.
    return len(keys) == 2 and keys[0] == "detectors"


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_fields


def _check_path(keys: list[str], dotted: str) -> None:
    """Reject a dotted path whose keys are not fields, suggesting close matches."""
    model: Any = ExperimentConfig
    for depth, key in enumerate(keys):
        if model is None:  # free-form mapping (params, synth_overrides): anything goes
            return
        fields = _model_fields(model)
        if key not in fields:
            where = ".".join(keys[:depth]) or "<top level>"
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in override {dotted!r} (under {where}){hint} "
                              f"valid keys: {sorted(fields)}")
        model = _field_child(model, key)
        if model == "detectors":
            # detectors.<name>.<field>: any name, then DetectorConfig fields.
            if depth + 2 < len(keys):
                _check_subpath(DetectorConfig, keys[depth + 2:], dotted, ".".join(keys[:depth + 2]))
            return


def _check_subpath(model: type[BaseModel], keys: list[str], dotted: str, where: str) -> None:
    fields = _model_fields(model)
    key = keys[0]
    if key not in fields:
        close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown key {key!r} in override {dotted!r} (under {where}){hint} "
                          f"valid keys: {sorted(fields)}")


def _field_child(model: type[BaseModel], key: str) -> Any:
    """The model of a field's value, ``"detectors"`` for the detector map, None if free-form."""
    if model is ExperimentConfig and key == "detectors":
        return "detectors"
    annotation = model.model_fields[key].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"malformed key {dotted!r}: empty segment")
    _check_path(keys, dotted)
    _set_dotted(raw, keys, value)


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", yaml.safe_load("value"))``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. seed=3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def _validate(raw: Mapping[str, Any], source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"invalid experiment config ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(list(err["loc"][:-1]))
            if parent is not None:
                valid = sorted(_model_fields(parent))
                close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=3, cutoff=0.5)
                hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                msg = f"unknown key{hint}; valid keys: {valid}"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _model_at(loc: list[Any]) -> type[BaseModel] | None:
    model: Any = ExperimentConfig
    i = 0
    while i < len(loc):
        child = _field_child(model, str(loc[i])) if str(loc[i]) in _model_fields(model) else None
        if child == "detectors":
            model, i = DetectorConfig, i + 2
            continue
        if child is None:
            return None
        model, i = child, i + 1
    return model


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _group_file(configs_dir: Path, group: str, name: str) -> Path:
    path = configs_dir / group / f"{name}.yaml"
    if not path.is_file():
        folder = configs_dir / group
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ConfigError(f"defaults: no {group!r} block named {name!r} ({path} is missing); "
                          f"available: {known}")
    return path


def _apply_default(raw: dict[str, Any], configs_dir: Path, group: str, choice: Any) -> dict[str, Any]:
    if group == "synth":
        if not isinstance(choice, str):
            raise ConfigError(f"defaults: synth takes one preset name, got {choice!r}")
        return deep_merge(raw, {"dataset": {"preset": choice}})
    if group == "rules":
        if choice is None:
            return deep_merge(raw, {"rules": {"enabled": False}})
        return deep_merge(raw, {"rules": {"catalogue": str(_group_file(configs_dir, "rules", choice))}})
    if group == "detectors":
        names = [choice] if isinstance(choice, str) else choice
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"defaults: detectors takes a name or a list of names, got {choice!r}")
        blocks = {n: _read_yaml(_group_file(configs_dir, "detectors", n)) for n in names}
        return deep_merge(raw, {"detectors": blocks})
    if group not in ExperimentConfig.model_fields or group in ("name", "seed", "sweep"):
        valid = sorted({*_SPECIAL_GROUPS, "features", "split", "metrics", "audit", "tracking", "dataset"})
        raise ConfigError(f"defaults: unknown group {group!r}; valid groups: {valid}")
    if not isinstance(choice, str):
        raise ConfigError(f"defaults: {group} takes one block name, got {choice!r}")
    return deep_merge(raw, {group: _read_yaml(_group_file(configs_dir, group, choice))})


def find_configs_dir(experiment_path: Path) -> Path:
    """``$MEDFRAUD_CONFIGS``, else ``configs/`` beside the experiment's folder, else ``./configs``."""
    if os.environ.get("MEDFRAUD_CONFIGS"):
        return Path(os.environ["MEDFRAUD_CONFIGS"])
    for candidate in (experiment_path.resolve().parent.parent / "configs",
                      experiment_path.resolve().parent / "configs", Path.cwd() / "configs"):
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "configs"


def compose(document: Mapping[str, Any], configs_dir: Path) -> dict[str, Any]:
    """Apply a document's ``defaults`` list and then its own keys; returns the raw tree."""
    body = dict(document)
    defaults = body.pop("defaults", []) or []
    if not isinstance(defaults, list):
        raise ConfigError(f"defaults must be a list, got {type(defaults).__name__}")
    raw: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            continue
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ConfigError(f"defaults entries must be one-key mappings like "
                              f"'- detectors: [rules]', got {entry!r}")
        (group, choice), = entry.items()
        raw = _apply_default(raw, configs_dir, str(group), choice)
    return deep_merge(raw, body)


def load_experiment(path: str | Path, overrides: Sequence[str] = (), *,
                    configs_dir: str | Path | None = None) -> ExperimentConfig:
    """Compose, override and validate an experiment YAML.

    Parameters
    ----------
    path : experiment YAML (its ``defaults`` name blocks under ``configs_dir``).
    overrides : ``"dotted.key=value"`` strings applied last; values parsed by ``yaml.safe_load``.
    configs_dir : folder of the config groups; default from :func:`find_configs_dir`.

    Returns
    -------
    The validated :class:`ExperimentConfig`.

    Raises
    ------
    ConfigError naming the file or override, the bad key and the valid keys.
    """
    path = Path(path)
    root = Path(configs_dir) if configs_dir is not None else find_configs_dir(path)
    raw = compose(_read_yaml(path), root)
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(raw, key, value)
    config = _validate(raw, source=str(path))
    for dotted, values in config.sweep.items():
        # Fail at load time, not halfway through a sweep.
        keys = dotted.split(".")
        if not all(keys):
            raise ConfigError(f"sweep: malformed key {dotted!r}")
        _check_path(keys, f"sweep.{dotted}")
        for value in values:
            config.at_point({dotted: value})
    return config
