"""YAML configs load into typed, validated dataclasses; overrides, typos and out-of-range values are handled."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.__main__ import main
from training.config import Config, ConfigError, Schedule, config_dict, load_config
from training.metrics import LARGEST_CUTOFF
from training.pipeline import parse_stages

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# configs/study.yaml is a study design (face_app.study, tests/test_study.py), not a build config.
BUILD_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "study.yaml")


@pytest.mark.parametrize("path", BUILD_CONFIGS, ids=lambda p: p.name)
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
    with pytest.raises(ConfigError, match=r"c\.yaml: cf\.lightgcn\.dimm: unknown key"):
        load_config(path)


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["cf.seeds"])


def test_stages_run_in_pipeline_order_whatever_the_order_given() -> None:
    assert parse_stages("eval,data") == ["data", "eval"]
    assert parse_stages(None) == ["data", "cf", "face", "index", "tune", "eval", "export"]
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("data,train")


TINY = CONFIGS / "tiny.yaml"

# (override, the key the error must name, what it must say)
BAD_VALUES = [
    ("cf.lightgcn.lr=abc", "cf.lightgcn.lr", "valid number"),
    ("cf.seeds=3", "cf.seeds", "valid list"),
    ("cf.seeds=[]", "cf.seeds", "at least 1"),
    ("cf.lightgcn.lr=-0.1", "cf.lightgcn.lr", "greater than 0"),
    ("cf.sasrec.batch_size=0", "cf.sasrec.batch_size", "greater than 0"),
    ("eval.batch_size=0", "eval.batch_size", "greater than 0"),
    ("face.patience=0", "face.patience", "greater than 0"),
    (f"tune.eval_beams={LARGEST_CUTOFF - 1}", "tune.eval_beams", f"at least {LARGEST_CUTOFF}"),
    ("tune.taste=maybe", "tune.taste", "'prompt', 'answer'"),
    ("tune.precision=fp16", "tune.precision", "auto, fp32, bf16"),
    ("tune.tasks={next: -1}", "tune.tasks.next", "greater than or equal to 0"),
    ("cf.models=[Pop,BPR]", "cf.models[1]", "'LightGCN'"),
    ("index.embedding=words", "index.embedding", "'text+cf'"),
    ("cf.lightgcn.dimm=3", "cf.lightgcn.dimm", "unknown key"),
    ("threads=0", "threads", "greater than 0"),
]


@pytest.mark.parametrize(("override", "key", "says"), BAD_VALUES, ids=[row[0] for row in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_file_and_the_key(override: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(TINY, [override])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{TINY}: {key}: ")
    assert says in message
    assert f"from --set {override.split('=')[0]}=" in message


def test_a_bad_value_in_the_file_names_the_file_without_an_override(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tune:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"^\S*bad\.yaml: tune\.lr: Input should be a valid number.*'fast'\)$"):
        load_config(path)


@pytest.mark.parametrize("taste", ["true", "false", "prompt", "answer", "none"])
def test_taste_takes_a_boolean_or_a_place(taste: str) -> None:
    assert load_config(TINY, [f"tune.taste={taste}"]).tune.taste == yaml.safe_load(taste)


def test_the_build_command_stops_on_a_bad_value_with_one_line_and_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["build", "--config", str(TINY), "--workdir", str(tmp_path / "w"), "--set", "cf.lightgcn.lr=abc"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(
        f"error: {TINY}: cf.lightgcn.lr: Input should be a valid number, unable to parse string as a number "
        "(got 'abc') from --set cf.lightgcn.lr=abc"
    )
    assert not (tmp_path / "w").exists()  # nothing was built


@pytest.mark.parametrize("path", BUILD_CONFIGS, ids=lambda p: p.name)
def test_a_config_survives_a_round_trip_through_yaml(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(config_dict(config), sort_keys=False))
    assert load_config(copy) == config
    assert config_dict(load_config(copy)) == config_dict(config)


def test_the_shared_schedule_is_one_set_of_fields() -> None:
    config = Config()
    for section in (config.cf.lightgcn, config.cf.sasrec, config.face):
        assert isinstance(section, Schedule)
        assert {"epochs", "eval_every", "patience"} <= {f.name for f in dataclasses.fields(section)}
    assert (config.cf.lightgcn.epochs, config.cf.sasrec.epochs, config.face.epochs) == (400, 120, 6)


def test_replace_validates_again() -> None:
    tune = Config().tune
    assert dataclasses.replace(tune, max_steps=1).max_steps == 1
    with pytest.raises(ValidationError):
        dataclasses.replace(tune, lr=0.0)


def test_broken_yaml_is_one_line_too(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("cf: [0\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"--set cf\.seeds=\[0: not a YAML value"):
        load_config(TINY, ["cf.seeds=[0"])
