"""Scenario configuration of the generator: pydantic models, presets and dotted overrides.

A preset is a YAML file in ``configs/synth/``; :func:`load_config` reads it, applies
``dotted.path=value`` overrides (values parsed with ``yaml.safe_load``), optionally scales
the populations to about ``claims`` claims, and validates the result as a
:class:`SynthConfig`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medfraud.schema import TYPOLOGIES

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "synth"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Populations(_Strict):
    """Sizes of the world (counts of registry rows)."""

    patients: int = Field(2_000, ge=10)
    doctors: int = Field(150, ge=5)
    facilities: int = Field(20, ge=2)
    pharmacies: int = Field(25, ge=2)
    drugs: int = Field(200, ge=40)
    regions: int = Field(6, ge=2, le=99)

    @model_validator(mode="after")
    def _enough_per_region(self) -> Populations:
        if self.facilities < self.regions or self.pharmacies < self.regions:
            raise ValueError(f"need at least one facility and one pharmacy per region: regions="
                             f"{self.regions}, facilities={self.facilities}, pharmacies={self.pharmacies}")
        if self.doctors < self.facilities:
            raise ValueError(f"need at least one doctor per facility: doctors={self.doctors}, "
                             f"facilities={self.facilities}")
        return self


class CarePatterns(_Strict):
    """Honest behaviour; rates are per patient and month unless stated."""

    outpatient_rate: float = Field(0.45, ge=0, description="outpatient visits / patient / month")
    inpatient_rate: float = Field(0.012, ge=0, description="admissions / patient / month")
    online_rate: float = Field(0.06, ge=0, description="online consultations / patient / month")
    flow_share: float = Field(0.35, ge=0, le=1,
                              description="share of outpatient visits whose drugs flow to a pharmacy")
    online_rx_share: float = Field(0.7, ge=0, le=1,
                                   description="share of online consultations with a prescription")
    seasonality: float = Field(0.25, ge=0, lt=1, description="winter peak amplitude of visit rates")
    activity_shape: float = Field(0.8, gt=0,
                                  description="gamma shape of per-patient activity (small = heavy tail)")
    chronic_share: float = Field(0.12, ge=0, le=1, description="share of patients with a chronic disease")
    death_rate: float = Field(0.01, ge=0, le=1, description="deaths / patient / year")
    cross_region_share: float = Field(0.05, ge=0, le=1, description="share of visits outside home region")
    home_facility_share: float = Field(0.6, ge=0, le=1,
                                       description="share of visits at the patient's usual facility")
    chain_share: float = Field(0.4, ge=0, le=1, description="share of pharmacies in a chain")
    duty_rate: float = Field(0.88, gt=0, le=1, description="chance a doctor is on duty on a weekday")
    weekend_duty_rate: float = Field(0.25, ge=0, le=1,
                                     description="chance a doctor is on duty on a weekend day")


class AuditConfig(_Strict):
    """The biased audit sample written to ``audited``."""

    claim_rate: float = Field(0.03, ge=0, le=1, description="mean share of claims audited")
    entity_rate: float = Field(0.05, ge=0, le=1, description="mean share of entities audited")
    fraud_boost: float = Field(2.0, ge=0, description="extra audit odds of a blatant fraud case")
    spend_bias: float = Field(0.7, ge=0, description="exponent of the spend weight (0 = unbiased)")


class TypologyConfig(_Strict):
    """One fraud typology.

    Attributes
    ----------
    prevalence : labelled claims of this typology per honest claim (0 disables it).
    intensity : how extreme each fraudulent act is (1 = default; excess quantity, frequency…).
    camouflage : 0 = blatant, 1 = statistically close to normal behaviour.
    drift : per-month change of the typology's rate: month m has weight ``(1 + drift) ** m``.
    params : typology-specific parameters (see docs/generator.md); keys are fixed per typology.
    """

    prevalence: float = Field(0.01, ge=0, le=0.5)
    intensity: float = Field(1.0, gt=0, le=10)
    camouflage: float = Field(0.0, ge=0, le=1)
    drift: float = Field(0.0, gt=-0.5, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)


def _default_typologies() -> dict[str, TypologyConfig]:
    from data_synth.typologies import DEFAULT_PARAMS

    return {name: TypologyConfig(params=dict(DEFAULT_PARAMS[name])) for name in TYPOLOGIES}


class SynthConfig(_Strict):
    """A complete, validated scenario for :func:`data_synth.generate`."""

    seed: int = Field(0, ge=0)
    start_date: date = date(2024, 1, 1)
    months: int = Field(12, ge=1, le=60)
    populations: Populations = Field(default_factory=Populations)
    care: CarePatterns = Field(default_factory=CarePatterns)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    shard_claims: int = Field(1_000_000, ge=1_000, description="about this many claims per shard")
    typologies: dict[str, TypologyConfig] = Field(default_factory=_default_typologies)

    @model_validator(mode="after")
    def _check_typologies(self) -> SynthConfig:
        from data_synth.typologies import DEFAULT_PARAMS

        unknown = sorted(set(self.typologies) - set(TYPOLOGIES))
        if unknown:
            hints = {u: difflib.get_close_matches(u, TYPOLOGIES, n=3) for u in unknown}
            raise ValueError(f"unknown typology name(s) {unknown}; close matches: {hints}; "
                             f"valid: {list(TYPOLOGIES)}")
        for name in TYPOLOGIES:
            typ = self.typologies.setdefault(name, TypologyConfig(prevalence=0.0))
            bad = sorted(set(typ.params) - set(DEFAULT_PARAMS[name]))
            if bad:
                raise ValueError(f"typologies.{name}.params: unknown key(s) {bad}; valid: "
                                 f"{sorted(DEFAULT_PARAMS[name])}")
            typ.params = {**DEFAULT_PARAMS[name], **typ.params}
        self.typologies = {name: self.typologies[name] for name in TYPOLOGIES}
        return self

    @property
    def n_days(self) -> int:
        """Length of the simulated period in days."""
        return (_add_months(self.start_date, self.months) - self.start_date).days

    def expected_claims_per_patient(self) -> float:
        """Approximate honest claims per patient over the whole period (for scaling)."""
        c = self.care
        per_month = (c.outpatient_rate * (1 + c.flow_share) + c.online_rate * (1 + c.online_rx_share)
                     + c.inpatient_rate + c.chronic_share * 30.0 / 50.0)
        return per_month * self.n_days / 30.4

    def expected_claims(self) -> float:
        """Approximate total claims, honest plus injected fraud."""
        fraud = sum(t.prevalence for t in self.typologies.values())
        return self.populations.patients * self.expected_claims_per_patient() * (1 + fraud)


def _add_months(start: date, months: int) -> date:
    year, month = divmod(start.month - 1 + months, 12)
    return date(start.year + year, month + 1, 1) if start.day == 1 else \
        date(start.year + year, month + 1, min(start.day, 28))


# ---------------------------------------------------------------- loading and overrides

def _leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, Mapping):
        out = [prefix] if prefix and not value else []
        for key, sub in value.items():
            out += _leaf_paths(sub, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [prefix]


def valid_paths(config: SynthConfig | None = None) -> list[str]:
    """Every dotted path an override may set (leaves of the config)."""
    config = config or SynthConfig()
    return _leaf_paths(config.model_dump(mode="json"))


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.path=value`` strings to a raw config dict (copy) and return it.

    Raises
    ------
    ValueError naming the override and listing close matches when the path is unknown
    or the string has no ``=``.
    """
    resolved = SynthConfig.model_validate(raw).model_dump(mode="json")
    paths = _leaf_paths(resolved)
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like dotted.path=value")
        path, text = override.split("=", 1)
        path = path.strip()
        if path not in paths:
            close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown config path {path!r} in override {override!r}{hint}")
        value = yaml.safe_load(text)
        node = resolved
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return resolved


