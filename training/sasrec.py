"""SASRec (Kang & McAuley, 2018): next-item prediction with causal self-attention.

Item indices are shifted by one so that 0 is padding. A history is right-aligned
and truncated to its last `max_len` items; learned positions count from the right
end, so the newest item always has the same position embedding. The item
embedding is shared with the output layer. Training is cross-entropy over the
whole catalog at every position of each user's training sequence (inputs seq[:-1],
targets seq[1:]); `score` is the logits of the last position.

Weights live in `state_dict()` as plain tensors; `SASRec(n_users, n_items, config)`
rebuilds the module (n_users is accepted for a uniform constructor and unused).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.cf import seed_everything, train_with_early_stopping
from training.config import SASRecConfig
from training.data import SplitData


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.heads, self.dropout = config.heads, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, d]; mask: bool [B, 1, L, L] (True: may attend) -> [B, L, d]."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(b, length, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, length, d)))


class FeedForward(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.dim, config.ffn_mult * config.dim),
            nn.GELU(),
            nn.Linear(config.ffn_mult * config.dim, config.dim),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.attn, self.ffn = CausalSelfAttention(config), FeedForward(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.ffn(self.ln2(x))


class SASRec(nn.Module):
    """Causal transformer over item sequences; logits over the whole catalog."""

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.n_items, self.config = n_items, config
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: int64 [B, L] shifted item ids, 0 = padding, right-aligned, L <= max_len -> hidden [B, L, d]."""
        length = seq.shape[1]
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=seq.device)
        x = self.drop(self.item_emb(seq) * math.sqrt(self.config.dim) + self.pos_emb(positions))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # Keys that are padding are hidden; each position still sees itself so no row is empty.
        real_key = (seq != 0)[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = causal & real_key
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., d] -> logits [..., n_items] (padding row dropped, so column i is item i)."""
        return hidden @ self.item_emb.weight[1:].T

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        """users: int64 [B] (unused); histories: B item-index arrays -> float [B, n_items]."""
        seq = pad_right_aligned([h[-self.config.max_len :] + 1 for h in histories], self.config.max_len)
        return self.logits(self(seq)[:, -1])


def pad_right_aligned(sequences: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad with 0 to the longest sequence (at least 1, at most max_len). Returns int64 [B, L]."""
    length = max(1, min(max_len, max((len(s) for s in sequences), default=1)))
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, s in enumerate(sequences):
        s = s[-length:]
        if len(s):
            out[row, length - len(s) :] = s
    return torch.from_numpy(out)


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
    per-epoch log (see `training.cf.train_with_early_stopping`).
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
