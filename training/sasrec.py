"""Training SASRec (the model is `face_app.sequential.SASRec`, which serving also reads).

Training is cross-entropy over the whole catalog at every position of each user's training sequence
(inputs seq[:-1], targets seq[1:]), in windows of `max_len`; early-stopped on valid NDCG@10.
`SASRec(n_users, n_items, config)` rebuilds the module (n_users is accepted for a uniform
constructor and unused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from face_app.sequential import SASRec, pad_right_aligned
from training.config import SASRecConfig
from training.data import SplitData
from training.loop import EpochCheckpoint, seed_everything, train_with_early_stopping


def training_windows(train: list[np.ndarray], max_len: int, stride: int | None = None) -> list[tuple[np.ndarray, int]]:
    """Cut each training sequence into windows of at most max_len + 1 items, from the newest end, every `stride`
    items (None: every max_len, windows that overlap by one item).

    Returns (shifted ids with 0 = padding, targets): a window's loss counts its newest `targets` positions, so every
    next-item target counts exactly once per epoch, and with a stride under max_len each target but those of a
    sequence's oldest window is predicted from at least max_len - stride earlier items (RecBole's SASRec, which
    trains one prefix per target, is stride 1; the window at stride max_len gives the first targets of a window
    almost no context).
    """
    stride = max_len if stride is None else stride
    windows = []
    for seq in train:
        for end in range(len(seq), 1, -stride):
            start = max(0, end - max_len - 1)
            window = seq[start:end] + 1
            oldest = end - stride <= 1  # the last window of this sequence: every target it has
            windows.append((window, len(window) - 1 if oldest else min(stride, len(window) - 1)))
    return windows


def train_sasrec(
    data: SplitData, config: SASRecConfig, seed: int, checkpoint: tuple[Path, Any] | None = None
) -> SASRec:
    """Train SASRec with full-catalog cross-entropy, early-stopped on valid NDCG@10.

    Returns the model in eval mode with the best weights; `.history` holds the
    per-epoch log (see `training.loop.train_with_early_stopping`). checkpoint: (directory, key) to save
    every epoch to and resume from (`training.loop.EpochCheckpoint`).
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model = SASRec(data.n_users, data.n_items, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def train_epoch() -> float:
        windows = training_windows(data.train, config.max_len, config.window_stride)
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            batch = [windows[i] for i in order[start : start + config.batch_size]]
            seq = pad_right_aligned([window for window, _ in batch], config.max_len + 1)
            inputs, targets = seq[:, :-1], seq[:, 1:] - 1
            # Only a window's own targets count (its newest positions; padding has none); the catalog-wide
            # logits are the bulk of the cost, so they are computed for those alone.
            counted = torch.tensor([n for _, n in batch])[:, None]
            keep = torch.arange(inputs.shape[1] - 1, -1, -1)[None, :] < counted
            loss = F.cross_entropy(model.logits(model(inputs)[keep]), targets[keep])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n = int(keep.sum())
            total, count = total + loss.item() * n, count + n
        return total / max(count, 1)

    saved = EpochCheckpoint(*checkpoint, optimizer, {"windows": rng}) if checkpoint else None
    model.history = train_with_early_stopping(
        model, data, train_epoch, config, desc=f"SASRec seed {seed}", checkpoint=saved
    )
    return model
