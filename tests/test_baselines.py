"""Pop, LightGCN and SASRec on a small synthetic dataset with a planted pattern.

The data: two user groups with disjoint halves of the catalog; each user walks
their group's items in a fixed cyclic order from a random start. A graph model
should learn the groups, a sequential model the cycle, and Pop learns neither.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from face_app.sequential import SASRecShape
from training.cf import LightGCN, Pop, normalized_adjacency, train_lightgcn
from training.config import LightGCNConfig, SASRecConfig
from training.data import SplitData
from training.loop import train_with_early_stopping
from training.metrics import evaluate
from training.sasrec import SASRec, pad_right_aligned, train_sasrec, training_windows

N_USERS, N_ITEMS, GROUP_ITEMS, SEQ_LEN = 40, 40, 20, 12


def planted_data(seed: int = 0) -> SplitData:
    """Users 0..19 walk items 0..19 cyclically, users 20..39 items 20..39; last two steps are valid/test."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for user in range(N_USERS):
        base = 0 if user < N_USERS // 2 else GROUP_ITEMS
        seq = base + (rng.integers(GROUP_ITEMS) + np.arange(SEQ_LEN)) % GROUP_ITEMS
        train.append(seq[:-2].astype(np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    items = pd.DataFrame({"item_idx": np.arange(N_ITEMS), "item_id": [str(i) for i in range(N_ITEMS)]})
    users = pd.DataFrame({"user_idx": np.arange(N_USERS), "user_id": [str(u) for u in range(N_USERS)]})
    return SplitData(items=items, users=users, train=train, valid=np.array(valid), test=np.array(test))


def small_lightgcn_config() -> LightGCNConfig:
    return LightGCNConfig(dim=16, layers=2, lr=0.01, reg=1e-4, batch_size=64, epochs=60, eval_every=5, patience=4)


def small_sasrec_config() -> SASRecConfig:
    return SASRecConfig(
        dim=32, layers=1, heads=2, max_len=8, dropout=0.1, lr=5e-3, batch_size=16, epochs=60, eval_every=5, patience=4
    )


class RandomScores:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        return torch.rand(len(users), N_ITEMS, generator=self.generator)


@pytest.fixture(scope="module")
def data() -> SplitData:
    return planted_data()


@pytest.fixture(scope="module")
def lightgcn(data: SplitData) -> LightGCN:
    return train_lightgcn(data, small_lightgcn_config(), seed=0)


@pytest.fixture(scope="module")
def sasrec(data: SplitData) -> SASRec:
    return train_sasrec(data, small_sasrec_config(), seed=0)


def test_pop_scores_every_user_with_training_counts(data: SplitData) -> None:
    scores = Pop.from_data(data).score(torch.tensor([0, 5, 39]), [data.train[u] for u in (0, 5, 39)])

    assert scores.shape == (3, N_ITEMS) and scores.dtype == torch.float32
    expected = torch.tensor(data.item_counts(), dtype=torch.float32)
    assert all(torch.equal(row, expected) for row in scores)


def test_normalized_adjacency_matches_dense_formula() -> None:
    users, items = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])  # (1, 1) twice: counted once

    adjacency = normalized_adjacency(users, items, n_users=2, n_items=3).to_dense()

    dense = torch.zeros(5, 5)
    for u, i in [(0, 0), (0, 1), (1, 1)]:
        dense[u, 2 + i] = dense[2 + i, u] = 1.0
    degree = dense.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    assert torch.allclose(adjacency, inv_sqrt[:, None] * dense * inv_sqrt[None, :])
    assert torch.equal(adjacency, adjacency.T)


def test_lightgcn_learns_the_user_groups_and_beats_pop_and_random(data: SplitData, lightgcn: LightGCN) -> None:
    hr_lightgcn = evaluate(lightgcn, data, "test")["HR@10"]
    hr_pop = evaluate(Pop.from_data(data), data, "test")["HR@10"]
    hr_random = evaluate(RandomScores(seed=0), data, "test")["HR@10"]

    # 8 unseen items of the user's own group fit in the top 10, so the groups alone give HR@10 = 1.
    assert hr_lightgcn >= 0.9
    assert hr_lightgcn >= max(hr_pop, hr_random) + 0.3


def test_sasrec_learns_the_cycle_and_beats_pop_and_random(data: SplitData, sasrec: SASRec) -> None:
    metrics = evaluate(sasrec, data, "test")
    hr_pop = evaluate(Pop.from_data(data), data, "test")["HR@10"]
    hr_random = evaluate(RandomScores(seed=0), data, "test")["HR@10"]

    assert metrics["HR@10"] >= 0.9
    assert metrics["HR@10"] >= max(hr_pop, hr_random) + 0.3
    assert metrics["HR@1"] >= 0.5  # the next item of the cycle is deterministic


@pytest.mark.parametrize("model_name", ["lightgcn", "sasrec"])
def test_score_returns_float_scores_over_the_whole_catalog(
    request: pytest.FixtureRequest, data: SplitData, model_name: str
) -> None:
    model = request.getfixturevalue(model_name)
    users = torch.tensor([0, 1, 2])

    scores = model.score(users, [data.history(int(u), "test") for u in users])

    assert scores.shape == (3, N_ITEMS)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("model_name", ["lightgcn", "sasrec"])
