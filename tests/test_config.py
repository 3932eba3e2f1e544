"""YAML configs load into typed dataclasses; overrides and typos are handled."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import Config, load_config
from training.pipeline import parse_stages

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.name == path.stem


def test_yaml_values_and_defaults_are_layered(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ncf:\n  lightgcn:\n    dim: 16\n")
    config = load_config(path, ["cf.seeds=[5]", "cf.sasrec.lr=0.01"])
    assert config.cf.lightgcn.dim == 16
    assert config.cf.lightgcn.layers == Config().cf.lightgcn.layers
    assert config.cf.seeds == [5]
    assert config.cf.sasrec.lr == pytest.approx(0.01)


def test_unknown_key_is_rejected_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cf:\n  lightgcn:\n    dimm: 16\n")
    with pytest.raises(ValueError, match=r"dimm.*cf\.lightgcn"):
        load_config(path)


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["cf.seeds"])


def test_stages_run_in_pipeline_order_whatever_the_order_given() -> None:
    assert parse_stages("eval,data") == ["data", "eval"]
    assert parse_stages(None) == ["data", "cf", "face", "index", "tune", "eval"]
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("data,train")
