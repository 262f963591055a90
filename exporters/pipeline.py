"""train -> export -> parity -> (quantize) -> register: the whole path behind `recstream train`."""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import torch

from exporters.onnx import OPSET, export_seqrec
from exporters.parity import check_seqrec_parity
from models.data import load_interactions
from models.linear import fit_linear
from models.linear import rank_targets as linear_ranks
from models.metrics import summarize
from models.seqrec import members_of
from models.train import TrainConfig, held_out, train
from stream.core.storage.registry import Registry
from stream.data.adapters import open_log


def _onnx_ranks(path, histories, targets, T, n_items, exclude_seen=True, batch=512):
    import onnxruntime as ort

    from models.data import left_pad
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    allc = np.arange(n_items, dtype=np.int64)[None, :]
    ranks = []
    for i in range(0, len(targets), batch):
        hs = histories[i: i + batch]
        x = np.array([left_pad(h, T) for h in hs], dtype=np.int64)
        sc = sess.run(["scores"], {"seq": x, "candidates": np.repeat(allc, len(hs), 0)})[0]
        sc[:, 0] = -np.inf
        for j, (h, t) in enumerate(zip(hs, targets[i: i + batch])):
            if t <= 0 or (exclude_seen and t in h):
                ranks.append(0)
                continue
            row = sc[j]
            if exclude_seen and h:
                row[h] = -np.inf
            ranks.append(int((row >= row[t]).sum()))
    return ranks


def _speed(path, T, n_items, batch=32, n_cand=100, reps=20) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.integers(1, n_items, (batch, T))
    c = rng.integers(1, n_items, (batch, n_cand))
    sess.run(["scores"], {"seq": x, "candidates": c})
    t = time.perf_counter()
    for _ in range(reps):
        sess.run(["scores"], {"seq": x, "candidates": c})
    return batch * reps / (time.perf_counter() - t)


def export_register(model, vocab, manifest: dict, registry_root, *, extra=None, linear=None) -> tuple[str, dict]:
    """ONNX export, parity check, registration (model.onnx, vocab.json and model.pt, the torch weights a
    retrain warm-starts from; with `linear`, the item linear model fitted beside it as linear.npz).
    `extra(tmp, onnx_path)` may add files. Returns (version, parity)."""
    from models.retrain import save_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_seqrec(model, Path(tmp) / "model.onnx")
        parity = check_seqrec_parity(model, onnx_path).to_dict()
        vocab_path = Path(tmp) / "vocab.json"
        vocab_path.write_bytes(orjson.dumps(vocab.items))
        save_checkpoint(model, Path(tmp) / "model.pt")
        files = {"model.onnx": onnx_path, "vocab.json": vocab_path, "model.pt": Path(tmp) / "model.pt"}
        if extra is not None:                 # first: it may add to `manifest` (int8 figures, the holdout)
            files.update(extra(tmp, onnx_path))
        if linear is not None:
            files["linear.npz"] = linear.save(Path(tmp) / "linear.npz")
            manifest = {**manifest, "linear": linear.report}
        manifest = {**manifest, "opset": OPSET, "parity": parity,
                    "model_config": {**model.cfg.to_dict(), "members": len(members_of(model))},
                    "torch": torch.__version__}
        return Registry(registry_root).register(files, manifest), parity


