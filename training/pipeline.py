"""The build: stages in order, each `run(config, workdir) -> artifact path`.

A finished stage leaves `<workdir>/<stage>/.done` (JSON: the hash of the config sections the stage
depends on, seconds, counting the earlier runs a resumed stage continued) and is skipped on the next
build unless forced, so an interrupted build resumes where it stopped. A change to a later stage's
settings (say `tune`) leaves the earlier stages' markers valid: continuing a tune never re-runs cf.
A stage's wall time goes to `<workdir>/timings.json` and into the report, and the machine that ran it
to `<workdir>/machines.json`.

Under a multi-process launch (`training/launch.py`) the `PARALLEL` stages run on every process and the
others on process 0 while the rest wait; process 0 writes the markers, timings and config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from training import cf, data, evaluate, export, face, readout, rqvae, tune
from training.card import record_machine
from training.config import Config, config_dict, config_hash
from training.launch import processes
from training.report import update_timings
from training.workdir import Workdir

Stage = Callable[[Config, Path], Path]


def face_stage(config: Config, workdir: Path) -> Path:
    """Stage `face`: LightGCN and FACE trained together (`mode: joint`, training/face.py) or the read-out alone on
    the frozen LightGCN (`mode: readout`, training/readout.py)."""
    return readout.run(config, workdir) if config.face.mode == "readout" else face.run(config, workdir)


STAGES: dict[str, Stage] = {
    "data": data.run,
    "cf": cf.run,
    "face": face_stage,
    "index": rqvae.run,
    "tune": tune.run,
    "eval": evaluate.run,
    "export": export.run,
}


# The stages that share their work among the processes of a launch; the others are single-process.
PARALLEL = {"tune", "eval"}


class ConfigChanged(RuntimeError):
    """A finished stage in the workdir was built from a different config."""


def parse_stages(spec: str | None) -> list[str]:
    """`"data,cf"` -> ["data", "cf"] in pipeline order; None -> every stage."""
    if not spec:
        return list(STAGES)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    return [name for name in STAGES if name in names]


def build(config: Config, workdir: Path, stages: list[str] | None = None, force: bool = False) -> dict[str, float]:
    """Run `stages` (default: all) in order; return {stage: seconds} for those that ran (on process 0)."""
    launch = processes()
    main = launch.is_main_process
    if config.threads:
        torch.set_num_threads(config.threads)
    paths = Workdir(workdir)
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        paths.config_file.write_text(json.dumps(config_dict(config), indent=2, default=str))
    ran: dict[str, float] = {}
    for name in stages or list(STAGES):
        marker = paths.done_marker(name)
        digest = config_hash(config, name)
        if marker.exists() and not force:
            done = json.loads(marker.read_text())
            if done.get("config_hash") != digest:
                raise ConfigChanged(
                    f"stage {name!r} in {workdir} was built from another config; "
                    "use a new --workdir, or --force to rebuild it"
                )
            launch.print(f"[{name}] done already ({done['seconds']:.1f} s); skipping (use --force to rebuild)")
            continue
        launch.print(f"[{name}] running")
        start = time.perf_counter()
        earlier = paths.earlier_seconds(name)
        if main:
            earlier.unlink(missing_ok=True)
        if main or name in PARALLEL:
            STAGES[name](config, workdir)
        launch.wait_for_everyone()  # the stage's files are written before any process goes on
        if not main:
            continue
        seconds = time.perf_counter() - start
        if earlier.exists():
            seconds += float(json.loads(earlier.read_text())["seconds"])
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"config_hash": digest, "seconds": seconds}))
        ran[name] = seconds
        update_timings(workdir, {name: seconds})
        record_machine(workdir, name)
        print(f"[{name}] finished in {seconds:.1f} s")
    return ran
