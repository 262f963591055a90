"""The item linear model (EASE, models/linear.py) and its serving side (stream/core/scoring/linear.py): what
is served is what was fitted, λ and τ are chosen on the training window's own last part, and a registered
model version brings the "linear" candidate source."""
import random

import numpy as np
import orjson

from models.data import Interaction, Vocab
from models.linear import _matrix, ease, fit_linear, recency_weights
from stream.core.scoring.linear import ItemLinear, LinearRetrieval


def _log(n_users=300, n_items=40, length=8, seed=1, chains=True):
    """Users walk chains i -> i+1 (the next item depends on the newest one only) or draw items at random."""
    rng = random.Random(seed)
    out, t = [], 0
    for u in range(n_users):
        start = rng.randrange(n_items)
        for p in range(length):
            item = (start + p) % n_items if chains else rng.randrange(n_items)
            out.append(Interaction(f"u{u}", f"i{item}", t))
            t += 1
    out.sort(key=lambda x: x.ts)
    return out, Vocab([f"i{k}" for k in range(40)])


def test_served_scores_are_the_fitted_model(tmp_path):
    """With every neighbour kept, the served score of each item is the recency-weighted history times the
    EASE matrix's positive part (negative weights are not served), to float32 precision."""
    events, vocab = _log(chains=False)
    lin = fit_linear(events, vocab, k=39, lambdas=(50.0,), taus=(3.0,), val_frac=0.0)
    served = ItemLinear(lin.save(tmp_path / "linear.npz"), vocab.index)
    items = [vocab.items[int(r)] for r in lin.rows]
    col = {it: j for j, it in enumerate(items)}
    B = np.maximum(ease(_matrix(events, col), 50.0), 0.0)
    history = ["i3", "i17", "i3", "i25"]
    cols, ws = recency_weights([col[i] for i in history], 3.0)
    dense = np.zeros(len(items))
    for j, w in zip(cols, ws):
        dense += w * B[j]
    ids, s = served.scores(history)
    got = {served.items[i]: v for i, v in zip(ids, s)}
    want = {items[j]: v for j, v in enumerate(dense) if v > 0}
    assert set(got) == set(want)
    assert max(abs(got[i] - want[i]) for i in want) < 1e-5 * max(want.values())


def test_validation_picks_the_shortest_memory_for_chains():
    """On chains the next item follows the newest one: the validation on the window's last 10 % picks the
    smallest τ of the grid, and the model's best item after i7 is i8."""
    events, vocab = _log()
    lin = fit_linear(events, vocab, lambdas=(10.0, 100.0), taus=(1.0, 30.0))
    assert lin.tau == 1.0
    grid = lin.report["validation_ndcg@10"]
    assert grid[f"lambda={lin.lam:g},tau=1"] == max(grid.values())
    best = {vocab.items[int(r)]: vocab.items[int(n)] for r, n in zip(lin.rows, lin.nbr[:, 0])}
    assert best["i7"] in ("i8", "i6")          # chains are symmetric in a 0/1 user matrix: a neighbour


def test_source_proposes_top_items_without_the_excluded(tmp_path):
    events, vocab = _log()
    lin = fit_linear(events, vocab, lambdas=(10.0,), taus=(1.0,), val_frac=0.0)
    model = ItemLinear(lin.save(tmp_path / "linear.npz"), vocab.index)
    top, every = model.top(["i7", "i6"], 5)
    assert len(top) == 5 and top[0][1] == 1.0 and all(0 < s <= 1.0 for _, s in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    first = top[0][0]
    again, every_again = model.top(["i7", "i6"], 5, exclude={first})
    assert first not in [i for i, _ in again] and again[0][0] == top[1][0]
    # every item's score over the best, the excluded one included (the ranker's feature for any candidate)
    assert every.of([first, top[1][0], "unknown"]).tolist() == [1.0, top[1][1], 0.0]
    assert every_again.of([first]).tolist() == [1.0]
    assert model.top(["unknown"], 5)[0] == [] and model.top([], 5)[0] == []
    assert model.top([], 5)[1].of(["i7"]).tolist() == [0.0]
    assert LinearRetrieval(model).name == "linear"


def test_a_registered_version_brings_the_linear_source(tmp_path, tiny):
    """`export_register(..., linear=)` stores linear.npz and its report; loading the version gives the
    transformer's sources "model" and "linear"."""
    from exporters.pipeline import export_register
    from stream.core.scoring.transformer import OnnxScorer, model_sources
    from stream.core.storage.registry import Registry
    model, _ = tiny
    vocab = Vocab([f"i{k}" for k in range(1, model.cfg.n_items)])
    events = [Interaction(x.user, "i" + str(1 + int(x.item[1:])), x.ts) for x in _log()[0]]
    lin = fit_linear(events, vocab, lambdas=(10.0,), taus=(1.0,), val_frac=0.0)
    version, _ = export_register(model, vocab, {"data_hash": "t"}, tmp_path, linear=lin)
    d = Registry(tmp_path).path(version)
    assert orjson.loads((d / "manifest.json").read_bytes())["linear"]["lambda"] == 10.0
    scorer = OnnxScorer(d)
    assert len(scorer.linear) == 40
    assert [s.name for s in model_sources(scorer)] == ["model", "linear"]
