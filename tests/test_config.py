"""Experiment config: composition from configs/, dotted overrides, unknown-key errors, sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfraud.config import ConfigError, ExperimentConfig, load_experiment, parse_override

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def _write(folder: Path, relative: str, data: dict) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A miniature configs/ + experiments/ tree."""
    _write(tmp_path, "configs/detectors/iso.yaml",
           {"family": "pyod", "level": "claim", "params": {"model": "IForest"}})
    _write(tmp_path, "configs/detectors/gbm.yaml",
           {"family": "lightgbm", "level": "claim", "params": {"num_leaves": 31}})
    _write(tmp_path, "configs/split/tg.yaml", {"kind": "temporal_grouped", "params": {"test_fraction": 0.25}})
    _write(tmp_path, "configs/tracking/local.yaml", {"uri": None, "experiment": "team-x"})
    _write(tmp_path, "experiments/exp.yaml", {
        "defaults": [{"synth": "tiny"}, {"split": "tg"}, {"detectors": ["iso", "gbm"]},
                     {"tracking": "local"}],
        "name": "exp", "seed": 3,
        "detectors": {"gbm": {"params": {"num_leaves": 15}}},
    })
    return tmp_path


def test_composition_merges_blocks_then_body(project):
    config = load_experiment(project / "experiments/exp.yaml")
    assert config.dataset.preset == "tiny"
    assert config.split.kind == "temporal_grouped" and config.split.params == {"test_fraction": 0.25}
    assert list(config.detectors) == ["iso", "gbm"]
    # the experiment body overrides one key of the block and keeps the rest
    assert config.detectors["gbm"].family == "lightgbm"
    assert config.detectors["gbm"].params == {"num_leaves": 15}
    assert config.experiment_name == "team-x"
    assert config.dataset.resolved_path(config.seed) == Path("data/tiny-seed3")


def test_dotted_overrides_parse_yaml_values(project):
    config = load_experiment(project / "experiments/exp.yaml", [
        "seed=11", "dataset.preset=small", "detectors.gbm.params.learning_rate=0.1",
        "metrics.budgets=[0.02, 0.1]", "detectors.extra.family=pyod", "tracking.experiment=null"])
    assert config.seed == 11 and config.dataset.preset == "small"
    assert config.detectors["gbm"].params == {"num_leaves": 15, "learning_rate": 0.1}
    assert config.metrics.budgets == [0.02, 0.1]
    assert config.detectors["extra"].family == "pyod" and config.detectors["extra"].level == "claim"
    assert config.experiment_name == "exp"


def test_null_override_removes_a_detector(project):
    config = load_experiment(project / "experiments/exp.yaml", ["detectors.iso=null"])
    assert list(config.detectors) == ["gbm"]


@pytest.mark.parametrize("override, fragment", [
    ("datset.preset=x", "did you mean 'dataset'"),
    ("dataset.presett=x", "did you mean 'preset'"),
    ("detectors.gbm.famly=x", "did you mean 'family'"),
    ("split.knd=temporal", "did you mean 'kind'"),
])
def test_unknown_override_key_suggests_close_match(project, override, fragment):
    with pytest.raises(ConfigError) as err:
        load_experiment(project / "experiments/exp.yaml", [override])
    assert fragment in str(err.value)
    assert "valid keys" in str(err.value)


def test_unknown_yaml_key_lists_valid_keys(project):
    _write(project, "experiments/bad.yaml", {
        "defaults": [{"synth": "tiny"}, {"detectors": ["iso"]}], "name": "bad",
        "split": {"kind": "temporal", "test_fracton": 0.2}, "audit": {"budgt": 0.1}})
    with pytest.raises(ConfigError) as err:
        load_experiment(project / "experiments/bad.yaml")
    text = str(err.value)
    assert "split.test_fracton" in text and "'kind', 'params'" in text
    assert "audit.budgt" in text and "did you mean 'budget'" in text


