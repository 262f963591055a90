"""A SASRec-style causal transformer over a user's recent items.

Reads top to bottom: config, attention, block, model. Item id 0 is padding; sequences are
left-padded to `max_len`, so the last position is the most recent item. No numpy and no
data-dependent Python control flow in `forward`: it exports to ONNX as is.

    scores = SeqRec(cfg)(seq, candidates)   # (B, T) item ids, (B, C) item ids -> (B, C)
    scores = SeqRecEnsemble([a, b])(seq, candidates)   # the members' mean score, the same interface
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SeqRecConfig:
    n_items: int            # vocabulary size, padding id 0 included
    max_len: int = 50       # events kept per user
    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        assert cfg.dim % cfg.heads == 0
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        future = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("future", future, persistent=False)   # (T, T) True above the diagonal

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                                   # (B, T, C) each
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)             # (B, H, T, D)
        k = k.view(B, T, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)              # (B, H, T, T)
        masked = self.future[:T, :T].unsqueeze(0).unsqueeze(0) | pad[:, None, None, :]
        att = att.masked_fill(masked, -1e9)          # finite: an all-padding row stays NaN-free
        att = self.drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)                          # (B, T, C)
        return self.drop(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), pad)
        return x + self.mlp(self.ln2(x))


class SeqRec(nn.Module):
    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, T) item ids -> (B, T, C) hidden states; position t sees items 0..t."""
        B, T = seq.shape
        pad = seq == 0                                                          # (B, T)
        # right-aligned: the newest item is always at the last position, so a history shorter than max_len
        # may be passed with its leading padding cut off (the same states: padding is masked as a key)
        n = self.pos_emb.num_embeddings
        positions = torch.arange(n - T, n, device=seq.device).unsqueeze(0)     # (1, T)
        h = self.item_emb(seq) + self.pos_emb(positions)                        # (B, T, C)
        h = self.drop(h) * (~pad).unsqueeze(-1).to(h.dtype)
        for block in self.blocks:
            h = block(h, pad)
        return self.ln_f(h)

    def state(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, T) history -> (B, C_dim): the last position's state, what every candidate is scored against."""
        return self.encode(seq)[:, -1, :]

    def item_table(self) -> torch.Tensor:
        """(n_items, C_dim): what a state is multiplied with (the item embeddings)."""
        return self.item_emb.weight

    def score(self, h: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, C_dim) states, (B, C) candidate ids -> (B, C) dot products."""
        e = self.item_emb(candidates)                                           # (B, C, C_dim)
        return (e @ h.unsqueeze(-1)).squeeze(-1)                                # (B, C)

    def forward(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, T) history, (B, C) candidate ids -> (B, C) scores (dot products with the last state)."""
        return self.score(self.state(seq), candidates)


class SeqRecEnsemble(nn.Module):
    """K SeqRec members trained with different seeds; the score is their mean. Written as one model with
    SeqRec's interface: the state is the members' states side by side divided by K and the item table their
    tables side by side, so a dot product of the two is the mean score, and the exported graph (`state`,
    `items`) serves through the same path as one model of K times the width."""

    def __init__(self, members: list[SeqRec]):
        super().__init__()
        assert members and len({(m.cfg.n_items, m.cfg.max_len) for m in members}) == 1
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    def state(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.state(seq) for m in self.members], dim=-1) / len(self.members)

    def item_table(self) -> torch.Tensor:
        return torch.cat([m.item_table() for m in self.members], dim=-1)

    def score(self, h: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, K * C_dim) states -> (B, C): member by member (the same sum as one product with `item_table`;
        the export's `items` output then stays a tensor of its own)."""
        d = self.cfg.dim
        return sum(m.score(h[:, i * d: (i + 1) * d], candidates) for i, m in enumerate(self.members))

    def forward(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.score(self.state(seq), candidates)


def members_of(model: SeqRec | SeqRecEnsemble) -> list[SeqRec]:
    """The SeqRec models a model is made of (itself, for a single one)."""
    return list(model.members) if isinstance(model, SeqRecEnsemble) else [model]


def from_members(members: list[SeqRec]) -> SeqRec | SeqRecEnsemble:
    """One member as itself, several as their ensemble."""
    return members[0] if len(members) == 1 else SeqRecEnsemble(members)
