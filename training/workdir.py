"""The layout of a build's workdir: every path a stage reads or writes, asked of one object.

    <workdir>/
      config.json  commands.json  machines.json  timings.json  report.json  report.md  plots/<model>.png
      <stage>/.done                     the pipeline's marker (config hash, seconds)
      <stage>/earlier_seconds.json      seconds of earlier work a resumed stage continued
      <stage>/report_extra.json         keys a stage adds to the report (index, descriptors)
      data/{interactions,items,users}.parquet
      cf/<model>/seed<k>/{model.safetensors,run.json}
      face/seed<k>/{model.safetensors,run.json}  face/readout/  face/descriptors.json
      index/item_index.json
      tune/checkpoint/  tune/best/  tune/curves.png  tune/model/   (the tuned generator, face_app.decoder)

A stage spells none of these names; it asks `Workdir(path)`. No imports from `training`: every module may
use it.
"""

from __future__ import annotations

from pathlib import Path

RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
# A stage that resumed work an earlier run left (the tune stage, from its checkpoint) writes the seconds that
# work took here; the pipeline adds them to the stage's time.
EARLIER_SECONDS = "earlier_seconds.json"


class Workdir:
    """Paths of one build's workdir (see the module docstring for the tree)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Workdir({str(self.path)!r})"

    # --- the build as a whole ---

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def commands_file(self) -> Path:
        return self.path / "commands.json"

    @property
    def machines_file(self) -> Path:
        return self.path / "machines.json"

    @property
    def timings_file(self) -> Path:
        return self.path / "timings.json"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def plot(self, name: str) -> Path:
        """The loss-curve plot of evaluated model `name`."""
        return self.plots / f"{name}.png"

    # --- any stage ---

    def stage(self, name: str) -> Path:
        return self.path / name

    def done_marker(self, stage: str) -> Path:
        return self.stage(stage) / ".done"

    def earlier_seconds(self, stage: str) -> Path:
        return self.stage(stage) / EARLIER_SECONDS

    def report_extra(self, stage: str) -> Path:
        return self.stage(stage) / "report_extra.json"

    def report_extras(self) -> list[Path]:
        """Every stage's report_extra.json, by stage name."""
        return sorted(self.path.glob("*/report_extra.json"))

    # --- stage outputs ---

    @property
    def data(self) -> Path:
        """The split (training.data.SplitData.save / load)."""
        return self.stage("data")

    def cf_run(self, model: str, seed: int) -> Path:
        return self.stage("cf") / model / f"seed{seed}"

    def cf_runs(self, model: str) -> list[tuple[int, Path]]:
        """(seed, directory) of every finished cf run of `model` (its run.json written), by seed."""
        return _seed_runs(self.stage("cf") / model)

    def face_run(self, seed: int) -> Path:
        return self.stage("face") / f"seed{seed}"

    def face_runs(self) -> list[tuple[int, Path]]:
        """(seed, directory) of every finished FACE run, by seed."""
        return _seed_runs(self.stage("face"))

    @property
    def readout(self) -> Path:
        """The FACE descriptor read-out directory (face_app.descriptors.Descriptors)."""
        return self.stage("face") / "readout"

    @property
    def descriptors_file(self) -> Path:
        return self.stage("face") / "descriptors.json"

    @property
    def index_file(self) -> Path:
        """The item index (face_app.index.ItemIndex)."""
        return self.stage("index") / "item_index.json"

    @property
    def tune_curves(self) -> Path:
        return self.stage("tune") / "curves.png"

    @property
    def tune_model(self) -> Path:
        """The tuned generator directory (face_app.decoder.ItemGenerator, GeneratorSpec)."""
        return self.stage("tune") / "model"


def _seed_runs(directory: Path) -> list[tuple[int, Path]]:
    runs = [(int(run.parent.name.removeprefix("seed")), run.parent) for run in directory.glob(f"seed*/{RUN_FILE}")]
    return sorted(runs)
