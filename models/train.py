"""Train the sequence transformer on an event log (`recstream train`).

Global time split: the model learns from events before the split time; the held-out later
events are each ranked against the full catalogue the model knows (full ranking, items the user
already interacted with excluded), next to most-popular computed on the same training events.

Loss: **full softmax** cross-entropy over the whole vocabulary for catalogues up to 50,000 items
(exact, and cheap at that size), **sampled softmax** above that (the positive against 256 uniformly
sampled negatives shared by the batch, accidental hits masked). BCE with one negative per positive
(the original SASRec) is known to be overconfident and to rank worse than a softmax. On a log without
repeats (a rating log) the full softmax leaves each window's seen items out (`models/losses.py`).
Training windows of `max_len` end every `stride` items (overlapping), so each item is learned from
several context lengths. Early stopping on validation NDCG@10 over the last 10 % (by time) of the
training window, each event ranked from its user's full earlier history like the test; the fit stage
sees only what precedes that window, then the chosen model goes on learning the whole training window
for 2 more epochs (the latest events matter most). The test window is never looked at.
"""
from __future__ import annotations

import copy
import hashlib
import random
import sys
import time
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from models.data import (Interaction, Vocab, left_pad, split_time, train_vocab,
                         training_windows, user_sequences)
from models.losses import full_softmax_loss, masks_seen, sampled_softmax_loss
from models.memory import freed_memory_kept
from models.parallel import fine_tune, fit_members
from models.seqrec import SeqRec, SeqRecConfig, SeqRecEnsemble, from_members
from models.metrics import summarize


@dataclass(frozen=True)
class TrainConfig:
    test_frac: float = 0.2
    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    epochs: int = 200
    patience: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    negatives: int = 256
    full_softmax_items: int = 50_000   # catalogues up to this size train with the full softmax, larger sampled
    stride: int = 10                   # a training window ends every `stride` items (overlapping: more contexts)
    val_frac: float = 0.1              # the last 10 % (by time) of the training window validates early stopping
    finetune_epochs: int = 2           # then the best model goes on learning the whole window (the newest events)
    members: int = 1                   # models with seeds seed, seed + 1, ...: the served score is their mean
    seed: int = 42
    exclude_seen: bool = True
    mask_seen: bool | None = None      # the window's items out of the softmax; None: when the log has no repeats


def device() -> torch.device:
    """CUDA when there is a GPU (training only; the exported model serves on onnxruntime), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def rank_targets(model: SeqRec, histories: list[list[int]], targets: list[int], T: int,
                 exclude_seen: bool, batch: int = 512) -> list[int]:
    """Full-ranking rank (1-based; 0 = target unknown to the model) of each target given its history."""
    model.eval()
    dev = next(model.parameters()).device
    table = model.item_table().T                                             # (dim, n): one product a batch
    ranks = []
    for i in range(0, len(targets), batch):
        hs = histories[i: i + batch]
        x = torch.tensor([left_pad(h, T) for h in hs], device=dev)
        scores = (model.state(x) @ table).cpu().numpy()                     # (b, n), as model(x, all items)
        scores[:, 0] = -np.inf
        for j, (h, t) in enumerate(zip(hs, targets[i: i + batch])):
            if t <= 0:
                ranks.append(0)
                continue
            row = scores[j]
            if exclude_seen and h:
                if t in h:             # a repeat cannot be recommended when seen items are excluded
                    ranks.append(0)
                    continue
                row[h] = -np.inf
            ranks.append(int((row >= row[t]).sum()))
    return ranks


def popularity_ranks(counts: np.ndarray, histories: list[list[int]], targets: list[int], exclude_seen: bool) -> list[int]:
    base = counts.astype(np.float64).copy()
    base[0] = -np.inf
    ranks = []
    for h, t in zip(histories, targets):
        if t <= 0:
            ranks.append(0)
            continue
        row = base
        if exclude_seen and h:
            if t in h:
                ranks.append(0)
                continue
            row = base.copy()
            row[h] = -np.inf
        # ties among equally popular items are broken pessimistically
        ranks.append(int((row >= row[t]).sum()))
    return ranks


def held_out(events: list[Interaction], t_split: int, vocab: Vocab, T: int):
    """Each event at or after the split, with the user's full earlier history (training + earlier test)."""
    hist: dict[str, list[int]] = {}
    histories, targets = [], []
    for x in events:
        h = hist.setdefault(x.user, [])
        tid = vocab.index.get(x.item, 0)
        if x.ts >= t_split:
            histories.append(list(h[-T:]))
            targets.append(tid)
        if tid:
            h.append(tid)
    return histories, targets


