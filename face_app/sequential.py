"""SASRec (Kang & McAuley, 2018), the model: causal self-attention over item sequences.

The model lives here, not in `training/`, because the tuned LLM reads it at serving time: its state of
a visitor's history is the collaborative soft token of the LLM's prompt (`face_app.decoder.TastePrompt`).
Training it is `training/sasrec.py`.

Item indices are shifted by one so that 0 is padding. A history is right-aligned and truncated to its
last `max_len` items. The item embedding is shared with the output layer; `score` is the logits of the
last position.

Two styles (`SASRecShape.style`), both with GELU feed-forwards, attention and hidden dropout:
- `sasrec` (the project's since round 1): pre-LayerNorm blocks and a final LayerNorm, the item embedding scaled
  by sqrt(dim), learned positions counted from the right end (the newest item always has the same position).
- `recbole`: the blocks of RecBole's SASRec (post-LayerNorm: each sublayer's output dropped out, added to its input,
  then normalised, eps 1e-12), LayerNorm and dropout on the item plus position embedding, which is not scaled,
  and positions counted from the oldest item of the window (RecBole's left-aligned sequences), issue 24's peer.

`shape` is any object with `dim`, `layers`, `heads`, `max_len`, `dropout`, `ffn_mult` and `style` (the training
config, or `SASRecShape` read back from JSON; a JSON without `style` is `sasrec`). Weights live in `state_dict()`
as plain tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Shape(Protocol):
    dim: int
    layers: int
    heads: int
    max_len: int
    dropout: float
    ffn_mult: int
    style: str


STYLES = ("sasrec", "recbole")
RECBOLE_EPS = 1e-12


@dataclass
class SASRecShape:
    """The architecture of a SASRec, as a bundle stores it (no training settings)."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    ffn_mult: int = 1
    style: str = "sasrec"

    @classmethod
    def of(cls, shape: Shape) -> SASRecShape:
        return cls(shape.dim, shape.layers, shape.heads, shape.max_len, shape.dropout, shape.ffn_mult,
                   style_of(shape))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Shape) -> None:
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
    def __init__(self, config: Shape) -> None:
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
    """Pre-LayerNorm (`sasrec`) or post-LayerNorm (`recbole`) self-attention and feed-forward."""

    def __init__(self, config: Shape) -> None:
        super().__init__()
        self.post = style_of(config) == "recbole"
        eps = RECBOLE_EPS if self.post else 1e-5
        self.ln1, self.ln2 = nn.LayerNorm(config.dim, eps=eps), nn.LayerNorm(config.dim, eps=eps)
        self.attn, self.ffn = CausalSelfAttention(config), FeedForward(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.ln1(x + self.attn(x, mask))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), mask)
        return x + self.ffn(self.ln2(x))


def style_of(config: Shape) -> str:
    """The config's style (`sasrec` when it has none); an unknown one is an error."""
    style = getattr(config, "style", "sasrec")
    if style not in STYLES:
        raise ValueError(f"SASRec style must be one of {STYLES}, not {style!r}")
    return style


class SASRec(nn.Module):
    """Causal transformer over item sequences; logits over the whole catalog."""

    def __init__(self, n_users: int, n_items: int, config: Shape) -> None:
        super().__init__()
        self.n_items, self.config = n_items, config
        self.recbole = style_of(config) == "recbole"
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        # sasrec: the final LayerNorm of a pre-LN stack; recbole: the embedding's LayerNorm (its blocks end normed)
        self.ln_f = nn.LayerNorm(config.dim, eps=RECBOLE_EPS if self.recbole else 1e-5)
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
        if self.recbole:  # positions from each window's oldest item; padding (on the left) takes position 0
            positions = ((seq != 0).cumsum(dim=1) - 1).clamp(min=0)
            x = self.drop(self.ln_f(self.item_emb(seq) + self.pos_emb(positions)))
        else:
            positions = torch.arange(self.config.max_len - length, self.config.max_len, device=seq.device)
            x = self.drop(self.item_emb(seq) * math.sqrt(self.config.dim) + self.pos_emb(positions))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # Keys that are padding are hidden; each position still sees itself so no row is empty.
        real_key = (seq != 0)[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = causal & real_key
        for block in self.blocks:
            x = block(x, mask)
        return x if self.recbole else self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., d] -> logits [..., n_items] (padding row dropped, so column i is item i)."""
        return hidden @ self.item_emb.weight[1:].T

    def state(self, histories: list[np.ndarray]) -> torch.Tensor:
        """histories: B item-index arrays (oldest first) -> float [B, d], the hidden state after the newest item."""
        seq = pad_right_aligned([np.asarray(h[-self.config.max_len :]) + 1 for h in histories], self.config.max_len)
        return self(seq.to(self.item_emb.weight.device))[:, -1]

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        """users: int64 [B] (unused); histories: B item-index arrays -> float [B, n_items]."""
        return self.logits(self.state(histories))


def pad_right_aligned(sequences: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad with 0 to the longest sequence (at least 1, at most max_len). Returns int64 [B, L]."""
    length = max(1, min(max_len, max((len(s) for s in sequences), default=1)))
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, s in enumerate(sequences):
        s = s[-length:]
        if len(s):
            out[row, length - len(s) :] = s
    return torch.from_numpy(out)