def test_bad_values_and_missing_blocks_are_named(project):
    with pytest.raises(ConfigError, match="split.kind"):
        load_experiment(project / "experiments/exp.yaml", ["split.kind=random"])
    with pytest.raises(ConfigError, match="key=value"):
        load_experiment(project / "experiments/exp.yaml", ["seed"])
    _write(project, "experiments/missing.yaml",
           {"defaults": [{"detectors": ["iso", "nope"]}], "name": "m", "dataset": {"preset": "tiny"}})
    with pytest.raises(ConfigError, match=r"no 'detectors' block named 'nope'.*available: \['gbm', 'iso'\]"):
        load_experiment(project / "experiments/missing.yaml")
    with pytest.raises(ConfigError, match="members"):
        load_experiment(project / "experiments/exp.yaml",
                        ["detectors.ens.family=ensemble", "detectors.ens.members=[iso, ghost]"])
    with pytest.raises(ConfigError, match="does not build"):
        load_experiment(project / "experiments/exp.yaml",
                        ["features.levels=[doctor]"])
    with pytest.raises(ConfigError, match="preset.*or 'path'"):
        load_experiment(project / "experiments/exp.yaml", ["dataset.preset=null"])


def test_yaml_is_loaded_safely(project):
    (project / "experiments/evil.yaml").write_text(
        "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(project / "experiments/evil.yaml")
    assert parse_override("detectors.a.params.n=[1, 2]") == ("detectors.a.params.n", [1, 2])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("name=!!python/object/apply:os.system ['echo']")


def test_sweep_points_and_hashing(project):
    config = load_experiment(project / "experiments/exp.yaml", [
        "sweep={dataset.camouflage: [0.0, 0.5], detectors.gbm.params.num_leaves: [7, 63]}"])
    points = config.sweep_points()
    assert len(points) == 4 and points[0] == {"dataset.camouflage": 0.0,
                                              "detectors.gbm.params.num_leaves": 7}
    at = config.at_point(points[3])
    assert at.dataset.camouflage == 0.5 and at.detectors["gbm"].params["num_leaves"] == 63
    assert at.sweep == {}
    assert "typologies.collusion_ring.camouflage=0.5" in at.dataset.overrides_list()
    # each dataset variant gets its own cache folder; the same variant the same one
    paths = {config.at_point(p).dataset.resolved_path(3) for p in points}
    assert len(paths) == 2
    assert config.dataset.resolved_path(3) not in paths
    cached = load_experiment(project / "experiments/exp.yaml", [
        "dataset.path=cache/tiny", "sweep={dataset.camouflage: [0.0, 0.5], seed: [1, 2]}"])
    folders = {str(cached.at_point(p).dataset.resolved_path(0)) for p in cached.sweep_points()}
    assert len(folders) == 4 and all(f.startswith("cache/tiny-tiny-seed") for f in folders)
    with pytest.raises(ConfigError, match="camoflage"):
        load_experiment(project / "experiments/exp.yaml", ["sweep={dataset.camoflage: [0.1]}"])
    with pytest.raises(ConfigError, match="less than or equal to 1"):
        load_experiment(project / "experiments/exp.yaml", ["sweep={dataset.camouflage: [0.5, 2]}"])


def test_resolved_yaml_round_trips_and_params_flatten(project, tmp_path):
    config = load_experiment(project / "experiments/exp.yaml", ["dataset.synth_overrides=[a.b=1]"])
    assert config.dataset.synth_overrides == {"a": {"b": 1}}
    again = ExperimentConfig.model_validate(yaml.safe_load(config.to_yaml()))
    assert again == config
    params = config.flat_params(max_len=40)
    assert params["detectors.gbm.params.num_leaves"] == "15"
    assert params["dataset.synth_overrides.a.b"] == "1"
    assert all(len(v) <= 40 for v in params.values())
    assert params["features.levels"].endswith("...")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiments_load(path):
    config = load_experiment(path, configs_dir=REPO / "configs")
    assert config.detectors
    for point in config.sweep_points():
        config.at_point(point)


def test_quickstart_shape():
    config = load_experiment(REPO / "experiments/quickstart.yaml", ["dataset.preset=tiny"],
                             configs_dir=REPO / "configs")
    assert config.dataset.preset == "tiny" and config.split.kind == "temporal_grouped"
    assert {d.family for d in config.detectors.values()} == {"rules", "pyod", "lightgbm", "ensemble"}
    camouflage = load_experiment(REPO / "experiments/camouflage.yaml", configs_dir=REPO / "configs")
    assert [p["dataset.camouflage"] for p in camouflage.sweep_points()] == [0.0, 0.3, 0.6, 0.9]