def scale_to_claims(config: SynthConfig, claims: int) -> SynthConfig:
    """Scale every population except drugs and regions so the dataset has about ``claims`` claims."""
    if claims < 100:
        raise ValueError(f"claims must be at least 100, got {claims}")
    factor = claims / config.expected_claims()
    pop = config.populations
    scaled = pop.model_copy(update={
        "patients": max(10, round(pop.patients * factor)),
        "doctors": max(pop.regions * 2, round(pop.doctors * factor)),
        "facilities": max(pop.regions, round(pop.facilities * factor)),
        "pharmacies": max(pop.regions, round(pop.pharmacies * factor)),
    })
    scaled = scaled.model_copy(update={"doctors": max(scaled.doctors, scaled.facilities)})
    data = config.model_dump(mode="json")
    data["populations"] = scaled.model_dump()
    return SynthConfig.model_validate(data)


def load_config(preset: str | Path, *, seed: int | None = None, claims: int | None = None,
                overrides: Sequence[str] = ()) -> SynthConfig:
    """Read a preset, apply overrides, seed and scale; return the validated config.

    Parameters
    ----------
    preset : a preset name (``configs/synth/<name>.yaml``) or a path to a YAML file.
    seed : replaces the preset's seed.
    claims : scale the populations to about this many claims in total.
    overrides : ``"dotted.path=value"`` strings, e.g. ``"typologies.upcoding.prevalence=0.02"``.

    Raises
    ------
    FileNotFoundError for an unknown preset (listing the available ones); ValueError for
    an unknown override path (with close matches) or invalid values.
    """
    path = Path(preset)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no synth preset {str(preset)!r}: {path} does not exist; "
                                f"available presets: {available}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a synth preset must be a YAML mapping, got {type(raw).__name__}")
    data = apply_overrides(raw, overrides)
    if seed is not None:
        data["seed"] = seed
    config = SynthConfig.model_validate(data)
    if claims is not None:
        config = scale_to_claims(config, claims)
    return config


def config_summary(config: SynthConfig) -> dict[str, Any]:
    """JSON-ready dict of the config (for the manifest)."""
    return config.model_dump(mode="json")


def month_weights(months: int, drift: float) -> list[float]:
    """Relative weight of each month for a typology with ``drift`` (sums to ``months``)."""
    raw = [math.pow(1 + drift, m) for m in range(months)]
    total = sum(raw)
    return [months * r / total for r in raw]
