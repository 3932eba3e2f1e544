"""Full-ranking leave-one-out evaluation, one function for every model.

Each user of a split has one target item. A model scores the whole catalog; the
user's earlier items (their history before the target) are excluded; the target's
rank is the number of remaining items ranked above it, where an item ranks above
the target when its score is higher, or equal with a lower item index (the order a
stable sort of the scores would give, so ties never flatter a model).

Metrics: HR@k (target in the top k), NDCG@k (1 / log2(rank + 2) when in the top k),
Recall@20 (equal to HR@20 with one target), averaged over all users of the split.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from training.config import Config
from training.data import SplitData

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "Recall@20", "NDCG@20")


class Recommender(Protocol):
    """What every evaluated model answers (RecBole's `full_sort_predict`)."""

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        """Scores over the whole catalog.

        users: int64 [B] user indices. histories: B arrays of item indices in time
        order (what each user saw before the target). Returns float [B, n_items];
        higher is better.
        """
        ...


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among the non-excluded items.

    scores: float [B, I]; targets: int64 [B]; exclude: bool [B, I] (True: not
    rankable; the target itself is never excluded). Returns int64 [B].
    """
    target_scores = scores.gather(1, targets[:, None])
    above = scores > target_scores
    index = torch.arange(scores.shape[1], device=scores.device)
    tie_before = (scores == target_scores) & (index[None, :] < targets[:, None])
    rankable = ~exclude
    rankable[torch.arange(len(targets)), targets] = True
    return ((above | tie_before) & rankable).sum(dim=1)


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """HR/NDCG/Recall at the standard cut-offs from 0-based target ranks."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    if len(ranks) == 0:
        return {name: float("nan") for name in METRICS}
    gain = 1.0 / torch.log2(ranks + 2.0)
    out = {}
    for name in METRICS:
        kind, k = name.split("@")
        hit = ranks < int(k)
        value = (gain * hit) if kind == "NDCG" else hit.double()
        out[name] = float(value.mean())
    return out


def evaluate(model: Recommender, data: SplitData, split: str = "test", batch_size: int = 256) -> dict[str, float]:
    """Metrics of `model` on every user that has a `split` target."""
    targets_all = data.targets(split)
    users = np.flatnonzero(targets_all >= 0)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            histories = [data.history(int(u), split) for u in batch]
            scores = model.score(torch.from_numpy(batch), histories).float()
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            rows = np.repeat(np.arange(len(batch)), [len(h) for h in histories])
            if len(rows):
                exclude[torch.from_numpy(rows), torch.from_numpy(np.concatenate(histories))] = True
            targets = torch.from_numpy(targets_all[batch])
            ranks.append(target_ranks(scores, targets, exclude))
    return metrics_from_ranks(torch.cat(ranks) if ranks else torch.zeros(0))


def mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over runs, with `<metric>_std` (population std) beside each when there are several."""
    out: dict[str, float] = {}
    for name in runs[0]:
        values = [run[name] for run in runs]
        out[name] = float(np.mean(values))
        if len(runs) > 1:
            out[f"{name}_std"] = float(np.std(values))
    return out


PROTOCOL = {
    "split": "leave-one-out per user, ordered by (timestamp, item id): last = test, second-to-last = valid",
    "ranking": "full catalog, the user's earlier items excluded, ties broken by item index",
    "metrics": list(METRICS),
    "description": (
        "leave-one-out (last item test, second-to-last valid, ordered by timestamp then item id); "
        "full ranking over the whole catalog with the user's earlier items excluded; "
        "all users with a test item; model selection on valid NDCG@10."
    ),
}


@dataclass
class TrainedRun:
    """One finished run of an evaluated model, as a stage hands it to the eval stage.

    meta: the run's run.json (`seconds`, optional `best_epoch` and `history`).
    splits: the splits to score (an expensive model may skip valid).
    """

    name: str
    seed: int
    model: Recommender
    meta: dict[str, Any]
    splits: tuple[str, ...] = ("valid", "test")


RunSource = Callable[[Config, Path, SplitData], Iterator[TrainedRun]]


def run_sources() -> list[RunSource]:
    """Every stage whose models the eval stage scores, in report order."""
    from training import cf, face, tune

    return [cf.trained_models, face.trained_models, tune.trained_models]


def run(config: Config, workdir: Path) -> Path:
    """Stage `eval`: score every trained model on test (and valid) and write the report."""
    # Imported here: the report module renders METRICS from this one.
    from training.report import plot_history, write_report

    data = SplitData.load(workdir / "data")
    runs: dict[str, list[dict]] = {}
    histories: dict[str, dict[str, list[dict]]] = {}
    for source in run_sources():
        for trained in source(config, workdir, data):
            scores = {split: evaluate(trained.model, data, split, config.eval.batch_size) for split in trained.splits}
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
    models = {name: mean_std([r["test"] for r in per_seed]) for name, per_seed in runs.items()}
    for name, per_seed_history in histories.items():
        plot_history(workdir / "plots" / f"{name}.png", name, per_seed_history)
    report = {
        "dataset": config.name,
        "source": config.data.source,
        "data": data_stats(data),
        "protocol": PROTOCOL,
        "models": models,
        "seeds": list(config.cf.seeds),
        "runs": runs,
    }
    for extra in sorted(workdir.glob("*/report_extra.json")):  # keys a stage adds (index, descriptors)
        report.update(json.loads(extra.read_text()))
    write_report(workdir, report)
    return workdir / "report.json"


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
