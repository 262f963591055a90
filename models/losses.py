"""The sequence transformer's training losses: the full softmax over the vocabulary and, for large
catalogues, a sampled softmax. On a log where a user never touches an item twice (a rating log: a movie is
rated once), the items already in a window are never its next item, so the full softmax can leave them out
(`mask_seen`): the model then learns which unseen item comes next, what it is asked at serving time, where
seen items are excluded, instead of spending its gradient on pushing down items that cannot come."""
from __future__ import annotations

import torch

REPEAT_SHARE_MAX = 0.01   # below this share of repeated (user, item) events a log counts as one without repeats


def repeat_share(seqs: list[list[int]]) -> float:
    """The share of items in `seqs` (one per user) that the same user already had earlier.

    >>> repeat_share([[1, 2, 1], [3]])
    0.25
    """
    total = sum(len(s) for s in seqs)
    return sum(len(s) - len(set(s)) for s in seqs) / total if total else 0.0


def masks_seen(setting: bool | None, seqs: list[list[int]]) -> bool:
    """Whether the full softmax leaves the seen items out: as set, or (None) when `seqs` have no repeats."""
    return setting if setting is not None else repeat_share(seqs) < REPEAT_SHARE_MAX


def seen_before(x: torch.Tensor) -> torch.Tensor:
    """(B, T) left-padded inputs -> (B, T, T): at position t, the items at positions 0..t (the history its
    next item follows), 0 (padding) elsewhere."""
    T = x.shape[1]
    upto = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()       # [t, s]: s <= t
    return torch.where(upto, x.unsqueeze(1).expand(-1, T, -1), torch.zeros_like(x).unsqueeze(1))


def full_softmax_loss(model, x: torch.Tensor, y: torch.Tensor, mask_seen: bool = False) -> torch.Tensor:
    """Cross-entropy of the next item over the whole vocabulary (padding excluded); with `mask_seen`, the
    items of the window up to each position are left out of that position's softmax (its target never)."""
    h = model.encode(x)
    mask = y > 0
    h, y = h[mask], y[mask]
    logits = h @ model.item_emb.weight.T                                    # (N, n_items)
    if mask_seen:          # in place through a bool mask: copies of the (N, n_items) logits cost 15 % of a step
        seen = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        logits.masked_fill_(seen.scatter_(1, seen_before(x)[mask], True).scatter_(1, y.unsqueeze(1), False), -1e9)
    logits[:, 0] = -1e9
    return torch.nn.functional.cross_entropy(logits, y)


def sampled_softmax_loss(model, x: torch.Tensor, y: torch.Tensor, n_items: int, k: int,
                         gen: torch.Generator) -> torch.Tensor:
    h = model.encode(x)                                                     # (B, T, C)
    mask = y > 0                                                            # (B, T)
    h, y = h[mask], y[mask]                                                 # (N, C), (N,)
    pos = (h * model.item_emb(y)).sum(-1, keepdim=True)                    # (N, 1)
    neg_ids = torch.randint(1, n_items, (k,), generator=gen).to(h.device)   # (K,)
    neg = h @ model.item_emb(neg_ids).T                                     # (N, K)
    neg = neg.masked_fill(neg_ids.unsqueeze(0) == y.unsqueeze(1), -1e9)    # accidental hits
    logits = torch.cat([pos, neg], dim=1)                                   # (N, 1 + K)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=y.device))
