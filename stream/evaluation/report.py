"""A backtest's report: the tables printed and written (report.md), metrics.json and the PNG plots."""
from __future__ import annotations

from pathlib import Path

import orjson


def format_ratios(report: dict) -> str:
    lines = []
    best = report.get("best_baseline")
    for k, r in (report.get("ndcg@10_ratio_to_best_baseline") or {}).items():
        extra = ""
        if k in report.get("ndcg@10_ratio_ranker_vs_without", {}):
            extra = f"; vs recstream without the ranker: {report['ndcg@10_ratio_ranker_vs_without'][k]:.3f}x"
        explore = (report.get("exploration_ndcg@10_ratio") or {}).get(k)
        if explore is not None:
            extra += f"; exploration slot costs {100 * (1 - explore):.1f} % of it"
        lines.append(f"{k} NDCG@10 / best baseline ({best}): {r:.3f}x{extra}")
    cr = report.get("candidate_recall")
    if cr:
        lines.append(f"candidate recall (the evaluated item among recstream's candidates, which caps every ranker): "
                     f"{cr['all']:.3f} of all, {cr['@100']:.3f} in the top 100, {cr['@10']:.3f} in the top 10 "
                     f"by the base order; {cr['mean_candidates']:.0f} candidates per user on average; by source: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in cr.get("by_source", {}).items()))
    return "\n".join(lines)


def format_retrain(report: dict) -> str:
    """What retraining at event time (--retrain-every) did, against the frozen model of the same run."""
    rt = report.get("retrain")
    if not rt:
        return ""
    lines = [f"retrained {len(rt['retrains'])} times (every {rt['every_s']:,.0f} s of event time; {rt['seconds']} s "
             f"of training in all): " + "; ".join(
                 f"at ts {r['at_ts']} on {r['events']:,} events ({r['new_items']} new items, "
                 f"{'warm' if r['warm_start'] else 'cold'}, {r['seconds']} s)" for r in rt["retrains"])]
    for name, ratio in rt["ndcg@10_ratio_retrained_vs_frozen"].items():
        lines.append(f"{name} NDCG@10 / frozen: " + (f"{ratio:.3f}x" if ratio is not None else "-"))
    return "\n".join(lines)


def format_table(report: dict) -> str:
    cols = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "coverage@10", "novelty@10"]
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in report["systems"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def format_segments(report: dict) -> str:
    segs = sorted({s for m in report["systems"].values() for s in m["by_segment"]} |
                  {f"type:{t}" for m in report["systems"].values() for t in m["by_type"]})
    lines = ["| system | " + " | ".join(f"{s} ndcg@10 (n)" for s in segs) + " |", "|---|" + "---:|" * len(segs)]
    for name, m in report["systems"].items():
        cells = []
        for s in segs:
            src = m["by_type"].get(s[5:]) if s.startswith("type:") else m["by_segment"].get(s)
            cells.append(f"{src['ndcg@10']:.4f} ({src['n']})" if src else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: str | Path, title: str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch_ms = report.pop("_batch_ms", [])
    (out / "metrics.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    ratio = report.get("recstream_ndcg@10_ratio_to_best_baseline")
    md = [f"# Backtest: {title}", "",
          f"{report['events']} events in time order; the first {report['warmup_events']} only train, "
          f"{report['evaluated']} are evaluated prequentially (asked first, then revealed) in time-ordered, "
          f"user-disjoint batches of at most {report['config']['batch_size']}. "
          f"Seen items excluded: {report['config']['exclude_seen']}. "
          f"Catalog items seen: {report['catalog_items_seen']}. Took {report['seconds']} s.", "",
          format_table(report), ""]
    if ratio is not None:
        md.append(f"recstream scorer: {report.get('recstream_version')} (the base order). `recstream+gbdt` adds "
                  f"the default learned ranker (LightGBM on a sliding window, learning from every event against "
                  f"the whole candidate set); `recstream+lr` / `recstream+fm` the river cascade (learning from its "
                  f"own shown lists), `+MODEL:learned` the river models on the whole set. A `(no exploration)` row "
                  f"is the same lists without the exploration slot.")
        md.append("")
        md += [f"- {line}" for line in format_ratios(report).splitlines()]
        md.append("")
    if report.get("retrain"):
        md += [f"- {line}" for line in format_retrain(report).splitlines()] + [""]
    if report.get("content"):
        c = report["content"]
        md.append(f"Content: {c['items_embedded']:,} items embedded by {c['encoder']} on {c['provider']} in "
                  f"{c['embed_seconds']} s; exploration slots given: {c['exploration_slots']:,}.")
        md.append("")
    if report.get("rankers"):
        md.append("Online rankers: " + "; ".join(
            f"{k}: {v['examples_learned']:,} examples learned from {v['impressions']:,} impressions "
            f"({v['with_positive']:,} with a positive)" + _gate(v) for k, v in report["rankers"].items()))
        md.append("")
    if report.get("blend"):
        b = report["blend"]
        moves = ", ".join(f"to {w:g} after {n:,}" for n, w in b["blend_moves"]) or "none"
        md += [f"Base order: the transformer's weight {b['blend_weight']:g} at the end ({b['blend_judged']:,} "
               f"lists judged; moves: {moves}; last window's mean gain by weight: {b['blend_window_gain']})", ""]
    md += ["## By event type and segment (NDCG@10, events)", "", format_segments(report), ""]
    if "recstream_batch_ms" in report:
        b = report["recstream_batch_ms"]
        md.append(f"recstream pipeline (in-process): per batch p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms; "
                  f"{b['events_per_s']:,.0f} events/s through the pipeline core.")
    files = [out / "metrics.json", out / "report.md"]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, ys in report["over_time"].items():
            ax.plot(range(len(ys)), ys, label=name, lw=2.5 if name == "recstream" else 1.2)
        ax.set_xlabel("evaluated events, in time order (equal-count buckets)")
        ax.set_ylabel("NDCG@10")
        ax.set_title(f"NDCG@10 over time: {title}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "ndcg_over_time.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(report["systems"])
        ax.bar(names, [report["systems"][n]["coverage@10"] for n in names])
        ax.set_ylabel("catalog coverage of top-10")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        fig.savefig(out / "coverage.png", dpi=110)
        plt.close(fig)
        if batch_ms:
            fig, ax = plt.subplots(figsize=(8, 3.5))
            ax.hist(batch_ms, bins=50)
            ax.set_xlabel("profile-stage ms per batch (in-process; batches are user-disjoint)")
            ax.set_ylabel("batches")
            fig.tight_layout()
            fig.savefig(out / "latency_hist.png", dpi=110)
            plt.close(fig)
        files += [out / "ndcg_over_time.png", out / "coverage.png"] + ([out / "latency_hist.png"] if batch_ms else [])
        md += ["", "![NDCG@10 over time](ndcg_over_time.png)", "", "![coverage](coverage.png)", "",
               "![pipeline latency](latency_hist.png)"]
    except ImportError:
        md += ["", "(plots skipped: matplotlib is not installed; pip install 'recstream[train]')"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return files


def _gate(v: dict) -> str:
    """The gate's part of a ranker's line (stream/core/ranking/gate.py), empty for an ungated ranker."""
    if "gate_judged" not in v:
        return ""
    lists = v["lists_by_trees"] + v["lists_by_base"]
    return (f", its gate judged {v['gate_judged']:,} sets (last window's mean gain: learned "
            f"{v['gate_window_gain_trees']:.3f}, base {v['gate_window_gain_base']:.3f}) and let the learned "
            f"order serve {v['lists_by_trees'] / max(lists, 1):.0%} of {lists:,} lists")
