"""The leave-one-out split and the full-ranking evaluator, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from face_app.datasets import Dataset
from training.config import DataConfig
from training.data import SplitData, split_dataset
from training.metrics import evaluate, mean_std, metrics_from_ranks, target_ranks


def make_dataset(rows: list[tuple[str, str, int]], item_ids: list[str]) -> Dataset:
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Film {i}" for i in item_ids],
            "year": pd.array([2000] * len(item_ids), "Int64"),
            "genres": [["Drama"]] * len(item_ids),
            "description": "",
        }
    )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["rating"] = np.float32(4.0)
    return Dataset("toy", items, inter)


@pytest.fixture
def toy() -> SplitData:
    rows = [
        # user 7: ties at t=100 broken by numeric item id (9 before 10), then 2 at t=200, 1 at t=300.
        ("7", "10", 100), ("7", "9", 100), ("7", "2", 200), ("7", "1", 300),
        ("3", "2", 50), ("3", "9", 60),  # two items: no valid target
        ("12", "1", 5),  # one item: test target only
    ]
    return split_dataset(make_dataset(rows, ["1", "2", "9", "10", "11"]), DataConfig())  # "11": never rated


def test_items_and_users_are_indexed_in_numeric_id_order(toy: SplitData) -> None:
    assert toy.items["item_id"].tolist() == ["1", "2", "9", "10"]
    assert toy.items["item_idx"].tolist() == [0, 1, 2, 3]
    assert toy.users["user_id"].tolist() == ["3", "7", "12"]


def test_split_breaks_timestamp_ties_by_item_id(toy: SplitData) -> None:
    user = 1  # "7"
    assert toy.train[user].tolist() == [2, 3]  # items "9", "10": tie at t=100, numeric order
    assert toy.valid[user] == 1  # "2"
    assert toy.test[user] == 0  # "1"
    assert toy.history(user, "test").tolist() == [2, 3, 1]
    assert toy.history(user, "valid").tolist() == [2, 3]


def test_short_users_have_no_valid_target(toy: SplitData) -> None:
    two, one = 0, 2  # users "3" and "12"
    assert (toy.train[two].tolist(), toy.valid[two], toy.test[two]) == ([1], -1, 2)
    assert (toy.train[one].tolist(), toy.valid[one], toy.test[one]) == ([], -1, 0)
    assert toy.history(one, "test").tolist() == []


def test_catalog_keeps_only_items_with_interactions(toy: SplitData) -> None:
    assert toy.n_items == 4 and "11" not in set(toy.items["item_id"])


def test_split_round_trips_through_parquet(toy: SplitData, tmp_path) -> None:
    toy.save(tmp_path)
    back = SplitData.load(tmp_path)
    assert [t.tolist() for t in back.train] == [t.tolist() for t in toy.train]
    assert back.valid.tolist() == toy.valid.tolist() and back.test.tolist() == toy.test.tolist()
    assert back.items["title"].tolist() == toy.items["title"].tolist()


def test_max_users_keeps_the_first_users_by_id() -> None:
    rows = [(str(u), "1", 1) for u in (10, 2, 33, 4)]
    split = split_dataset(make_dataset(rows, ["1"]), DataConfig(max_users=2))
    assert split.users["user_id"].tolist() == ["2", "4"]


def test_k_core_drops_rare_users_and_items() -> None:
    rows = [("a", "1", 1), ("a", "2", 2), ("b", "1", 1), ("b", "2", 2), ("c", "3", 1)]
    config = DataConfig(min_user_interactions=2, min_item_interactions=2)
    split = split_dataset(make_dataset(rows, ["1", "2", "3"]), config)
    assert split.users["user_id"].tolist() == ["a", "b"]
    assert split.items["item_id"].tolist() == ["1", "2"]


def test_rank_counts_higher_scores_and_ties_at_lower_index() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.9, 0.5]])
    target = torch.tensor([2])
    nothing = torch.zeros(1, 5, dtype=torch.bool)
    # Above the target: item 3 (0.9) and item 1 (tie, lower index); item 4 ties at a higher index.
    assert target_ranks(scores, target, nothing).tolist() == [2]
    excluded = nothing.clone()
    excluded[0, 3] = True
    assert target_ranks(scores, target, excluded).tolist() == [1]


def test_constant_scores_rank_by_index_and_never_flatter() -> None:
    scores = torch.zeros(1, 6)
    assert target_ranks(scores, torch.tensor([5]), torch.zeros(1, 6, dtype=torch.bool)).tolist() == [5]


def test_metrics_match_hand_computed_values() -> None:
    metrics = metrics_from_ranks(torch.tensor([0, 2, 9, 25]))
    ndcg10 = (1.0 + 1.0 / math.log2(4) + 1.0 / math.log2(11)) / 4
    assert metrics["HR@1"] == pytest.approx(0.25)
    assert metrics["HR@5"] == pytest.approx(0.5)
    assert metrics["HR@10"] == pytest.approx(0.75)
    assert metrics["NDCG@5"] == pytest.approx((1.0 + 0.5) / 4)
    assert metrics["NDCG@10"] == pytest.approx(ndcg10)
    assert metrics["Recall@20"] == pytest.approx(0.75)
    assert metrics["NDCG@20"] == pytest.approx(ndcg10)


class FixedScores:
    """Scores every item by a fixed vector, whoever the user is."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = torch.tensor(scores)

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        return self.scores.expand(len(users), -1).clone()


def test_evaluate_excludes_each_users_history(toy: SplitData) -> None:
    # Item order by score: 3, 2, 1, 0.
    model = FixedScores([0.2, 0.3, 0.4, 0.5])
    # Test targets: user "3" -> item 2 (history [1]: rank 1, item 3 above);
    # user "7" -> item 0 (history [2, 3, 1] excluded: rank 0); user "12" -> item 0 (no history: rank 3).
    metrics = evaluate(model, toy, "test")
    assert metrics["HR@1"] == pytest.approx(1 / 3)
    assert metrics["HR@5"] == pytest.approx(1.0)
    assert metrics["NDCG@5"] == pytest.approx((1 / math.log2(3) + 1.0 + 1 / math.log2(5)) / 3)


def test_evaluate_valid_uses_only_users_with_a_valid_target(toy: SplitData) -> None:
    # Only user "7" has a valid target (item 1) with history [2, 3]: item 0 (0.2) is below, rank 0.
    metrics = evaluate(FixedScores([0.2, 0.3, 0.4, 0.5]), toy, "valid")
    assert metrics["HR@1"] == 1.0


def test_mean_std_reports_std_beside_each_metric() -> None:
    out = mean_std([{"HR@10": 0.1}, {"HR@10": 0.3}])
    assert out == {"HR@10": pytest.approx(0.2), "HR@10_std": pytest.approx(0.1)}
    assert mean_std([{"HR@10": 0.1}]) == {"HR@10": 0.1}
