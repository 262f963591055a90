"""Continuous training: retrain the transformer on newer events, shadow-score it against the model in service,
promote it only when it wins; and the same retraining inside a backtest's replay, at event time.

`retrain_once` (`recstream retrain`): the archive's newest `window` of event time; the candidate trains on all
of it but its last `shadow_frac` (warm-started from the promoted model's weights where the registry has them),
is exported with the parity check and registered, then both models are scored prequentially on that last
slice, which neither trained on, through the same pipeline core as the worker (`run_backtest`, base order:
what is compared is the scorer). Promoted if its NDCG@10 beats the promoted model's by `margin`
(relative); the decision, both figures and the reason are written into the candidate's manifest and the
registry's history.jsonl.

`ReplayRetrainer` (`recstream backtest --retrain-every`): a second recstream system in the same replay,
starting from the same model, retrained every DURATION of event time from the log's first event on (a retrain
job on a schedule, running through the warm-up too) on the events revealed so far (never on an event before it
has been evaluated), warm-started from its current model, its new version swapped in between two batches. The
frozen twin keeps the model it started with: the comparison is "deployed once" against "retrained on schedule".
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import orjson

from models.data import Interaction, Vocab
from models.linear import fit_linear
from models.retrain import load_checkpoint, retrain
from models.train import TrainConfig
from stream.core.storage.registry import Registry

log = logging.getLogger("recstream.retrain")


def _promoted_init(registry_root) -> tuple[str | None, tuple | None, dict | None]:
    """(version, (model, vocab) to warm-start from or None, manifest) of the promoted model."""
    reg = Registry(registry_root)
    version = reg.promoted()
    if not version:
        return None, None, None
    d = reg.path(version)
    manifest = orjson.loads((d / "manifest.json").read_bytes())
    if not (d / "model.pt").exists():
        log.warning("promoted %s has no torch weights (model.pt, registered before retraining existed): "
                    "the candidate starts cold", version)
        return version, None, manifest
    vocab = Vocab(orjson.loads((d / "vocab.json").read_bytes())[1:])
    return version, (load_checkpoint(d / "model.pt"), vocab), manifest


def interactions(events) -> list[Interaction]:
    return [Interaction(e.user_id, e.item_id, e.ts) for e in events if e.item_id]


def train_candidate(events, registry_root, *, init=None, epochs: int = 2, seed: int = 42, manifest: dict | None = None,
                    train_cfg: dict | None = None) -> tuple[str, dict, tuple]:
    """Train on `events` (Event objects, time-ordered), register the result (not promoted).
    Returns (version, report, (model, vocab): what a next warm start begins from).
    `train_cfg`: TrainConfig fields for a cold start (model size, epochs; default 30 epochs at most)."""
    from exporters.pipeline import export_register
    cfg = TrainConfig(**{"epochs": 30, "seed": seed, **(train_cfg or {})})
    inter = interactions(events)
    model, vocab, report = retrain(inter, cfg, init=init, warm_epochs=epochs, log=log.info)
    linear = fit_linear(inter, vocab, log=log.info)
    version, report["parity"] = export_register(
        model, vocab, {**(manifest or {}), "data_hash": report["data_hash"], "train_config": report["config"],
                       "trained_until_ts": report["trained_until_ts"], "retrain": {
                           k: report[k] for k in ("events", "new_items", "warm_start", "epochs", "seconds",
                                                  "trained_from_ts")}}, registry_root, linear=linear)
    return version, report, (model, vocab)


def shadow_score(events, items, holdout_ts: int, registry_root, candidate: str, redis_url: str,
                 encoder_dir: str | None = None, batch_size: int = 100) -> dict:
    """Prequential NDCG@10 of the promoted model and `candidate` on the events from `holdout_ts` on (what
    came before only builds state), side by side in one replay."""
    from stream.evaluation.backtest import BacktestConfig, run_backtest
    before = sum(1 for e in events if e.ts < holdout_ts)
    warm = (before + 0.5) / max(1, len(events))        # int(n * warm) == before: the first held-out event exactly
    cfg = BacktestConfig(warmup_frac=warm, systems=("recstream",), rankers=(), encoder_dir=encoder_dir,
                         explore=False, batch_size=batch_size, holdout=False,     # the two models, as they are
                         challenger=str(Registry(registry_root).path(candidate)))
    rep = run_backtest(events, items, cfg, redis_url=redis_url, model_dir=str(registry_root))
    sy = rep["systems"]
    return {"evaluated": rep["evaluated"], "promoted": sy["recstream"]["ndcg@10"],
            "candidate": sy["recstream (candidate)"]["ndcg@10"], "seconds": rep["seconds"]}


def retrain_once(events, items, registry_root, redis_url: str, *, shadow_frac: float = 0.1, margin: float = 0.0,
                 epochs: int = 2, encoder_dir: str | None = None, seed: int = 42, promote: bool = True,
                 train_cfg: dict | None = None) -> dict:
    """One retrain decision over `events` (the chosen window, time-ordered). Returns what was decided."""
    if len(events) < 200:
        raise ValueError(f"only {len(events)} events in the window: need at least 200 to retrain and shadow-check")
    current, init, cur_manifest = _promoted_init(registry_root)
    cut = events[int(len(events) * (1 - shadow_frac))].ts
    holdout = max(cut, (cur_manifest or {}).get("trained_until_ts", 0) + 1)   # neither model trained on it
    train_ev = [e for e in events if e.ts < cut]
    version, report, _ = train_candidate(train_ev, registry_root, init=init, epochs=epochs, seed=seed,
                                      manifest={"source": "archive", "parent": current}, train_cfg=train_cfg)
    out = shadow_decide(events, items, registry_root, version, holdout, redis_url, margin=margin,
                        encoder_dir=encoder_dir, promote=promote, in_service=current)
    out["train"] = {k: report[k] for k in ("events", "new_items", "warm_start", "epochs", "seconds")}
    return out


def shadow_decide(events, items, registry_root, candidate: str, holdout_ts: int, redis_url: str, *,
                  margin: float = 0.0, encoder_dir: str | None = None, promote: bool = True,
                  in_service: str | None = None) -> dict:
    """Score `candidate` against the promoted model on the events from `holdout_ts` on; promote it if it wins
    by `margin`. The decision goes into its manifest and the registry's history. Returns it."""
    reg = Registry(registry_root)
    current = in_service or reg.promoted()
    if holdout_ts > events[-1].ts:
        shadow = {"promoted": None, "candidate": None, "evaluated": 0}
        win, reason = False, f"no events after what {current} trained on: nothing to compare on"
    else:
        shadow = shadow_score(events, items, holdout_ts, registry_root, candidate, redis_url, encoder_dir)
        win = shadow["candidate"] > shadow["promoted"] * (1 + margin)
        reason = (f"shadow NDCG@10 {shadow['candidate']:.4f} vs {shadow['promoted']:.4f} for "
                  f"{current or 'the fallback scorer'} in service ({shadow['evaluated']} events, margin {margin:.0%})")
    decision = "promoted" if win and promote else ("would promote" if win else "kept out")
    reg.annotate(candidate, shadow=shadow, decision=decision, reason=reason, in_service=current)
    if win and promote:
        reg.promote(candidate, reason=reason)
    else:
        reg.log({"action": "reject" if not win else "hold", "version": candidate, "in_service": current,
                 "reason": reason})
    return {"candidate": candidate, "in_service": current, "decision": decision, "reason": reason, "shadow": shadow,
            "holdout_from_ts": holdout_ts}


