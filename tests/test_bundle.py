"""The bundle reader checks every file against the manifest and says how to rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face_app.bundle import FORMAT_VERSION, BundleError, pca_2d, verify, write_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny"
    (directory / "readout").mkdir(parents=True)
    (directory / "readout" / "weights.safetensors").write_bytes(b"\x00" * 64)
    (directory / "map.json").write_text(json.dumps({"item_ids": ["1"], "xy": [[0.0, 0.0]]}))
    write_manifest(directory, name="tiny", dataset={"source": "ml-100k"}, report={"models": {}})
    return directory


def test_manifest_lists_every_file_with_its_sha256(bundle_dir: Path) -> None:
    manifest = verify(bundle_dir)
    assert manifest["format"] == FORMAT_VERSION and manifest["name"] == "tiny"
    assert set(manifest["files"]) == {"readout/weights.safetensors", "map.json"}
    assert manifest["files"]["readout/weights.safetensors"]["bytes"] == 64
    assert len(manifest["files"]["map.json"]["sha256"]) == 64


@pytest.mark.parametrize("damage", ["altered", "missing", "unlisted"])
def test_a_damaged_bundle_names_the_file_and_the_rebuild_command(bundle_dir: Path, damage: str) -> None:
    weights = bundle_dir / "readout" / "weights.safetensors"
    if damage == "altered":
        weights.write_bytes(b"\x01" * 64)
    elif damage == "missing":
        weights.unlink()
    else:
        (bundle_dir / "extra.json").write_text("{}")
    with pytest.raises(BundleError) as error:
        verify(bundle_dir)
    message = str(error.value)
    assert ("extra.json" if damage == "unlisted" else "readout/weights.safetensors") in message
    assert "python -m training build --config configs/tiny.yaml --workdir runs/tiny --stages export" in message


def test_no_bundle_and_another_format_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="manifest.json is missing"):
        verify(tmp_path / "nowhere")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    (bundle_dir / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(BundleError, match="format 99"):
        verify(bundle_dir)


def test_map_projection_keeps_the_main_axis_of_the_embeddings() -> None:
    rng = np.random.default_rng(0)
    points = np.outer(np.linspace(-3, 3, 50), [1.0, 2.0, 0.0]) + 0.01 * rng.normal(size=(50, 3))
    xy = pca_2d(points)
    assert xy.shape == (50, 2) and np.abs(xy).max() == pytest.approx(1.0)
    assert abs(np.corrcoef(xy[:, 0], np.linspace(-3, 3, 50))[0, 1]) > 0.999


def test_app_without_a_bundle_says_how_to_build_one(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "app.py", "--bundle", str(tmp_path / "none")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no model bundle" in result.stderr and "python -m training build --config configs/" in result.stderr
