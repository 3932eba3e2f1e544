"""Stage `cf`: the collaborative-filtering baselines Pop, LightGCN and SASRec, once per seed.

- `Pop`: every user gets the training popularity of each item (the floor).
- `LightGCN` (He et al., 2020): user and item embeddings smoothed over the
  symmetric-normalised user-item graph, K layers averaged, trained with BPR.
- `SASRec`: trained by training/sasrec.py (the model is face_app.sequential's).

LightGCN and SASRec train in the shared loop of training/loop.py.

Weights live in `state_dict()` as plain tensors (safetensors-ready). A LightGCN is
rebuilt from `(n_users, n_items, config, train_pairs)`: the graph is derived from the
training pairs, not stored.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from face_app.sequential import SASRec
from training.config import Config, LightGCNConfig, run_key
from training.data import SplitData
from training.loop import EpochCheckpoint, NegativeSampler, bpr_epoch, seed_everything, train_with_early_stopping
from training.metrics import TrainedRun
from training.sasrec import train_sasrec
from training.workdir import MODEL_FILE, RUN_FILE, Workdir


class Pop(nn.Module):
    """Popularity: the same scores, training interaction counts, for every user."""

    def __init__(self, item_counts: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(np.asarray(item_counts), dtype=torch.float32))

    @classmethod
    def from_data(cls, data: SplitData) -> Pop:
        return cls(data.item_counts())

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        """users: int64 [B] -> float [B, n_items]."""
        return self.counts.expand(len(users), -1).clone()


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph, users first then items.

    users, items: int64 [E] training pairs (duplicates count once). Returns a sparse
    CSR float tensor [n_users + n_items, n_users + n_items] (symmetric).
    """
    pairs = torch.unique(users * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    n = n_users + n_items
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[degree == 0] = 0.0  # isolated nodes (cold items) keep their ego embedding only
    values = inv_sqrt[rows] * inv_sqrt[cols]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=True).coalesce()
    with warnings.catch_warnings():
        # CSR is "beta" in torch, but its matmul is several times faster than COO's on CPU.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class SymmetricSparseMatmul(torch.autograd.Function):
    """adjacency @ x for a constant symmetric sparse adjacency.

    The gradient is adjacency @ grad; spelling it out skips the sparse transpose
    autograd would build on every backward, the main cost of a LightGCN step.
    """

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