def train_export_register(events_path, fmt=None, *, registry_root="artifacts/models", epochs=200, seed=42,
                          test_frac=0.2, stride=10, finetune_epochs=2, members=1, quantize=False, promote=False,
                          limit=None, log=print) -> dict:
    events = load_interactions(open_log(events_path, fmt).events(), limit)
    if len(events) < 100:
        raise ValueError(f"{events_path}: only {len(events)} usable events; need at least 100 to train")
    cfg = TrainConfig(epochs=epochs, seed=seed, test_frac=test_frac, stride=stride, finetune_epochs=finetune_epochs,
                      members=members)
    import sys
    model, vocab, report, holdout = train(events, cfg, progress=sys.stderr.isatty(), log=log)
    linear = fit_linear([x for x in events if x.ts <= report["trained_until_ts"]], vocab, log=log)
    histories, targets = held_out(events, report["split_ts"], vocab, cfg.max_len)
    report["test"]["linear"] = summarize(linear_ranks(linear, len(vocab), histories, targets, cfg.exclude_seen),
                                         ks=(10,))
    report["linear"] = linear.report
    manifest = {"data_hash": report["data_hash"], "source": str(events_path), "format": fmt,
                "metrics": {"test": report["test"], "val_ndcg@10": report["val_ndcg@10"]},
                "train_config": report["config"], "trained_until_ts": report["trained_until_ts"]}
    extras = []           # (tmp, onnx_path) -> more files; each may add to `manifest` (export_register reads it after)
    if holdout is not None:
        until = report["holdout_until_ts"]
        before = [x for x in events if x.ts <= until]
        holdout_linear = fit_linear(before, vocab)
        extras.append(lambda tmp, onnx_path: holdout_files(tmp, onnx_path, holdout, vocab, holdout_linear, until,
                                                           (x.item for x in before), manifest, log))
    if quantize:
        def quantized(tmp, onnx_path):
            from exporters.quantize import quantize_int8
            q = quantize_int8(onnx_path, Path(tmp) / "model.int8.onnx")
            fp = summarize(_onnx_ranks(onnx_path, histories, targets, cfg.max_len, len(vocab)), ks=(10,))
            i8 = summarize(_onnx_ranks(q, histories, targets, cfg.max_len, len(vocab)), ks=(10,))
            s_fp, s_i8 = _speed(onnx_path, cfg.max_len, len(vocab)), _speed(q, cfg.max_len, len(vocab))
            report["int8"] = {"ndcg@10_fp32": fp["ndcg@10"], "ndcg@10_int8": i8["ndcg@10"],
                              "ndcg@10_change": i8["ndcg@10"] - fp["ndcg@10"],
                              "seq_per_s_fp32_b32_c100": s_fp, "seq_per_s_int8_b32_c100": s_i8,
                              "speedup": s_i8 / s_fp}
            log(f"int8: NDCG@10 {fp['ndcg@10']:.4f} -> {i8['ndcg@10']:.4f}; "
                f"{s_fp:,.0f} -> {s_i8:,.0f} sequences/s (batch 32, 100 candidates)")
            manifest["int8"] = report["int8"]
            return {"model.int8.onnx": q}
        extras.append(quantized)

    def extra(tmp, onnx_path):
        return {name: path for add in extras for name, path in add(tmp, onnx_path).items()}
    version, report["parity"] = export_register(model, vocab, manifest, registry_root, extra=extra, linear=linear)
    reg = Registry(registry_root)
    report["version"] = version
    report["kept_out"] = kept_out(report) if promote else None
    if promote and report["kept_out"] is None:
        reg.promote(version, reason="trained: beat most-popular on the training window's own validation")
    elif promote:
        reg.annotate(version, decision="kept out", reason=report["kept_out"])
        reg.log({"action": "reject", "version": version, "in_service": reg.promoted(), "reason": report["kept_out"]})
    return report


def holdout_files(tmp, onnx_path, holdout, vocab, linear, until: int, seen_items, manifest: dict, log=print) -> dict:
    """The holdout model (`models.train.Fit.holdout`: the model before fine-tuning, with an item linear model
    fitted on the same events) as `holdout/`, a model directory of its own: a backtest serves it over the
    end of the training window, where its scores are out of sample and the learned ranker can learn the
    model's columns from the first evaluated event on (stacking), then swaps in the model itself. Left out,
    with a line saying so, if its ONNX parity fails."""
    d = Path(tmp) / "holdout"
    d.mkdir()
    path = export_seqrec(holdout, d / "model.onnx")
    parity = check_seqrec_parity(holdout, path).to_dict()
    if not parity.get("passed"):
        log(f"holdout model left out: ONNX parity failed ({parity.get('max_abs_diff')})")
        return {}
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:8]
    # the items it never trained on are unknown to it, as items new since training are to the model served
    # after the training window (rather than known, with embeddings that only ever were negatives)
    seen = set(seen_items)
    (d / "vocab.json").write_bytes(orjson.dumps([it if i == 0 or it in seen else None
                                                 for i, it in enumerate(vocab.items)]))
    linear.save(d / "linear.npz")
    (d / "manifest.json").write_bytes(orjson.dumps({
        "version": f"holdout-{digest}", "trained_until_ts": until, "parity": parity, "linear": linear.report,
        "model_config": {**holdout.cfg.to_dict(), "members": len(members_of(holdout))}}))
    manifest["holdout"] = {"trained_until_ts": until, "parity": parity}   # read by export_register afterwards
    return {f"holdout/{name}": d / name for name in ("model.onnx", "vocab.json", "linear.npz", "manifest.json")}


def kept_out(report: dict) -> str | None:
    """Why `--promote` leaves a freshly trained model out of service, or None. The check is the training
    window's own validation slice (its last `val_frac` by time, what early stopping watched; never the
    held-out later events, which a backtest may evaluate): the model must beat most-popular there. On a
    log whose items the model barely knows (the Taobao slice: 0.83x) a promoted model pulled the learned
    ranker's validation ratio from 1.120x to 1.083x; the ranker then does better without it.

    >>> kept_out({"val_ndcg@10": 0.10, "val_most_popular_ndcg@10": 0.03, "config": {"val_frac": 0.1}}) is None
    True
    >>> kept_out({"val_ndcg@10": 0.0003, "val_most_popular_ndcg@10": 0.0004, "config": {"val_frac": 0.1}})[:44]
    "SeqRec's NDCG@10 on the training window's la"
    """
    val, pop = report.get("val_ndcg@10"), report.get("val_most_popular_ndcg@10")
    if val is None or pop is None:
        return None                                  # no validation slice: nothing to judge by
    if val > pop:
        return None
    return (f"SeqRec's NDCG@10 on the training window's last {report['config']['val_frac']:.0%} is {val:.4f}, "
            f"not above most-popular's {pop:.4f}: it would add noise to the candidates and the ranker")
