"""An experiment's numbers: rates per shown list and revenue per user, with 95 % intervals, and each
variant's difference from the control with a two-sided test.

The unit of assignment is the user, and one user's lists are not independent (a user who clicks, clicks
again), so a rate per list (sum of outcomes / sum of lists) gets its variance by the delta method over
users (Deng et al., "Applying the Delta Method in Metric Analytics", 2018), not as if every list were a
coin of its own: the naive interval would be too narrow, and an A/A split would "differ" too often.
"""
from __future__ import annotations

import math

import numpy as np

from stream.core.experiments import OUTCOMES

Z95 = 1.959963984540054
RATES = (("click_through", "clicked"), ("add_to_cart", "carted"), ("purchase", "bought"))


def ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """sum(num) / sum(den) over users and the variance of that estimate (delta method).

    >>> r, v = ratio(np.array([1.0, 0, 2, 1]), np.array([2.0, 2, 2, 2]))
    >>> round(r, 3), round(v, 5)
    (0.5, 0.04167)
    """
    n = len(den)
    if n == 0 or den.sum() == 0:
        return float("nan"), float("nan")
    r = num.sum() / den.sum()
    if n < 2:
        return float(r), float("nan")
    resid = num - r * den
    return float(r), float(resid.var(ddof=1) / (n * den.mean() ** 2))


def mean(x: np.ndarray) -> tuple[float, float]:
    """The mean over users and its variance."""
    if len(x) < 2:
        return (float(x.mean()) if len(x) else float("nan")), float("nan")
    return float(x.mean()), float(x.var(ddof=1) / len(x))


def p_two_sided(z: float) -> float:
    return float("nan") if math.isnan(z) else math.erfc(abs(z) / math.sqrt(2))


def summarise(outcomes: dict[str, dict[str, list[float]]], control: str | None = None) -> list[dict]:
    """variant -> user -> [lists, clicked, carted, bought, revenue] (`read_outcomes`) -> one row per
    variant: users, lists, each rate and revenue per user with its 95 % interval, and (for variants other
    than the control) the difference from the control, its interval and p-value."""
    col = {n: i for i, n in enumerate(OUTCOMES)}
    arrs = {v: np.array(list(users.values()), dtype=np.float64).reshape(-1, len(OUTCOMES))
            for v, users in outcomes.items()}
    names = sorted(arrs, key=lambda v: (v != control, v))
    control = control if control in arrs else (names[0] if names else None)
    est: dict[str, dict[str, tuple[float, float]]] = {}
    rows = []
    for v in names:
        a = arrs[v]
        a = a[a[:, col["lists"]] > 0]          # users who were shown something
        e = {name: ratio(a[:, col[c]], a[:, col["lists"]]) for name, c in RATES}
        e["revenue_per_user"] = mean(a[:, col["revenue"]])
        est[v] = e
        row = {"variant": v, "users": len(a), "lists": int(a[:, col["lists"]].sum())}
        for name, (m, var) in e.items():
            half = float("nan") if math.isnan(var) else Z95 * math.sqrt(var)
            row[name] = {"value": m, "ci95": [m - half, m + half]}
        rows.append(row)
    for row in rows:
        v = row["variant"]
        if v == control:
            continue
        for name in (*(n for n, _ in RATES), "revenue_per_user"):
            (m1, v1), (m0, v0) = est[v][name], est[control][name]
            d, se = m1 - m0, math.sqrt(v1 + v0) if not math.isnan(v1 + v0) else float("nan")
            z = d / se if se and not math.isnan(se) else float("nan")
            row[name]["vs_control"] = {"diff": d, "ci95": [d - Z95 * se, d + Z95 * se], "p": p_two_sided(z),
                                       "relative": d / m0 if m0 else float("nan")}
    return rows


def significant(row: dict, metric: str = "click_through") -> bool:
    """The difference from the control's interval excludes zero."""
    vs = row.get(metric, {}).get("vs_control")
    return bool(vs) and (vs["ci95"][0] > 0 or vs["ci95"][1] < 0)
