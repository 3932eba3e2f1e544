"""Stage `eval`: score every trained model under one protocol (`training.metrics`) and write the report.

The only stage that imports the stages it evaluates: each of cf, face and tune hands over its finished runs
as `TrainedRun`s (`trained_models(config, workdir, data)`), and this stage scores them all with
`training.metrics.evaluate`; `training.served` adds each arm of the chat as a turn runs it.

It runs on every process of a launch (`training/launch.py`): each scores a share of the users of every model
(the tuned LLM's beam search is the slow part) and gathers the others'; process 0 writes the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from training import cf, face, served, tune
from training.config import Config
from training.data import SplitData
from training.launch import processes
from training.metrics import PROTOCOL, TrainedRun, evaluate, mean_std
from training.report import plot_history, write_report
from training.workdir import Workdir

RunSource = Callable[[Config, Path, SplitData], Iterator[TrainedRun]]


def run_sources() -> list[RunSource]:
    """Every stage whose models the eval stage scores, in report order."""
    return [cf.trained_models, face.trained_models, tune.trained_models, served.trained_models]


def run(config: Config, workdir: Path) -> Path:
    """Stage `eval`: score every trained model on test (and valid) and write the report."""
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    runs: dict[str, list[dict]] = {}
    histories: dict[str, dict[str, list[dict]]] = {}
    for source in run_sources():
        for trained in source(config, workdir, data):
            scores = {split: evaluate(trained.model, data, split, config.eval.batch_size,
                                      desc=f"[eval] {trained.name} seed {trained.seed} {split}", shared=True)
                      for split in trained.splits}
            runs.setdefault(trained.name, []).append(
                {
                    "seed": trained.seed,
                    **scores,
                    "train_seconds": trained.meta.get("seconds"),
                    "best_epoch": trained.meta.get("best_epoch"),
                }
            )
            if trained.meta.get("history"):
                histories.setdefault(trained.name, {})[f"seed {trained.seed}"] = trained.meta["history"]
    if not processes().is_main_process:
        return paths.report_json
    models = {name: mean_std([r["test"] for r in per_seed]) for name, per_seed in runs.items()}
    for name, per_seed_history in histories.items():
        plot_history(paths.plot(name), name, per_seed_history)
    report = {
        "dataset": config.name,
        "source": config.data.source,
        "data": data_stats(data),
        "protocol": PROTOCOL,
        "models": models,
        "seeds": list(config.cf.seeds),
        "runs": runs,
    }
    for extra in paths.report_extras():  # keys a stage adds (index, descriptors)
        report.update(json.loads(extra.read_text()))
    write_report(workdir, report)
    return paths.report_json


def data_stats(data: SplitData) -> dict[str, int]:
    """Counts of users, items and interactions per split."""
    n_train = int(sum(len(t) for t in data.train))
    n_valid = int((data.valid >= 0).sum())
    n_test = int((data.test >= 0).sum())
    return {
        "users": data.n_users,
        "items": data.n_items,
        "interactions": n_train + n_valid + n_test,
        "train": n_train,
        "valid": n_valid,
        "test": n_test,
    }
