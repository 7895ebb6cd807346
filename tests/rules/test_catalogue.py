"""Catalogue loading and validation errors."""

from __future__ import annotations

import pytest
import yaml

from medfraud.rules import KINDS, CatalogueError, RuleCatalogue, load_catalogue
from medfraud.rules.catalogue import default_catalogue_path

GOOD = {"id": "R900", "name_zh": "测试", "name_en": "test", "kind": "dose_over_label",
        "reason_code": "DOSE", "stage": "事前", "severity": 2, "result_class": "违规"}


def _write(tmp_path, rules, **top):
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "rules": rules, **top}, allow_unicode=True),
                    encoding="utf-8")
    return path


def test_default_catalogue_covers_every_kind():
    catalogue = load_catalogue()
    assert default_catalogue_path().is_file()
    assert {r.kind for r in catalogue.rules} == set(KINDS)
    assert len(KINDS) >= 20
    assert len({r.id for r in catalogue.rules}) == len(catalogue.rules)
    assert all(1 <= r.severity <= 4 for r in catalogue.rules)


def test_params_are_completed_with_kind_defaults(tmp_path):
    catalogue = load_catalogue(_write(tmp_path, [GOOD]))
    assert catalogue.rules[0].params == {"tolerance": 1.0}
    assert catalogue.rules[0].level == "claim" and catalogue.rules[0].enabled


def test_round_trip_through_yaml(tmp_path):
    catalogue = load_catalogue()
    path = tmp_path / "copy.yaml"
    path.write_text(catalogue.to_yaml(), encoding="utf-8")
    assert load_catalogue(path) == catalogue


def test_unknown_kind_lists_known_kinds(tmp_path):
    with pytest.raises(CatalogueError) as err:
        load_catalogue(_write(tmp_path, [dict(GOOD, kind="telepathy")]))
    message = str(err.value)
    assert "telepathy" in message and "sex_restriction" in message and "doctor_off_duty" in message


def test_missing_field_is_named(tmp_path):
    rule = {k: v for k, v in GOOD.items() if k != "reason_code"}
    with pytest.raises(CatalogueError, match="reason_code"):
        load_catalogue(_write(tmp_path, [rule]))


def test_extra_field_and_unknown_param_are_rejected(tmp_path):
    with pytest.raises(CatalogueError, match="colour"):
        load_catalogue(_write(tmp_path, [dict(GOOD, colour="red")]))
    with pytest.raises(CatalogueError, match="tolerence"):
        load_catalogue(_write(tmp_path, [dict(GOOD, params={"tolerence": 2})]))
    with pytest.raises(CatalogueError, match="tolerance"):
        load_catalogue(_write(tmp_path, [dict(GOOD, params={"tolerance": 0.5})]))


def test_bad_enums_and_duplicate_ids(tmp_path):
    with pytest.raises(CatalogueError, match="stage"):
        load_catalogue(_write(tmp_path, [dict(GOOD, stage="later")]))
    with pytest.raises(CatalogueError, match="severity"):
        load_catalogue(_write(tmp_path, [dict(GOOD, severity=7)]))
    with pytest.raises(CatalogueError, match="duplicate rule id"):
        load_catalogue(_write(tmp_path, [GOOD, GOOD]))
    with pytest.raises(CatalogueError, match="level"):
        load_catalogue(_write(tmp_path, [dict(GOOD, level="ward")]))


def test_severity_names_map_to_ordinals():
    rule = RuleCatalogue(rules=[dict(GOOD, severity="critical")]).rules[0]
    assert rule.severity == 4


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(path)
    with pytest.raises(CatalogueError, match="does not exist"):
        load_catalogue(tmp_path / "absent.yaml")
