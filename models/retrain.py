"""Retraining on a window of newer events, warm-started from the model in service.

The vocabulary only grows: items the model knows keep their index and their learned row; items new in the
window are appended with fresh rows (initialised like a new model's). Everything else (positions, attention,
layer norms) carries over. A warm start then trains a fixed, small number of epochs over the window (no
early stopping: the shadow check that follows decides whether the result is better); a cold start (no model
yet) trains like `recstream train`: early stopping on the window's last 10 % by time, then 2 epochs on all.

    >>> v = grow_vocab(Vocab(["a", "b"]), [Interaction("u", "c", 1), Interaction("u", "a", 2)])
    >>> v.items
    ['<pad>', 'a', 'b', 'c']
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from models.data import Interaction, Vocab, train_vocab, user_sequences
from models.seqrec import SeqRec, SeqRecConfig, SeqRecEnsemble, from_members, members_of
from models.parallel import fine_tune
from models.train import TrainConfig, data_hash, fit_window, seed_everything


def grow_vocab(old: Vocab, events: list[Interaction]) -> Vocab:
    """The old vocabulary with the window's new items appended (old indices unchanged)."""
    new = [it for it in train_vocab(events).items[1:] if it not in old.index]
    return Vocab(old.items[1:] + new)


def grow_model(model: SeqRec | SeqRecEnsemble, n_items: int, seed: int = 0) -> SeqRec | SeqRecEnsemble:
    """A copy of `model` with `n_items` rows in its item table: the old rows kept, the new ones fresh."""
    if isinstance(model, SeqRecEnsemble):
        return from_members([grow_model(m, n_items, seed + i) for i, m in enumerate(model.members)])
    cfg = replace(model.cfg, n_items=n_items)
    torch.manual_seed(seed)
    out = SeqRec(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    emb = out.item_emb.weight.detach().clone()
    old = state["item_emb.weight"]
    emb[: old.shape[0]] = old
    state["item_emb.weight"] = emb
    out.load_state_dict(state)
    return out


def load_checkpoint(path) -> SeqRec | SeqRecEnsemble:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    members = []
    for state in ck.get("members") or [ck["state"]]:
        members.append(SeqRec(SeqRecConfig(**ck["config"])))
        members[-1].load_state_dict(state)
    return (members[0] if "members" not in ck else SeqRecEnsemble(members)).eval()


def save_checkpoint(model: SeqRec | SeqRecEnsemble, path) -> None:
    """One model as `state` (the format before ensembles), several as `members`."""
    states = [m.state_dict() for m in members_of(model)]
    torch.save({"config": model.cfg.to_dict(), **({"state": states[0]} if len(states) == 1 else {"members": states})},
               path)


def retrain(events: list[Interaction], cfg: TrainConfig = TrainConfig(), *, init: tuple[SeqRec, Vocab] | None = None,
            warm_epochs: int = 2, progress: bool = False, log=print) -> tuple[SeqRec, Vocab, dict]:
    """Train on all of `events` (already the chosen window); warm-started from `init` = (model, vocab) when
    given. Returns (model, vocab, report)."""
    seed_everything(cfg.seed)
    t0 = time.time()
    if init is not None:
        vocab = grow_vocab(init[1], events)
        model = grow_model(init[0], len(vocab), cfg.seed)
    else:
        vocab, model = train_vocab(events), None
    if model is not None:
        cfg = replace(cfg, max_len=model.cfg.max_len)
        seqs = [vocab.encode([x.item for x in xs]) for xs in user_sequences(events).values()]
        full = len(vocab) <= cfg.full_softmax_items
        model = from_members(fine_tune(members_of(model), seqs, vocab, cfg, full, warm_epochs, progress))
        best, epochs = None, warm_epochs
    else:
        model, best, epochs, *_ = fit_window(events, vocab, cfg, progress)
    report = {"events": len(events), "items": len(vocab) - 1, "new_items": len(vocab) - (len(init[1]) if init else 1),
              "warm_start": init is not None, "epochs": epochs, "val_ndcg@10": best,
              "trained_from_ts": events[0].ts if events else None,
              "trained_until_ts": events[-1].ts if events else None,
              "seconds": round(time.time() - t0, 1), "data_hash": data_hash(events), "config": cfg.__dict__,
              "model_config": model.cfg.to_dict()}
    log(f"retrained on {len(events)} events ({'warm start' if init else 'cold start'}, {epochs} epochs, "
        f"{report['new_items']} new items) in {report['seconds']} s")
    return model, vocab, report
