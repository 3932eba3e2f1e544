"""The training loop every CF-style model shares: seeding, negative sampling, a BPR epoch, early stopping.

LightGCN (training/cf.py), SASRec (training/sasrec.py) and LightGCN+FACE (training/face.py) all train by
epochs with `train_with_early_stopping`, which selects on valid NDCG@10 (training.metrics) and restores
the best weights; the BPR models draw their negatives with `NegativeSampler` inside `bpr_epoch`.
With an `EpochCheckpoint` the loop saves its whole state after every epoch (weights, optimizer, random
generators, the best weights so far, the log), so a run cut at any point resumes at its last finished epoch
and continues exactly as the uncut run would have.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
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


@dataclass
class LoopState:
    """Where the early-stopping loop stands after an epoch."""

    epoch: int = 0
    best_ndcg: float = -1.0
    stale: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


@dataclass
class EpochCheckpoint:
    """The state of a run by epochs, saved to `directory` after each epoch and read back by a rerun.

    key: what the run depends on (a checkpoint saved under another key is ignored, and overwritten);
    optimizer and generators (torch or NumPy, by name) are saved with the weights, as are torch's and
    Python's global generators (dropout, shuffles). Tensors go to state.safetensors, the rest to
    state.json; both carry the epoch, and a pair that disagrees (a cut between the two writes) is ignored.
    """

    directory: Path
    key: Any
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator | np.random.Generator] = field(default_factory=dict)

    TENSORS = "state.safetensors"
    META = "state.json"

    def save(self, model: nn.Module, state: LoopState) -> None:
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        if state.best_state is not None:
            tensors |= {f"best.{k}": v.contiguous() for k, v in state.best_state.items()}
        optimizer = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in optimizer["state"].items():
            for name, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        tensors["rng.torch"] = torch.get_rng_state()
        numpy_states = {}
        for name, generator in self.generators.items():
            if isinstance(generator, torch.Generator):
                tensors[f"rng.{name}"] = generator.get_state()
            else:
                numpy_states[name] = generator.bit_generator.state
        meta = {
            "key": self.key,
            "epoch": state.epoch,
            "best_ndcg": state.best_ndcg,
            "stale": state.stale,
            "history": state.history,
            "optimizer_groups": optimizer["param_groups"],
            "optimizer_scalars": scalars,
            "optimizer_indices": sorted(optimizer["state"]),
            "numpy": numpy_states,
            "python": random.getstate(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp_tensors, tmp_meta = self.directory / (self.TENSORS + ".tmp"), self.directory / (self.META + ".tmp")
        save_file(tensors, tmp_tensors, metadata={"epoch": str(state.epoch)})
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_tensors, self.directory / self.TENSORS)
        os.replace(tmp_meta, self.directory / self.META)

    def load(self, model: nn.Module) -> LoopState | None:
        """Restore model, optimizer and generators from a checkpoint of this key; None when there is none."""
        meta_path, tensor_path = self.directory / self.META, self.directory / self.TENSORS
        if not (meta_path.exists() and tensor_path.exists()):
            return None
        meta = json.loads(meta_path.read_text())
        with safe_open(tensor_path, "pt") as handle:  # the tensors' epoch, to match the JSON's
            saved_epoch = (handle.metadata() or {}).get("epoch")
        if meta.get("key") != json.loads(json.dumps(self.key)) or saved_epoch != str(meta["epoch"]):
            return None
        tensors = load_file(tensor_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        optimizer_state = {}
        for index in meta["optimizer_indices"]:
            values = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optimizer.{index}.")}
            optimizer_state[index] = values | meta["optimizer_scalars"].get(str(index), {})
        self.optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        for name, generator in self.generators.items():
            if isinstance(generator, torch.Generator):
                generator.set_state(tensors[f"rng.{name}"])
            else:
                generator.bit_generator.state = meta["numpy"][name]
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
        return LoopState(meta["epoch"], meta["best_ndcg"], meta["stale"], best, meta["history"])


def train_with_early_stopping(
    model: nn.Module,
    data: Split,
    train_epoch: Callable[[], float],
    schedule: Schedule,
    desc: str,
    eval_batch_size: int = 256,
    checkpoint: EpochCheckpoint | None = None,
) -> list[dict]:
    """Run `train_epoch` (one pass, returns the mean loss) up to `schedule.epochs` times.

    Every `schedule.eval_every` epochs (and after the last) the model is scored on `valid`;
    the state with the best NDCG@10 is kept, training stops after `schedule.patience`
    evaluations without improvement, and the best state is loaded back into `model`.
    Returns one dict per epoch: epoch, loss, valid_NDCG@10 and valid_HR@10 (None on
    epochs without evaluation), seconds (training time since the first epoch, across resumes).
    With `checkpoint`, a saved state of the same key is resumed and the state is saved after each epoch;
    the caller removes it once the result is stored.
    """
    state = (checkpoint.load(model) if checkpoint else None) or LoopState()
    history, best_ndcg, best_state, stale = state.history, state.best_ndcg, state.best_state, state.stale
    if state.epoch:
        print(f"{desc}: resuming after epoch {state.epoch} from {checkpoint.directory}")
    start = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    epochs, eval_every, patience = schedule.epochs, schedule.eval_every, schedule.patience
    finished = state.epoch >= epochs or (state.epoch > 0 and stale >= patience)
    bar = tqdm(range(state.epoch + 1, 1 if finished else epochs + 1), desc=desc, unit="epoch")
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
        if checkpoint:
            checkpoint.save(model, LoopState(epoch, best_ndcg, stale, best_state, history))
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
