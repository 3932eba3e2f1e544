"""The model bundle: what training hands to the app, in one directory, checked file by file.

Layout of `assets/<name>/` (written by the `export` stage, `training/export.py`):

    manifest.json        format version, dataset and its pinned source (sha256), base model source (sha256),
                         the build config, the full report.json under "report", every file with its sha256
    readout/             FACE read-out: CF (LightGCN+FACE) item embeddings, descriptors (`Descriptors.save`)
    item_index.json      item id <-> index tokens (`ItemIndex.save`), when the build has an index
    model/               the tuned LLM: LoRA adapter, added-token rows, generator.json (`ItemGenerator.load`)
    map.json             a 2-D projection of the CF item embeddings (PCA), for the catalog map
    personas.json        ids of test users a visitor can start from (their histories come from the dataset)

Everything is safetensors or JSON; MovieLens titles are not in a bundle (the app reads the dataset
through the pinned sources at start). `Bundle.load(directory)` checks every file against the manifest
and raises `BundleError` naming the bad file and the command that rebuilds the bundle; a file that
matches its manifest entry but still cannot be read (a bundle re-signed after damage) is named the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from face_app.sources import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
READOUT_DIR = "readout"
INDEX_FILE = "item_index.json"
MODEL_DIR = "model"
MAP_FILE = "map.json"
PERSONAS_FILE = "personas.json"


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, altered, or of another format version."""


def rebuild_command(name: str) -> str:
    return f"python -m training build --config configs/{name}.yaml --workdir runs/{name} --stages export"


def _rebuild(name: str) -> str:
    return f"Rebuild it with: {rebuild_command(name)}"


@contextmanager
def reading(directory: Path, relative: str, name: str) -> Iterator[None]:
    """Turn any failure to read `relative` (of the bundle at `directory`) into a BundleError naming it."""
    try:
        yield
    except BundleError:
        raise
    except Exception as error:  # a corrupt file fails in whichever reader (safetensors, json, peft) opened it
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise BundleError(f"bundle {directory}: {relative} could not be read ({type(error).__name__}: {detail}). "
                          f"{_rebuild(name)}") from None


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"sha256", "bytes"}} for every file under `directory` except the manifest."""
    table = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST:
            table[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def write_manifest(directory: Path, **fields: Any) -> dict[str, Any]:
    """Write `manifest.json` listing every file now in `directory`; `fields` go in as they are."""
    manifest = {"format": FORMAT_VERSION, **fields, "files": file_table(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return manifest


def verify(directory: Path) -> dict[str, Any]:
    """Check every file of a bundle against its manifest; return the manifest.

    Raises BundleError naming the first missing or altered file (or an unlisted one), with the
    rebuild command.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise BundleError(f"no bundle at {directory}: {MANIFEST} is missing. Build one with: "
                          + rebuild_command(directory.name))
    try:
        manifest = json.loads(path.read_text())
        files = manifest.get("files", {})
        entries = {relative: (int(entry["bytes"]), str(entry["sha256"])) for relative, entry in files.items()}
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        raise BundleError(f"bundle {directory}: {MANIFEST} is not a bundle manifest ({type(error).__name__}: "
                          f"{error}). {_rebuild(directory.name)}") from None
    name = str(manifest.get("name") or directory.name)
    again = _rebuild(name)
    found = manifest.get("format")
    if found != FORMAT_VERSION:
        if isinstance(found, int) and found > FORMAT_VERSION:
            raise BundleError(f"bundle {directory}: {MANIFEST} is format {found}, newer than this app reads "
                              f"(format {FORMAT_VERSION}). Update face-app (git pull, then pip install -r "
                              f"requirements.txt) or serve a bundle of format {FORMAT_VERSION}.")
        raise BundleError(f"bundle {directory}: {MANIFEST} is format {found!r}; this app reads format "
                          f"{FORMAT_VERSION}. {again}")
    for relative, (size, sha256) in entries.items():
        file = directory / relative
        if not file.is_file():
            raise BundleError(f"bundle {directory}: {relative} is missing. {again}")
        if file.stat().st_size != size or sha256_file(file) != sha256:
            raise BundleError(f"bundle {directory}: {relative} does not match its sha256 in {MANIFEST} "
                              f"(altered or truncated). {again}")
    unlisted = sorted(set(file_table_names(directory)) - set(entries))
    if unlisted:
        raise BundleError(f"bundle {directory}: {unlisted[0]} is not in {MANIFEST}. {again}")
    return manifest


def check_readable(directory: Path, manifest: dict[str, Any], name: str) -> None:
    """Parse every JSON file and open every safetensors header the manifest lists (cheap: no tensor is read),
    so a damaged file is named before any model is built from it."""
    from safetensors import safe_open

    for relative in manifest.get("files", {}):
        with reading(directory, relative, name):
            if relative.endswith(".json"):
                json.loads((directory / relative).read_text())
            elif relative.endswith(".safetensors"):
                with safe_open(directory / relative, framework="pt") as tensors:
                    tensors.keys()


