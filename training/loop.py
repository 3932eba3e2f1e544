"""The training loop every CF-style model shares: seeding, negative sampling, a BPR epoch, early stopping.

LightGCN (training/cf.py), SASRec (training/sasrec.py) and LightGCN+FACE (training/face.py) all train by
epochs with `train_with_early_stopping`, which selects on valid NDCG@10 (training.metrics) and restores
the best weights; the BPR models draw their negatives with `NegativeSampler` inside `bpr_epoch`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import Schedule
from training.metrics import Split, evaluate


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for the sampler."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class NegativeSampler:
    """Uniform negative items that the user has not interacted with in training."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int, generator: torch.Generator) -> None:
        self.known = torch.unique(users * n_items + items)  # sorted keys for membership tests
        self.n_items, self.generator = n_items, generator

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        """users: int64 [B] -> int64 [B] negative items."""
        neg = torch.randint(self.n_items, users.shape, generator=self.generator)
        for _ in range(10):  # a few redraws; a collision left after that is harmless noise
            clash = self._seen(users, neg)
            if not clash.any():
                break
            neg[clash] = torch.randint(self.n_items, (int(clash.sum()),), generator=self.generator)
        return neg

    def _seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        at = torch.searchsorted(self.known, keys).clamp(max=len(self.known) - 1)
        return self.known[at] == keys


def train_with_early_stopping(
    model: nn.Module,
    data: Split,
    train_epoch: Callable[[], float],
    schedule: Schedule,
    desc: str,
    eval_batch_size: int = 256,
) -> list[dict]:
    """Run `train_epoch` (one pass, returns the mean loss) up to `schedule.epochs` times.

    Every `schedule.eval_every` epochs (and after the last) the model is scored on `valid`;
    the state with the best NDCG@10 is kept, training stops after `schedule.patience`
    evaluations without improvement, and the best state is loaded back into `model`.
    Returns one dict per epoch: epoch, loss, valid_NDCG@10 and valid_HR@10 (None on
    epochs without evaluation), seconds (elapsed since the start).
    """
    history: list[dict] = []
    best_ndcg, best_state, stale = -1.0, None, 0
    start = time.perf_counter()
    epochs, eval_every, patience = schedule.epochs, schedule.eval_every, schedule.patience
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch")
    for epoch in bar:
        model.train()
        loss = float(train_epoch())
        entry = {"epoch": epoch, "loss": loss, "valid_NDCG@10": None, "valid_HR@10": None, "seconds": 0.0}
        if epoch % eval_every == 0 or epoch == epochs:
            model.eval()
            metrics = evaluate(model, data, "valid", eval_batch_size)
            entry["valid_NDCG@10"], entry["valid_HR@10"] = metrics["NDCG@10"], metrics["HR@10"]
            if metrics["NDCG@10"] > best_ndcg:
                best_ndcg, stale = metrics["NDCG@10"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix(loss=f"{loss:.4f}", valid=f"{metrics['NDCG@10']:.4f}", best=f"{best_ndcg:.4f}")
        entry["seconds"] = time.perf_counter() - start
        history.append(entry)
        if stale >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def bpr_epoch(
    pairs: tuple[torch.Tensor, torch.Tensor],
    sample_negatives: NegativeSampler,
    batch_size: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> float:
    """One shuffled pass over the training pairs (users [E], items [E]) in BPR batches.

    batch_loss(users, positives, negatives) gives each batch's loss; returns the mean
    loss over the pass (weighted by batch size).
    """
    users, items = pairs
    order = torch.randperm(len(users), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        u = users[batch]
        loss = batch_loss(u, items[batch], sample_negatives(u))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(order)