def test_trained_model_holds_its_best_validation_state(
    request: pytest.FixtureRequest, data: SplitData, model_name: str
) -> None:
    model = request.getfixturevalue(model_name)
    evaluated = [h for h in model.history if h["valid_NDCG@10"] is not None]

    best = max(h["valid_NDCG@10"] for h in evaluated)

    assert evaluate(model, data, "valid")["NDCG@10"] == pytest.approx(best, abs=1e-12)
    assert [h["epoch"] for h in model.history] == list(range(1, len(model.history) + 1))
    assert all(h["loss"] > 0 and h["seconds"] >= 0 for h in model.history)


def test_lightgcn_state_dict_rebuilds_the_same_scores(data: SplitData, lightgcn: LightGCN) -> None:
    clone = LightGCN(data.n_users, data.n_items, small_lightgcn_config(), data.train_pairs())
    clone.load_state_dict(lightgcn.state_dict())
    clone.eval()
    users = torch.arange(data.n_users)

    assert set(lightgcn.state_dict()) == {"user_emb.weight", "item_emb.weight"}
    assert torch.equal(clone.score(users, []), lightgcn.score(users, []))


def test_lightgcn_embeddings_have_one_row_per_user_and_item(lightgcn: LightGCN) -> None:
    users, items = lightgcn.user_item_embeddings()

    assert users.shape == (N_USERS, 16) and items.shape == (N_ITEMS, 16)
    assert torch.allclose(users[:3] @ items.T, lightgcn.score(torch.arange(3), []))


def test_same_seed_gives_identical_models(data: SplitData) -> None:
    config = LightGCNConfig(dim=8, layers=2, lr=0.01, batch_size=64, epochs=4, eval_every=2, patience=2)
    users = torch.arange(data.n_users)

    first = train_lightgcn(data, config, seed=3).score(users, [])
    second = train_lightgcn(data, config, seed=3).score(users, [])
    other = train_lightgcn(data, config, seed=4).score(users, [])

    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_same_seed_gives_identical_sasrec(data: SplitData) -> None:
    config = SASRecConfig(dim=16, layers=1, heads=2, max_len=8, batch_size=16, epochs=3, eval_every=3, patience=1)
    users = torch.arange(4)
    histories = [data.history(int(u), "test") for u in users]

    first = train_sasrec(data, config, seed=3).score(users, histories)
    second = train_sasrec(data, config, seed=3).score(users, histories)

    assert torch.equal(first, second)


def test_recbole_style_sasrec_learns_the_cycle_and_beats_pop(data: SplitData) -> None:
    model = train_sasrec(data, dataclasses.replace(small_sasrec_config(), style="recbole"), seed=0)
    metrics = evaluate(model, data, "test")

    assert any(isinstance(m, torch.nn.LayerNorm) and m.eps == 1e-12 for m in model.modules())
    assert metrics["HR@10"] >= 0.9
    assert metrics["HR@10"] >= evaluate(Pop.from_data(data), data, "test")["HR@10"] + 0.3


def test_recbole_style_counts_positions_from_the_oldest_item_and_sasrec_style_from_the_newest() -> None:
    """RecBole's left-aligned sequences: an item's state is the same whatever follows it; the project's style gives
    the newest item a fixed position, so the first item's state moves as the history grows."""
    torch.manual_seed(0)
    recbole = SASRec(1, N_ITEMS, SASRecConfig(dim=16, layers=2, heads=2, max_len=6, style="recbole")).eval()
    sasrec = SASRec(1, N_ITEMS, SASRecConfig(dim=16, layers=2, heads=2, max_len=6)).eval()
    one, two = torch.tensor([[3]]), torch.tensor([[3, 4]])

    assert torch.allclose(recbole(one)[0, 0], recbole(two)[0, 0], atol=1e-5)
    assert not torch.allclose(sasrec(one)[0, 0], sasrec(two)[0, 0], atol=1e-3)


def test_an_unknown_sasrec_style_is_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        SASRec(1, N_ITEMS, SASRecShape(dim=16, layers=1, heads=2, max_len=6, style="bert"))


@pytest.mark.parametrize("style", ["sasrec", "recbole"])
def test_sasrec_score_ignores_padding_and_sees_only_the_last_max_len_items(style: str) -> None:
    torch.manual_seed(0)
    model = SASRec(1, N_ITEMS, SASRecConfig(dim=16, layers=2, heads=2, max_len=6, style=style)).eval()
    short, long = np.array([3, 4, 5]), np.arange(10)

    alone = model.score(torch.tensor([0]), [short])
    batched = model.score(torch.tensor([0, 1]), [short, long])  # short gets left-padded next to long
    truncated = model.score(torch.tensor([0]), [long[-6:]])

    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert torch.allclose(truncated[0], batched[1], atol=1e-5)


