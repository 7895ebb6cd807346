"""Presets, overrides and validation of the scenario config."""

from __future__ import annotations

import pytest

import data_synth
from data_synth.config import PRESET_DIR, SynthConfig
from medfraud.schema import TYPOLOGIES


@pytest.mark.parametrize("preset", ["tiny", "small", "medium", "large"])
def test_presets_load_with_every_typology(preset):
    config = data_synth.load_config(preset)
    assert list(config.typologies) == list(TYPOLOGIES)
    assert all(t.prevalence > 0 for t in config.typologies.values())
    if preset != "tiny":
        assert config.months == 12


@pytest.mark.parametrize("preset, claims", [("small", 200_000), ("medium", 2_000_000), ("large", 20_000_000)])
def test_preset_sizes(preset, claims):
    expected = data_synth.load_config(preset).expected_claims()
    assert 0.9 * claims <= expected <= 1.1 * claims


def test_overrides_parse_yaml_values():
    config = data_synth.load_config("tiny", seed=11, overrides=[
        "typologies.ghost_bed.camouflage=0.5", "populations.regions=4", "start_date=2023-07-01",
        "typologies.collusion_ring.params.rings=5"])
    assert config.seed == 11
    assert config.typologies["ghost_bed"].camouflage == 0.5
    assert config.populations.regions == 4
    assert str(config.start_date) == "2023-07-01"
    assert config.typologies["collusion_ring"].params["rings"] == 5


def test_unknown_override_lists_close_matches():
    with pytest.raises(ValueError, match=r"care\.death_rate"):
        data_synth.load_config("tiny", overrides=["care.deathrate=0.1"])
    with pytest.raises(ValueError, match="dotted.path=value"):
        data_synth.load_config("tiny", overrides=["care.death_rate"])


def test_invalid_values_and_names_are_rejected():
    with pytest.raises(ValueError, match="camouflage"):
        data_synth.load_config("tiny", overrides=["typologies.upcoding.camouflage=1.5"])
    with pytest.raises(ValueError, match="upcoding"):
        SynthConfig.model_validate({"typologies": {"upcodng": {"prevalence": 0.1}}})
    with pytest.raises(ValueError, match="extra"):
        SynthConfig.model_validate({"populations": {"patients": 10, "dogs": 3}})
    with pytest.raises(ValueError, match="unknown key"):
        SynthConfig.model_validate({"typologies": {"upcoding": {"params": {"nope": 1}}}})


def test_preset_path_and_missing_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((PRESET_DIR / "tiny.yaml").read_text() + "\nmonths: 2\n")
    assert data_synth.load_config(path).months == 2
    with pytest.raises(FileNotFoundError, match="tiny"):
        data_synth.load_config("nosuchpreset")
