"""The holdout model: `recstream train` registers, beside the model, the same model before fine-tuning
(`holdout/`), which never trained on the end of the training window; a backtest serves it there, so the
learned ranker meets out-of-sample model scores before the evaluated period, then swaps in the model."""
import random

import orjson
import pytest

from stream.core.storage.registry import Registry

T0 = 1_700_000_000_000


def walks_with_late_items(path):
    """Users walking a ring of 100 items (a minute a step), and ten items first viewed only between 74 % and
    79 % of the log (by count): inside the training window's last 10 %, which the holdout never trains on."""
    rnd = random.Random(1)
    walks = []
    for u in range(300):
        at, start = rnd.randrange(100), T0 + rnd.randrange(1_000_000)
        walks += [{"event_id": f"w{u}-{j}", "user_id": f"u{u}", "type": "view", "item_id": f"i{(at + j) % 100}",
                   "ts": start + j * 60_000} for j in range(20)]
    walks.sort(key=lambda e: e["ts"])
    n = len(walks)
    late = [{"event_id": f"late{k}", "user_id": f"u{k % 300}", "type": "view", "item_id": f"new{k % 10}",
             "ts": walks[int(n * (0.74 + 0.05 * k / 40))]["ts"]} for k in range(40)]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in sorted(walks + late, key=lambda e: e["ts"])))
    return {f"new{k}" for k in range(10)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from exporters.pipeline import train_export_register
    d = tmp_path_factory.mktemp("holdout")
    late = walks_with_late_items(d / "walks.jsonl")
    report = train_export_register(d / "walks.jsonl", "jsonl", registry_root=d / "models", epochs=2, promote=True,
                                   log=lambda *_: None)
    return d / "models", report, late


def test_the_holdout_never_trained_on_the_windows_end(trained):
    from stream.core.scoring.transformer import ModelRetrieval, OnnxScorer
    root, report, late = trained
    reg = Registry(root)
    d = reg.path(report["version"])
    manifest = orjson.loads((d / "manifest.json").read_bytes())
    held = orjson.loads((d / "holdout" / "manifest.json").read_bytes())
    assert report["holdout_until_ts"] == held["trained_until_ts"] == manifest["holdout"]["trained_until_ts"]
    assert held["trained_until_ts"] < manifest["trained_until_ts"] and held["parity"]["passed"]
    names = ("model.onnx", "vocab.json", "linear.npz", "manifest.json")
    assert {f"holdout/{n}" for n in names} <= set(manifest["files"])
    # the items first seen after the holdout's training events are unknown to it (null in its vocabulary),
    # known to the model itself, and never proposed by the holdout's own top items
    model, holdout = OnnxScorer(d), OnnxScorer(d / "holdout")
    assert late <= set(model.index) and not late & set(holdout.index)
    vocab = orjson.loads((d / "holdout" / "vocab.json").read_bytes())
    assert len(vocab) == len(orjson.loads((d / "vocab.json").read_bytes())) and vocab.count(None) == len(late)
    assert not late & set(ModelRetrieval(holdout).pool_items)
    assert holdout.trained_until == held["trained_until_ts"] and holdout.version.startswith("holdout-")


@pytest.mark.integration
def test_a_backtest_serves_the_holdout_until_the_models_training_events_are_past(trained, stack):
    from stream.evaluation.system import RecstreamSystem
    root, report, _ = trained
    until = report["trained_until_ts"]
    rs = RecstreamSystem(stack[1], [], str(root), 10, 42, rankers=("gbdt",), holdout=True)
    plain = RecstreamSystem(stack[1], [], str(root), 10, 42, rankers=("gbdt",))
    try:
        assert "+holdout-" in rs.version and plain.version.endswith("+" + report["version"])
        assert rs.variants["recstream+gbdt"].transformer.trained_until == report["holdout_until_ts"]
        rs.advance(until)                        # still the model's own training events: the holdout serves
        assert "+holdout-" in rs.version
        rs.advance(until + 1)
        assert rs.version == plain.version
        assert rs.variants["recstream+gbdt"].transformer.trained_until == until
    finally:
        rs.close()
        plain.close()