@pytest.mark.parametrize("style", ["sasrec", "recbole"])
def test_sasrec_is_causal(style: str) -> None:
    torch.manual_seed(0)
    model = SASRec(1, N_ITEMS, SASRecConfig(dim=16, layers=2, heads=2, max_len=6, style=style)).eval()
    seq = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, -1] = 30

    assert torch.allclose(model(seq)[0, :-1], model(changed)[0, :-1], atol=1e-6)
    assert not torch.allclose(model(seq)[0, -1], model(changed)[0, -1])


def counted_targets(windows: list[tuple[np.ndarray, int]]) -> list[int]:
    return sorted(int(t) for w, n in windows for t in w[len(w) - n :])


def test_training_windows_cover_every_next_item_target_once() -> None:
    train = [np.arange(10), np.array([7]), np.array([2, 3])]

    windows = training_windows(train, max_len=4)

    assert counted_targets(windows) == sorted([i + 1 for i in range(1, 10)] + [3 + 1])  # the 1-item user has none
    assert all(len(w) <= 5 for w, _ in windows)
    assert len(windows[0][0]) == 5 and windows[0][0][-1] == 10  # the newest window is full, ends at the newest item


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_strided_windows_count_each_target_once_with_at_least_max_len_minus_stride_context(stride: int) -> None:
    train = [np.arange(12), np.array([2, 3, 4])]

    windows = training_windows(train, max_len=5, stride=stride)

    assert counted_targets(windows) == sorted([i + 1 for i in range(1, 12)] + [3 + 1, 4 + 1])
    for window, n in windows:
        first_target = len(window) - n  # position of the oldest counted target in the window
        assert first_target >= 5 - stride or window[0] in (1, 3)  # or the window starts the sequence


def test_pad_right_aligned_left_pads_to_the_longest_sequence() -> None:
    padded = pad_right_aligned([np.array([1, 2]), np.array([5, 6, 7, 8, 9])], max_len=4)

    assert padded.tolist() == [[0, 0, 1, 2], [6, 7, 8, 9]]


class Lookup(nn.Module):
    """A stand-in model whose quality is one number the test sets per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.quality = nn.Parameter(torch.zeros(()))

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        # quality 1: the target (item = user % N_ITEMS in `lookup_data`) on top; quality 0: at the bottom
        scores = torch.zeros(len(users), N_ITEMS)
        scores[torch.arange(len(users)), users % N_ITEMS] = 2 * self.quality.detach() - 1
        return scores


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch() -> None:
    targets = np.arange(N_USERS) % N_ITEMS
    empty = [np.zeros(0, np.int64) for _ in range(N_USERS)]
    lookup_data = SplitData(
        items=pd.DataFrame({"item_idx": np.arange(N_ITEMS)}),
        users=pd.DataFrame({"user_idx": np.arange(N_USERS)}),
        train=empty,
        valid=targets,
        test=targets,
    )
    model = Lookup()
    qualities = iter([0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # best at epoch 2, then two bad evaluations

    def train_epoch() -> float:
        model.quality.data.fill_(next(qualities))
        return 1.0

    history = train_with_early_stopping(
        model, lookup_data, train_epoch, LightGCNConfig(epochs=7, eval_every=1, patience=2), desc="lookup"
    )

    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["valid_NDCG@10"] for h in history] == [0.0, 1.0, 0.0, 0.0]
    assert model.quality.item() == 1.0
    assert not model.training


class _Cut(Exception):
    """Stands for a session cut in the middle of an epoch."""


@pytest.mark.parametrize("model_name", ["SASRec", "LightGCN"])
def test_a_run_cut_mid_epoch_resumes_from_its_checkpoint_as_if_never_cut(
    data: SplitData, tmp_path, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.loop as loop

    if model_name == "SASRec":
        config = SASRecConfig(
            dim=16, layers=1, heads=2, max_len=8, batch_size=16, dropout=0.3, epochs=5, eval_every=1, patience=5
        )
        train = train_sasrec
    else:
        config = LightGCNConfig(dim=8, layers=2, batch_size=64, epochs=5, eval_every=1, patience=5)
        train = train_lightgcn
    key = {"model": model_name}
    whole = train(data, config, seed=1)

    calls = {"n": 0}
    real = loop.evaluate

    def cut_in_epoch_three(*args, **kwargs):  # the third validation never happens: cut after 2 epochs + part of one
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Cut
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", cut_in_epoch_three)
    with pytest.raises(_Cut):
        train(data, config, seed=1, checkpoint=(tmp_path / "ckpt", key))
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["epoch"] == 2
    monkeypatch.setattr(loop, "evaluate", real)

    # A fresh process: other global random state, a fresh model; the checkpoint restores all of it.
    torch.manual_seed(12345)
    resumed = train(data, config, seed=1, checkpoint=(tmp_path / "ckpt", key))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    for got, want in zip(resumed.history, whole.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["valid_NDCG@10"] == pytest.approx(want["valid_NDCG@10"], rel=1e-5)
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor)

    # A checkpoint saved under another key (other settings) is not resumed.
    fresh = train(data, dataclasses.replace(config, epochs=1), seed=1, checkpoint=(tmp_path / "ckpt", {"other": 1}))
    assert [h["epoch"] for h in fresh.history] == [1]