class ReplayRetrainer:
    """Retrains `system` (a RecstreamSystem of the replay) every `every_s` of event time from `start_ts` on,
    on the newest `window` revealed item events, warm-started from its current model."""

    def __init__(self, system, model_dir: str | None, every_s: float, start_ts: int, *, window: int = 1_000_000,
                 epochs: int = 2, seed: int = 42):
        self.system, self.every_ms, self.window = system, int(every_s * 1000), window
        self.epochs, self.seed = epochs, seed
        self.next_ts = start_ts + self.every_ms
        self.tmp = tempfile.TemporaryDirectory(prefix="recstream-retrain-")
        self.root = Path(self.tmp.name)
        _, self.init, manifest = _promoted_init(model_dir) if model_dir else (None, None, None)
        self.seen_until = (manifest or {}).get("trained_until_ts", -1)   # no retrain on what it already learned
        self.revealed: list = []
        self.log: list[dict] = []

    def observe(self, batch) -> None:
        self.revealed.extend(e for e in batch if e.item_id)

    def maybe(self, now_ts: int) -> None:
        """Before a batch is evaluated: retrain if its time has come (on what was revealed before it)."""
        if now_ts < self.next_ts or not self.revealed:
            return
        while self.next_ts <= now_ts:
            self.next_ts += self.every_ms
        if self.revealed[-1].ts <= self.seen_until:
            return
        t = time.time()
        evs = self.revealed[-self.window:]
        version, report, self.init = train_candidate(evs, self.root, init=self.init, epochs=self.epochs,
                                                     seed=self.seed)
        self.system.set_model(Registry(self.root).path(version))
        self.seen_until = evs[-1].ts
        self.log.append({"at_ts": now_ts, "version": version, "events": len(evs), "new_items": report["new_items"],
                         "trained_until_ts": report["trained_until_ts"],
                         "warm_start": report["warm_start"], "seconds": round(time.time() - t, 1)})
        log.info("retrained at ts %d on %d events: %s", now_ts, len(evs), self.log[-1])

    def close(self) -> None:
        self.tmp.cleanup()