def file_table_names(directory: Path) -> list[str]:
    return [p.relative_to(directory).as_posix() for p in directory.rglob("*")
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")]


@dataclass
class Bundle:
    """A verified bundle. `descriptors`, `index` and `generator()` load the trained pieces.

    item_map: item id -> (x, y) on the catalog map. personas: dataset user ids to start from.
    """

    directory: Path
    manifest: dict[str, Any]
    item_map: dict[str, tuple[float, float]] = field(default_factory=dict)
    personas: list[str] = field(default_factory=list)
    descriptors: Any = None
    index: Any = None
    _generator: Any = None

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        """Verify every file, then load the read-out, the index, the map and the personas (not the LLM)."""
        directory = Path(directory)
        manifest = verify(directory)
        from face_app.descriptors import Descriptors

        bundle = cls(directory=directory, manifest=manifest)
        name = bundle.name
        check_readable(directory, manifest, name)
        with reading(directory, f"{READOUT_DIR}/", name):
            bundle.descriptors = Descriptors.load(directory / READOUT_DIR)
        if (directory / INDEX_FILE).exists():
            from face_app.index import ItemIndex

            with reading(directory, INDEX_FILE, name):
                bundle.index = ItemIndex.load(directory / INDEX_FILE)
        if (directory / MAP_FILE).exists():
            with reading(directory, MAP_FILE, name):
                bundle.item_map = read_map(directory)
        if (directory / PERSONAS_FILE).exists():
            with reading(directory, PERSONAS_FILE, name):
                bundle.personas = read_personas(directory)
        return bundle

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.directory.name)

    @property
    def dataset(self) -> dict[str, Any]:
        """{"source", "paths", "wheel": {...}}: how the app reads the catalog."""
        return self.manifest["dataset"]

    @property
    def has_generator(self) -> bool:
        return (self.directory / MODEL_DIR).is_dir()

    @property
    def generator_spec(self) -> Any:
        """The tuned model's `GeneratorSpec` (base model, history length, whether prompts carry titles), or None."""
        from face_app.decoder import GENERATOR_FILE, GeneratorSpec

        model_dir = self.directory / MODEL_DIR
        return GeneratorSpec.load(model_dir) if (model_dir / GENERATOR_FILE).exists() else None

    def generator(self) -> Any:
        """The tuned LLM (`ItemGenerator`), loaded on first use."""
        if self._generator is None:
            if not self.has_generator:
                raise BundleError(f"bundle {self.directory} has no tuned LLM ({MODEL_DIR}/); "
                                  f"rebuild it with the tune stage: {rebuild_command(self.name)}")
            from face_app.decoder import ItemGenerator

            with reading(self.directory, f"{MODEL_DIR}/", self.name):
                self._generator = ItemGenerator.load(self.directory / MODEL_DIR)
        return self._generator

    def tokens(self, item_id: str) -> str:
        """The item's index tokens, e.g. `<a_12><b_3><c_40>` ("" without an index)."""
        if self.index is None:
            return ""
        return self.index.text(item_id) if item_id in self.index else ""


def write_map(directory: Path, item_ids: list[str], item_embeddings: np.ndarray) -> None:
    """`map.json`: each item's place on the catalog map, the PCA of its CF embedding (`pca_2d`)."""
    xy = pca_2d(np.asarray(item_embeddings, dtype=np.float64))
    (directory / MAP_FILE).write_text(json.dumps(
        {"method": "PCA of the CF item embeddings", "item_ids": [str(i) for i in item_ids],
         "xy": np.round(xy, 4).tolist()}))


def read_map(directory: Path) -> dict[str, tuple[float, float]]:
    """`map.json` as item id -> (x, y)."""
    data = json.loads((directory / MAP_FILE).read_text())
    return {str(i): (float(x), float(y)) for i, (x, y) in zip(data["item_ids"], data["xy"], strict=True)}


def write_personas(directory: Path, user_ids: list[str]) -> None:
    """`personas.json`: the dataset users a visitor can start from (their histories are read from the dataset)."""
    (directory / PERSONAS_FILE).write_text(json.dumps({"user_ids": [str(u) for u in user_ids]}))


def read_personas(directory: Path) -> list[str]:
    return [str(u) for u in json.loads((directory / PERSONAS_FILE).read_text())["user_ids"]]


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """[n, d] -> [n, 2]: the first two principal components, scaled to [-1, 1], sign fixed by the largest entry."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    for k in range(xy.shape[1]):
        if xy[np.argmax(np.abs(xy[:, k])), k] < 0:
            xy[:, k] = -xy[:, k]
    scale = np.abs(xy).max(axis=0)
    return xy / np.where(scale > 0, scale, 1.0)


def build_facts(directory: Path) -> dict[str, str]:
    """What a study's logged events name the build by: the sha256 of the bundle's manifest (which pins every file
    of it) and the app's git commit (`FACE_APP_COMMIT` where the app runs without its checkout, as on a Space;
    "unknown" when neither says)."""
    manifest = hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()
    commit = os.environ.get("FACE_APP_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                    capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
    return {"bundle_manifest_sha256": manifest, "commit": commit or "unknown"}
