"""The rule catalogue: rules are data (YAML), validated here with pydantic.

A catalogue file holds ``version`` and a list ``rules``; each rule names a registered
*kind* (:data:`medfraud.rules.registry.KINDS`) and its parameters.  Unknown fields,
unknown kinds, bad parameters and duplicate ids are errors that name the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import medfraud
from medfraud.rules import kinds as _kinds  # noqa: F401  (registers every kind)
from medfraud.rules.registry import KINDS
from medfraud.schema import LEVELS

# Severity is an ordinal 1..4; names are accepted in YAML for readability.  The scale
# mirrors the doctors' credit-point deductions (2 / 3 / 6 / 12 points).
SEVERITY_NAMES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
STAGES = ("事前", "事中", "事后")
RESULT_CLASSES = ("违规", "可疑")


class Rule(BaseModel):
    """One audit rule.

    Attributes
    ----------
    id : unique rule id, e.g. ``R001``.
    name_zh, name_en : display names.
    kind : registered kind implementing the rule.
    params : the kind's parameters; validated and completed with the kind's defaults.
    reason_code : upper-case code shown with every hit, e.g. ``SEX_RESTRICTION``.
    stage : 事前 (before, while prescribing) | 事中 (at settlement) | 事后 (retrospective).
    severity : 1 (low) … 4 (critical); names low/medium/high/critical are accepted.
    result_class : 违规 (violation, certain) | 可疑 (suspicious, needs review).
    level : level of the hits: the kind's own level, or for claim kinds also an entity
        level (claim hits are then summed per patient / doctor / facility / pharmacy).
    enabled : disabled rules are kept in the catalogue but not evaluated.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    reason_code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    stage: Literal["事前", "事中", "事后"]
    severity: int = Field(ge=1, le=4)
    result_class: Literal["违规", "可疑"]
    level: str = "claim"
    enabled: bool = True

    @field_validator("severity", mode="before")
    @classmethod
    def _severity_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() not in SEVERITY_NAMES:
                raise ValueError(f"severity must be 1-4 or one of {list(SEVERITY_NAMES)}, "
                                 f"got {value!r}")
            return SEVERITY_NAMES[value.lower()]
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown rule kind {value!r}; known kinds: {sorted(KINDS)}")
        return value

    @model_validator(mode="after")
    def _check_kind_fit(self) -> Rule:
        kind = KINDS[self.kind]
        try:
            parsed = kind.params(**self.params)
        except ValidationError as exc:
            raise ValueError(f"rule {self.id}: bad params for kind {self.kind!r}: {exc}") from exc
        # Store the completed parameters so an exported catalogue is explicit.
        object.__setattr__(self, "params", parsed.model_dump())
        if self.level not in LEVELS:
            raise ValueError(f"rule {self.id}: level must be one of {LEVELS}, got {self.level!r}")
        if self.level != kind.level and kind.level != "claim":
            raise ValueError(f"rule {self.id}: kind {self.kind!r} produces {kind.level}-level "
                             f"hits; level must be {kind.level!r}, got {self.level!r}")
        return self

    def parsed_params(self):
        """The rule's parameters as the kind's pydantic model."""
        return KINDS[self.kind].params(**self.params)


class RuleCatalogue(BaseModel):
    """A versioned list of rules with unique ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleCatalogue:
        seen: set[str] = set()
        dups = sorted({r.id for r in self.rules if r.id in seen or seen.add(r.id)})
        if dups:
            raise ValueError(f"duplicate rule id(s): {dups}")
        return self

    @property
    def enabled(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(f"no rule {rule_id!r}; ids: {[r.id for r in self.rules]}")

    def to_yaml(self) -> str:
        """The catalogue as YAML (parameters completed), loadable by :func:`load_catalogue`."""
        return yaml.safe_dump(self.model_dump(), allow_unicode=True, sort_keys=False)


def default_catalogue_path() -> Path:
    """``configs/rules/default.yaml`` of the source tree."""
    return Path(medfraud.__file__).parents[2] / "configs" / "rules" / "default.yaml"


class CatalogueError(ValueError):
    """A catalogue file cannot be read or breaks the catalogue format."""


def load_catalogue(path: str | Path | None = None) -> RuleCatalogue:
    """Read and validate a rule catalogue.

    Parameters
    ----------
    path : YAML file; default ``configs/rules/default.yaml``.

    Raises
    ------
    CatalogueError naming the file and every problem (rule index, field, message).
    """
    path = Path(path) if path is not None else default_catalogue_path()
    if not path.is_file():
        raise CatalogueError(f"rule catalogue {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogueError(f"rule catalogue {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogueError(f"rule catalogue {path} must be a mapping with a 'rules' list")
    try:
        return RuleCatalogue.model_validate(raw)
    except ValidationError as exc:
        raise CatalogueError(f"rule catalogue {path} is invalid: {exc}") from exc
