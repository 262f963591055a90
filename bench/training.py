"""Training benchmark: seconds per epoch of SeqRec training (`models.train._fit`, the code `recstream train`
and `retrain` run) on a synthetic log, on the GPU when torch sees one and on the CPU, same data, same seed,
same number of epochs, in one run; the validation NDCG@10 of each shows both learned the same thing.

    python -m bench.training [--events 200000] [--epochs 3]   -> bench/results/training-DEVICE.json

The CPU row runs in a child process with CUDA hidden (`models.train.device()` picks CUDA whenever it can).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def measure(n_events: int, epochs: int) -> dict:
    """One training run on this process's device: {device, seconds per epoch, windows, val ndcg@10}."""
    import torch

    from models.data import Interaction, train_vocab, user_sequences
    from models.train import TrainConfig, _fit, device, validation_window
    from stream.data.synth import SynthConfig, SynthShop

    shop = SynthShop(SynthConfig(n_users=20_000, n_items=5_000, n_events=n_events))
    events = [Interaction(e["user_id"], e["item_id"], e["ts"]) for e in shop.events() if e.get("item_id")]
    events.sort(key=lambda x: x.ts)
    cfg = TrainConfig(epochs=epochs, patience=epochs, finetune_epochs=0)
    vocab = train_vocab(events)
    val_ts, vh, vt = validation_window(events, vocab, cfg)
    seqs = [vocab.encode([x.item for x in xs]) for xs in user_sequences([x for x in events if x.ts < val_ts]).values()]
    dev = device()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, best, _ = _fit(seqs, vocab, cfg, full=True, val=(vh, vt), progress=False)
    seconds = time.perf_counter() - t0
    return {"device": dev.type, "s_per_epoch": seconds / epochs, "events": len(events), "items": len(vocab) - 1,
            "val_ndcg@10": best, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.events, args.epochs)))
        return 0
    import torch

    from bench.rows import RESULTS, Rows
    rows = Rows({"host": platform.node(), "torch": torch.__version__, "events": args.events, "epochs": args.epochs})
    print(f"== SeqRec training (d=64, 2 layers, T=50, full softmax), {args.events:,} synthetic events")
    results = []
    if torch.cuda.is_available():
        results.append(measure(args.events, args.epochs))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "bench.training", "--child", "--events", str(args.events),
                          "--epochs", str(args.epochs)], env=env, capture_output=True, text=True, check=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        rows.add(f"train_s_per_epoch_{r['device']}", r["s_per_epoch"], "s", threads=r["threads"], gpu=r["gpu"],
                 items=r["items"], train_events=r["events"])
        rows.add(f"train_val_ndcg10_{r['device']}", r["val_ndcg@10"], "ndcg@10")
    if len(results) == 2:
        rows.add("train_cuda_speedup_vs_cpu", results[1]["s_per_epoch"] / results[0]["s_per_epoch"], "x")
    name = "training-gpu.json" if len(results) == 2 else "training-cpu.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(rows.rows, indent=2))
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
