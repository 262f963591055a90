"""`recstream ab report` and the simulator's record of a run: per-variant outcomes as a table, a plot
of the rates with their 95 % intervals, and click-through over time.

The numbers come from `stream/core/abstats.py` over the per-user counts the worker (or the in-process
simulator) keeps in Redis; nothing here joins events itself.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from stream.core.abstats import RATES, significant

LABELS = {"click_through": "click-through", "add_to_cart": "add-to-cart", "purchase": "purchase"}


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f} %"


def format_table(rows: list[dict], control: str) -> str:
    """Markdown: one row per variant, rates per shown list and revenue per user with 95 % intervals,
    and the difference from the control."""
    out = ["| variant | users | lists | click-through (95 % CI) | Δ vs " + control + " (95 % CI), p | add-to-cart | "
           "purchase | revenue / user |", "|---|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        ct = r["click_through"]
        vs = ct.get("vs_control")
        diff = (f"{'+' if vs['diff'] >= 0 else ''}{_pct(vs['diff'])} ({_pct(vs['ci95'][0])} … {_pct(vs['ci95'][1])}), "
                f"p = {vs['p']:.3f}{' **significant**' if significant(r) else ''}") if vs else "(control)"
        out.append(f"| {r['variant']} | {r['users']} | {r['lists']} | {_pct(ct['value'])} ({_pct(ct['ci95'][0])} … "
                   f"{_pct(ct['ci95'][1])}) | {diff} | {_pct(r['add_to_cart']['value'])} | "
                   f"{_pct(r['purchase']['value'])} | {r['revenue_per_user']['value']:.2f} |")
    return "\n".join(out)


def windowed(series: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Cumulative snapshots [{"round", "totals": {variant: [lists, clicked]}}] -> per variant, the
    click-through of the lists shown between consecutive snapshots."""
    out: dict[str, list[tuple[int, float]]] = {}
    prev: dict[str, list[float]] = {}
    for snap in series:
        for v, (lists, clicked) in snap["totals"].items():
            pl, pc = prev.get(v, [0, 0])
            if lists > pl:
                out.setdefault(v, []).append((snap["round"], (clicked - pc) / (lists - pl)))
            prev[v] = [lists, clicked]
    return out


def plot(rows: list[dict], path: Path, series: list[dict] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = 2 if series else 1
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 3.6), squeeze=False)
    ax = axes[0][0]
    names = [r["variant"] for r in rows]
    for j, (metric, _) in enumerate(RATES):
        for i, r in enumerate(rows):
            m = r[metric]
            lo, hi = m["ci95"]
            x = i + (j - 1) * 0.25
            ax.errorbar(x, m["value"], yerr=[[m["value"] - lo], [hi - m["value"]]], fmt="o", capsize=3,
                        color=f"C{j}", label=LABELS[metric] if i == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("rate per shown list")
    ax.set_title("outcomes per variant (95 % intervals)")
    ax.legend(fontsize=8, loc="center right")
    if series:
        ax2 = axes[0][1]
        for v, pts in sorted(windowed(series).items()):
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=v)
        ax2.set_xlabel("simulation round")
        ax2.set_ylabel("click-through of the lists shown")
        ax2.set_title("click-through over time")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, experiment: str, control: str, rows: list[dict], series: list[dict] | None = None,
                 extra: dict | None = None) -> str:
    """report.md, ab.json and ab.png under `out`; returns the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, control)
    (out / "ab.json").write_text(json.dumps({"experiment": experiment, "control": control, "variants": rows,
                                             "series": series or [], **(extra or {})}, indent=1))
    plot(rows, out / "ab.png", series)
    (out / "report.md").write_text(f"# Experiment {experiment}\n\n{table}\n\n![outcomes](ab.png)\n")
    return table