class LightGCN(nn.Module):
    """LightGCN: E = mean_k A^k E0 over k = 0..layers, score(u, i) = <e_u, e_i>.

    Build with `LightGCN(n_users, n_items, config, train_pairs)`, where train_pairs
    is `data.train_pairs()` (int64 users [E], items [E]); the normalised adjacency is
    a non-persistent buffer rebuilt from them, so `state_dict()` holds only the two
    embedding tables. In eval mode the propagated embeddings are cached until the
    next `train()` or `load_state_dict()`.
    """

    def __init__(
        self, n_users: int, n_items: int, config: LightGCNConfig, train_pairs: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        super().__init__()
        self.n_users, self.n_items, self.config = n_users, n_items, config
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.register_buffer("adjacency", normalized_adjacency(*train_pairs, n_users, n_items), persistent=False)
        self._propagated: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-averaged embeddings: users [U, d], items [I, d]."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        total = x
        for _ in range(self.config.layers):
            x = SymmetricSparseMatmul.apply(self.adjacency, x)
            total = total + x
        total = total / (self.config.layers + 1)
        return total[: self.n_users], total[self.n_users :]

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (propagated) embeddings, detached: users [U, d], items [I, d]."""
        if self.training:
            with torch.no_grad():
                return self.propagate()
        if self._propagated is None:
            with torch.no_grad():
                self._propagated = self.propagate()
        return self._propagated

    def bpr_loss(
        self,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        propagated: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """BPR on propagated embeddings + L2 on the batch's ego embeddings; all inputs int64 [B].

        propagated: `self.propagate()` when the caller already has it (with gradient).
        """
        user_final, item_final = propagated if propagated is not None else self.propagate()
        u, p, n = user_final[users], item_final[pos], item_final[neg]
        margin = (u * p).sum(-1) - (u * n).sum(-1)
        ego = [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
        l2 = sum(e.pow(2).sum() for e in ego) / (2 * len(users))
        return F.softplus(-margin).mean() + self.config.reg * l2

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        """users: int64 [B] -> float [B, n_items] (histories unused: the graph already holds them)."""
        user_final, item_final = self.user_item_embeddings()
        return user_final[users] @ item_final.T

    def train(self, mode: bool = True) -> LightGCN:
        self._propagated = None
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        self._propagated = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def train_lightgcn(
    data: SplitData, config: LightGCNConfig, seed: int, checkpoint: tuple[Path, Any] | None = None
) -> LightGCN:
    """Train LightGCN with BPR on `data.train`, early-stopped on valid NDCG@10.

    Returns the model in eval mode with the best weights; `.history` holds the
    per-epoch log (see `train_with_early_stopping`). checkpoint: (directory, key) to save every epoch to
    and resume from (`training.loop.EpochCheckpoint`).
    """
    generator = seed_everything(seed)
    users, items = data.train_pairs()
    model = LightGCN(data.n_users, data.n_items, config, (users, items))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sample_negatives = NegativeSampler(users, items, data.n_items, generator)

    def train_epoch() -> float:
        return bpr_epoch((users, items), sample_negatives, config.batch_size, generator, optimizer, model.bpr_loss)

    saved = EpochCheckpoint(*checkpoint, optimizer, {"sampler": generator}) if checkpoint else None
    model.history = train_with_early_stopping(
        model, data, train_epoch, config, desc=f"LightGCN seed {seed}", checkpoint=saved
    )
    return model


# --- Stage `cf` -------------------------------------------------------------------------------

DETERMINISTIC = {"Pop"}  # trained once: seeds would give identical runs


def _train(name: str, data: SplitData, config: Config, seed: int, checkpoint: tuple[Path, Any]) -> nn.Module:
    if name == "Pop":
        return Pop.from_data(data)
    if name == "LightGCN":
        return train_lightgcn(data, config.cf.lightgcn, seed, checkpoint)
    if name == "SASRec":
        return train_sasrec(data, config.cf.sasrec, seed, checkpoint)
    raise ValueError(f"unknown model {name!r}; known: Pop, LightGCN, SASRec")


def load_model(name: str, run_dir: Path, data: SplitData, config: Config) -> nn.Module:
    """Rebuild a trained model from the run directory's weights, in eval mode."""
    if name == "Pop":
        model: nn.Module = Pop.from_data(data)
    elif name == "LightGCN":
        model = LightGCN(data.n_users, data.n_items, config.cf.lightgcn, data.train_pairs())
    elif name == "SASRec":
        model = SASRec(data.n_users, data.n_items, config.cf.sasrec)
    else:
        raise ValueError(f"unknown model {name!r}; known: Pop, LightGCN, SASRec")
    model.load_state_dict(load_file(run_dir / MODEL_FILE))
    return model.eval()


def trained_models(config: Config, workdir: Path, data: SplitData) -> Iterator[TrainedRun]:
    """The eval stage's view of this stage: every finished run of `config.cf.models`."""
    paths = Workdir(workdir)
    for name in config.cf.models:
        found = paths.cf_runs(name)
        if not found:
            raise FileNotFoundError(f"no trained runs of {name} in {paths.stage('cf')}; run the cf stage first")
        for seed, run_dir in found:
            meta = json.loads((run_dir / RUN_FILE).read_text())
            yield TrainedRun(name, seed, load_model(name, run_dir, data, config), meta)


def run(config: Config, workdir: Path) -> Path:
    """Stage `cf`: train each baseline once per seed; weights and training history per run.

    Output: `Workdir.cf_run(model, seed)` = `<workdir>/cf/<model>/seed<k>/{model.safetensors,run.json}`. A run
    whose run.json records the same data and model settings is reused, so an interrupted (or forced) stage
    resumes per run and retrains only what changed; a run cut mid-way resumes at its last finished epoch from
    `<run>/checkpoint/` (removed once the run is stored).
    """
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    for name in config.cf.models:
        for seed in config.cf.seeds[:1] if name in DETERMINISTIC else config.cf.seeds:
            run_dir = paths.cf_run(name, seed)
            key = run_key(name, config)
            run_json = run_dir / RUN_FILE
            if run_json.exists() and json.loads(run_json.read_text()).get("key") == key:
                print(f"[cf] {name} seed {seed}: reusing the finished run in {run_dir}")
                continue
            start = time.perf_counter()
            model = _train(name, data, config, seed, (run_dir / "checkpoint", key))
            seconds = time.perf_counter() - start
            run_dir.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, run_dir / MODEL_FILE)
            history = getattr(model, "history", [])
            seconds = max(seconds, history[-1]["seconds"] if history else 0.0)  # a resumed run: all its epochs
            scored = [h for h in history if h.get("valid_NDCG@10") is not None]
            best = max(scored, key=lambda h: h["valid_NDCG@10"], default={})
            meta = {"model": name, "seed": seed, "key": key, "seconds": seconds, "best_epoch": best.get("epoch")}
            meta["history"] = history
            run_json.write_text(json.dumps(meta, indent=1))
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
            best_ndcg = best.get("valid_NDCG@10", float("nan"))
            print(f"[cf] {name} seed {seed}: {seconds:.1f} s, best valid NDCG@10 {best_ndcg:.4f}")
    return paths.stage("cf")
