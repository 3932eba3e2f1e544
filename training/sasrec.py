"""Training SASRec (the model is `face_app.sequential.SASRec`, which serving also reads).

Training is cross-entropy over the whole catalog at every position of each user's training sequence
(inputs seq[:-1], targets seq[1:]), in windows of `max_len`; early-stopped on valid NDCG@10.
`SASRec(n_users, n_items, config)` rebuilds the module (n_users is accepted for a uniform
constructor and unused).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from face_app.sequential import SASRec, pad_right_aligned
from training.config import SASRecConfig
from training.data import SplitData
from training.loop import seed_everything, train_with_early_stopping


def training_windows(train: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each training sequence into windows of at most max_len + 1 items, from the newest end.

    Consecutive windows overlap by one item, so every next-item target appears
    exactly once per epoch. Returns shifted ids (0 = padding).
    """
    windows = []
    for seq in train:
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1) : end] + 1)
    return windows


def train_sasrec(data: SplitData, config: SASRecConfig, seed: int) -> SASRec:
    """Train SASRec with full-catalog cross-entropy, early-stopped on valid NDCG@10.

    Returns the model in eval mode with the best weights; `.history` holds the
    per-epoch log (see `training.loop.train_with_early_stopping`).
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model = SASRec(data.n_users, data.n_items, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def train_epoch() -> float:
        windows = training_windows(data.train, config.max_len)
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            seq = pad_right_aligned([windows[i] for i in order[start : start + config.batch_size]], config.max_len + 1)
            inputs, targets = seq[:, :-1], seq[:, 1:] - 1
            # Only positions with a real input and a real target count; the catalog-wide
            # logits are the bulk of the cost, so they are computed for those alone.
            keep = (inputs != 0) & (targets >= 0)
            loss = F.cross_entropy(model.logits(model(inputs)[keep]), targets[keep])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n = int(keep.sum())
            total, count = total + loss.item() * n, count + n
        return total / max(count, 1)

    model.history = train_with_early_stopping(model, data, train_epoch, config, desc=f"SASRec seed {seed}")
    return model
