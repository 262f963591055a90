"""Reports of the search side: the trend backtest over logs (`recstream trends backtest`) and the searching
shoppers' experiment (`recstream search-simulate`): a markdown table, metrics.json and a plot."""
from __future__ import annotations

import json
import time
from pathlib import Path

from schemas import Rejected, validate_item
from stream.evaluation.trends import backtest_trends


def _log_arg(arg: str) -> tuple[str, str | None]:
    """LOG or LOG:FORMAT (a path that exists as written is only a path)."""
    if ":" not in arg or Path(arg).exists():
        return arg, None
    path, _, fmt = arg.rpartition(":")
    return path, fmt or None


def trends_report(logs: list[str], *, window_s: float, baseline_windows: int = 6, min_support: float = 3.0,
                  n: int = 10, out: str | None = None) -> dict:
    from stream.evaluation.backtest import load_events
    rows = []
    for arg in logs:
        path, fmt = _log_arg(arg)
        t0 = time.perf_counter()
        events, items = load_events(path, fmt)
        cats = {v.item_id: v.category_key for v in map(validate_item, items) if not isinstance(v, Rejected)}
        for kind in ("item", "category"):
            r = backtest_trends(events, window_s=window_s, baseline_windows=baseline_windows, min_support=min_support,
                                n=n, kind=kind, category_of=cats.get)
            rows.append({"log": Path(path).name, "kind": kind, "events": len(events), "seconds": time.perf_counter() - t0,
                         **{k: v for k, v in r.items() if k != "rows"}, "boundaries_rows": r["rows"]})
    head = (f"| log | kind | boundaries | rising p@{n} | last-window popular p@{n} | ratio | rising: mean growth | "
            "popular: mean growth |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {r['log']} | {r['kind']} | {r['boundaries']} | {r['rising_p']:.3f} | {r['popular_p']:.3f} | "
                   f"{r['rising_p'] / r['popular_p'] if r['popular_p'] else float('nan'):.2f}x | "
                   f"{r['rising_growth']:.2f} | {r['popular_growth']:.2f} |\n" for r in rows if r["boundaries"])
    table = (f"window {window_s:g} s, baseline {baseline_windows} windows, minimum support {min_support:g}\n\n"
             + head + body)
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.md").write_text("# Trend backtest\n\n" + table)
        (d / "metrics.json").write_text(json.dumps(rows, indent=1, default=float))
    return {"rows": rows, "table": table}


def simulate_report(redis_url: str, cfg, *, encoder_dir: str | None = None, out: str | None = None,
                    progress: bool = True, prefix: str = "rs:searchsim:") -> dict:
    import redis
    from tqdm import tqdm

    from stream.config.compose import assemble
    from stream.core.search.learn import SearchFeedback
    from stream.core.search.model import SearchModel
    from stream.core.search.rerank import SearchReranker
    from stream.ops.simulate_search import run_search_inprocess
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(prefix + "*", count=5000):
        client.delete(key)
    pipeline = assemble(client, prefix, encoder_dir=encoder_dir, explore=False)
    reranker = SearchReranker(pipeline, model=SearchModel(client, prefix, ttl_s=0.0))   # deterministic by seed
    learner = SearchFeedback(client, prefix, pipeline.profiles.keys, reranker.cfg, reranker.model)
    pipeline.observers.append(learner)
    series: list[dict] = []
    bar = tqdm(total=cfg.sim.rounds, desc="rounds", disable=not progress)

    def on_round(r, stats):
        bar.update(1)
        c = stats.compare()
        series.append({"round": r + 1, "rerank": c["rerank"]["ctr"], "engine": c["engine"]["ctr"],
                       "examples": reranker.model.examples(reranker.model.read(fresh=True))})
    t0 = time.perf_counter()
    _, stats = run_search_inprocess(pipeline, reranker, cfg, on_round=on_round)
    bar.close()
    res = {"all": stats.compare(), "cold": stats.compare(cold=True), "seconds": time.perf_counter() - t0,
           "weights": reranker.model.params(reranker.model.read(fresh=True)),
           "rate": reranker.model.chosen(reranker.model.read(fresh=True)),
           "pages_learned": learner.pages_closed, "config": repr(cfg), "series": series}
    rows = []
    for seg in ("all", "cold"):
        c = res[seg]
        for arm in ("rerank", "engine"):
            a = c[arm]
            rows.append(f"| {seg} | {arm} | {a['users']} | {a['pages']} | {a['ctr']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] |")
        lift = c["lift"]
        rows.append(f"| {seg} | **re-ranked / engine** | | | **{lift['ratio']:.3f}x** [{lift['ci'][0]:.3f}, {lift['ci'][1]:.3f}] |")
    table = ("| pages | arm | users | pages shown | click-through [95 % interval] |\n|---|---|---:|---:|---|\n"
             + "\n".join(rows) + "\n")
    res["table"] = table
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.md").write_text("# Searching shoppers: re-ranked result pages against the engine's order\n\n" + table)
        (d / "metrics.json").write_text(json.dumps({k: v for k, v in res.items() if k != "table"}, indent=1, default=float))
        _plot(series, d / "ctr.png")
    return res


def _plot(series: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [s["round"] for s in series]
    for arm in ("rerank", "engine"):
        ax.plot(x, [s[arm] for s in series], label=arm)
    ax.set_xlabel("round")
    ax.set_ylabel("click-through per page (cumulative)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
