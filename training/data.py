"""Stage `data`: read a dataset, index it, and split it leave-one-out.

Per user, interactions are ordered by (timestamp, item id); ties on the timestamp
(about half of ML-100k's) are broken by the item id, numerically when every id is an
integer. The last item is the test target, the second-to-last the validation
target, the rest is training history. A user with two items has no validation
target; a user with one item has only a test target.

On disk (`<workdir>/data/`): `items.parquet` (item_idx, item_id, title, year,
genres, description), `users.parquet` (user_idx, user_id, demographics),
`interactions.parquet` (user_idx, item_idx, timestamp, rating, split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from face_app.datasets import Dataset, load_dataset
from training.config import Config, DataConfig
from training.workdir import Workdir

SPLITS = ("train", "valid", "test")


@dataclass
class SplitData:
    """A dataset indexed by contiguous ids and split leave-one-out.

    items/users: catalog and user tables in index order (row i has idx i).
    train: per user, the training item indices in time order (int64 arrays).
    valid/test: per user, the target item index, or -1 when the user has none.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def targets(self, split: str) -> np.ndarray:
        """Target item per user for `valid` or `test` (-1: no target)."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
        return self.valid if split == "valid" else self.test

    def history(self, user: int, split: str) -> np.ndarray:
        """Items a user saw before the `split` target, in time order."""
        if split == "test" and self.valid[user] >= 0:
            return np.append(self.train[user], self.valid[user])
        return self.train[user]

    def train_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All training (user, item) pairs as two int64 tensors."""
        users = np.repeat(np.arange(self.n_users), [len(t) for t in self.train])
        items = np.concatenate(self.train) if self.train else np.zeros(0, np.int64)
        return torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64))

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (popularity)."""
        return np.bincount(np.concatenate(self.train), minlength=self.n_items)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        rows = []
        for user in range(self.n_users):
            for item in self.train[user]:
                rows.append((user, int(item), "train"))
            if self.valid[user] >= 0:
                rows.append((user, int(self.valid[user]), "valid"))
            if self.test[user] >= 0:
                rows.append((user, int(self.test[user]), "test"))
        frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "split"])
        frame["position"] = frame.groupby("user_idx").cumcount()
        frame.to_parquet(directory / "interactions.parquet", index=False)
        self.items.to_parquet(directory / "items.parquet", index=False)
        self.users.to_parquet(directory / "users.parquet", index=False)

    @classmethod
    def load(cls, directory: Path) -> SplitData:
        items = pd.read_parquet(directory / "items.parquet")
        users = pd.read_parquet(directory / "users.parquet")
        frame = pd.read_parquet(directory / "interactions.parquet").sort_values(["user_idx", "position"])
        n_users = len(users)
        train = [np.zeros(0, np.int64) for _ in range(n_users)]
        valid = np.full(n_users, -1, np.int64)
        test = np.full(n_users, -1, np.int64)
        for (user, split), group in frame.groupby(["user_idx", "split"], sort=False):
            values = group["item_idx"].to_numpy(np.int64)
            if split == "train":
                train[user] = values
            elif split == "valid":
                valid[user] = values[0]
            else:
                test[user] = values[0]
        return cls(items=items, users=users, train=train, valid=valid, test=test)


def sorted_ids(ids: pd.Series) -> list[str]:
    """Distinct ids in id order: numeric when every id is an integer, else as strings."""
    unique = pd.Series(pd.unique(ids)).astype(str)
    numeric = pd.to_numeric(unique, errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        return unique.iloc[np.argsort(numeric.to_numpy(), kind="stable")].tolist()
    return sorted(unique)


def split_dataset(dataset: Dataset, config: DataConfig) -> SplitData:
    """Filter, index and split a dataset leave-one-out (see module docstring)."""
    inter = dataset.interactions.drop_duplicates(["user_id", "item_id"], keep="first")
    inter = _k_core(inter, config.min_user_interactions, config.min_item_interactions)
    if config.max_users:
        keep = sorted_ids(inter["user_id"])[: config.max_users]
        inter = inter[inter["user_id"].isin(set(keep))]

    # The catalog is every item with at least one interaction (ML-1M lists 177 unrated
    # movies that no model could learn anything about).
    items = dataset.items[dataset.items["item_id"].isin(set(inter["item_id"]))]
    items = items.set_index("item_id", drop=False).loc[sorted_ids(items["item_id"])].reset_index(drop=True)
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int64))
    item_idx = pd.Series(items["item_idx"].to_numpy(), index=items["item_id"].to_numpy())

    user_ids = sorted_ids(inter["user_id"])
    users = pd.DataFrame({"user_idx": np.arange(len(user_ids), dtype=np.int64), "user_id": user_ids})
    if dataset.users is not None:
        users = users.merge(dataset.users, on="user_id", how="left")
    user_idx = pd.Series(users["user_idx"].to_numpy(), index=users["user_id"].to_numpy())

    ordered = pd.DataFrame(
        {
            "user_idx": user_idx.loc[inter["user_id"].to_numpy()].to_numpy(),
            "item_idx": item_idx.loc[inter["item_id"].to_numpy()].to_numpy(),
            "timestamp": inter["timestamp"].to_numpy(),
        }
    ).sort_values(["user_idx", "timestamp", "item_idx"], kind="stable")

    n_users = len(users)
    train = [np.zeros(0, np.int64) for _ in range(n_users)]
    valid = np.full(n_users, -1, np.int64)
    test = np.full(n_users, -1, np.int64)
    for user, group in ordered.groupby("user_idx", sort=False):
        seq = group["item_idx"].to_numpy(np.int64)
        test[user] = seq[-1]
        if len(seq) >= 3:
            valid[user] = seq[-2]
            train[user] = seq[:-2]
        else:
            train[user] = seq[:-1]
    return SplitData(items=items, users=users, train=train, valid=valid, test=test)


def _k_core(inter: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Repeatedly drop users/items with fewer interactions than the thresholds."""
    if min_user <= 1 and min_item <= 1:
        return inter
    while True:
        user_counts = inter["user_id"].map(inter["user_id"].value_counts())
        item_counts = inter["item_id"].map(inter["item_id"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return inter
        inter = inter[keep]


def run(config: Config, workdir: Path) -> Path:
    """Stage `data`: read `config.data`, split it, write `Workdir.data`."""
    dataset = load_dataset(config.data.source, paths=config.data.paths)
    split = split_dataset(dataset, config.data)
    out = Workdir(workdir).data
    split.save(out)
    return out