def data_hash(events: list[Interaction]) -> str:
    h = hashlib.sha256()
    for x in events:
        h.update(f"{x.user}\t{x.item}\t{x.ts}\n".encode())
    return h.hexdigest()[:16]


@freed_memory_kept()            # the step's large tensors reused, not faulted in anew (models/memory.py)
def _fit(seqs: list[list[int]], vocab: Vocab, cfg: TrainConfig, full: bool, *, val=None, epochs: int | None = None,
         progress: bool = True, model: SeqRec | None = None, states: list | None = None):
    """Train (seeded; from scratch unless `model` is given). With `val`: early stopping on its NDCG@10,
    returns the best state; else exactly `epochs` epochs. Returns (model, best validation NDCG@10, best epoch);
    `states`, when given, gets the model's state after every epoch."""
    seed_everything(cfg.seed)
    X, Y = training_windows(seqs, cfg.max_len, cfg.stride)
    mask_seen = masks_seen(cfg.mask_seen, seqs)
    if model is None:
        model = SeqRec(SeqRecConfig(n_items=len(vocab), max_len=cfg.max_len, dim=cfg.dim, heads=cfg.heads,
                                    layers=cfg.layers, dropout=cfg.dropout))
    dev = device()
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    from tqdm import tqdm
    n_epochs = cfg.epochs if epochs is None else epochs
    for epoch in range(1, n_epochs + 1):
        model.train()
        order = rng.permutation(len(X))
        losses = []
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}", disable=not progress,
                   file=sys.stderr, leave=False)
        for i in bar:
            idx = order[i: i + cfg.batch_size]
            x, y = torch.from_numpy(X[idx]).to(dev), torch.from_numpy(Y[idx]).to(dev)
            loss = (full_softmax_loss(model, x, y, mask_seen) if full
                    else sampled_softmax_loss(model, x, y, len(vocab), cfg.negatives, gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        if states is not None:
            states.append({k: t.detach().cpu().clone() for k, t in model.state_dict().items()})
        if val is None:
            print(f"epoch {epoch:3d}/{epochs} (fixed count)  loss {np.mean(losses):.4f}", file=sys.stderr, flush=True)
            continue
        v = summarize(rank_targets(model, val[0], val[1], cfg.max_len, cfg.exclude_seen), ks=(10,))["ndcg@10"]
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  val ndcg@10 {v:.4f}", file=sys.stderr, flush=True)
        if v > best:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.cpu().eval()        # export and serving run on the CPU copy
    return model, best, best_epoch or n_epochs


def validation_window(events: list[Interaction], vocab: Vocab, cfg: TrainConfig):
    """The training window's own validation split: (its first timestamp, the histories, the targets) of the
    last `val_frac` by time, each event ranked from its user's full earlier history."""
    val_ts = split_time(events, cfg.val_frac)
    return (val_ts, *held_out(events, val_ts, vocab, cfg.max_len))


class Fit(NamedTuple):
    model: SeqRec | SeqRecEnsemble
    best: float                           # validation NDCG@10
    best_epoch: int
    holdout: SeqRec | SeqRecEnsemble | None   # the model before fine-tuning: it never saw the validation window


def fit_window(events: list[Interaction], vocab: Vocab, cfg: TrainConfig, progress: bool = True, log=None) -> Fit:
    """A model from scratch on `events` (all of them train): early stopping on the last `val_frac` by time,
    each event ranked from its user's full earlier history (the test protocol, one window earlier; the fit
    stage sees only what precedes it), then `finetune_epochs` on the whole window (the newest events and
    items matter most). With `members` > 1 the other members (seeds seed + 1, ...) train as many epochs as
    the first one's best, and the model is their mean (`SeqRecEnsemble`), validated as a whole. With
    fine-tuning, a copy of the model before it is kept as the `holdout`: its scores on the validation
    window are out of sample, what a ranker can learn the model's columns from (stacking)."""
    val_ts, val_h, val_t = validation_window(events, vocab, cfg)
    earlier = user_sequences([x for x in events if x.ts < val_ts])
    fit_seqs = [vocab.encode([x.item for x in xs]) for xs in earlier.values()]
    full = len(vocab) <= cfg.full_softmax_items
    say = log or (lambda *_: None)
    cfg = replace(cfg, mask_seen=masks_seen(cfg.mask_seen, fit_seqs))    # once for the fit and the fine-tuning
    say(f"{len(vocab) - 1} items; {'full' if full else 'sampled'} softmax"
        f"{' without the seen items (no repeats)' if full and cfg.mask_seen else ''}; validation "
        f"{len(val_t)} events (last {cfg.val_frac:.0%} of the training window)")
    members, best, best_epoch = fit_members(fit_seqs, vocab, cfg, full, (val_h, val_t), progress, say)
    if len(members) > 1:
        first = best
        best = summarize(rank_targets(SeqRecEnsemble(members), val_h, val_t, cfg.max_len, cfg.exclude_seen),
                         ks=(10,))["ndcg@10"]
        say(f"{len(members)} members: validation NDCG@10 {best:.4f} (the first alone {first:.4f})")
    holdout = None
    if cfg.finetune_epochs > 0:
        holdout = from_members([copy.deepcopy(m) for m in members]).eval()
        full_seqs = [vocab.encode([x.item for x in xs]) for xs in user_sequences(events).values()]
        members = fine_tune(members, full_seqs, vocab, cfg, full, cfg.finetune_epochs, progress)
    return Fit(from_members(members).eval(), best, best_epoch, holdout)


class Trained(NamedTuple):
    model: SeqRec | SeqRecEnsemble
    vocab: Vocab
    report: dict
    holdout: SeqRec | SeqRecEnsemble | None    # `Fit.holdout`; report["holdout_until_ts"] says what it learned


def train(events: list[Interaction], cfg: TrainConfig = TrainConfig(), progress: bool = True, log=print) -> Trained:
    """The model, its vocabulary, the report and the holdout model (`Fit.holdout`)."""
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    t_split = split_time(events, cfg.test_frac)
    train_ev = [x for x in events if x.ts < t_split]
    vocab = train_vocab(train_ev)
    log(f"train: {len(train_ev)} events before the split, {len(events) - len(train_ev)} held out")
    # decided once for the whole training window, so that the manifest's config says what was done
    cfg = replace(cfg, mask_seen=masks_seen(cfg.mask_seen, [[x.item for x in xs] for xs in
                                                            user_sequences(train_ev).values()]))
    model, best, best_epoch, holdout = fit_window(train_ev, vocab, cfg, progress, log)
    histories, targets = held_out(events, t_split, vocab, cfg.max_len)
    counts = np.bincount([vocab.index[x.item] for x in train_ev], minlength=len(vocab))
    ours = summarize(rank_targets(model, histories, targets, cfg.max_len, cfg.exclude_seen), ks=(10,))
    pop = summarize(popularity_ranks(counts, histories, targets, cfg.exclude_seen), ks=(10,))
    # most-popular on the same validation split as `best` (the training window's own last `val_frac`): how
    # much the model knows, judged without the held-out events (which a backtest may evaluate)
    val_ts, vh, vt = validation_window(train_ev, vocab, cfg)
    vcounts = np.bincount([vocab.index[x.item] for x in train_ev if x.ts < val_ts], minlength=len(vocab))
    val_pop = summarize(popularity_ranks(vcounts, vh, vt, cfg.exclude_seen), ks=(10,))["ndcg@10"]
    # what the exported model has learned from: the whole window, or (no fine-tuning) the part before its
    # validation split, which the model then has never trained on (a ranker may learn its columns there)
    until = t_split - 1 if cfg.finetune_epochs > 0 else val_ts - 1
    report = {"split_ts": t_split, "trained_until_ts": until,
              "holdout_until_ts": val_ts - 1 if holdout is not None else None,     # `Fit.holdout`: what it saw
              "train_events": len(train_ev), "test_events": len(targets),
              "best_epoch": best_epoch, "val_ndcg@10": best, "val_most_popular_ndcg@10": val_pop,
              "seconds": round(time.time() - t0, 1),
              "test": {"seqrec": ours, "most_popular": pop},
              "ndcg@10_ratio_vs_most_popular": ours["ndcg@10"] / pop["ndcg@10"] if pop["ndcg@10"] else None,
              "data_hash": data_hash(events), "config": cfg.__dict__, "model_config": model.cfg.to_dict()}
    return Trained(model, vocab, report, holdout)
