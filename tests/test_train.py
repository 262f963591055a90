"""Training: the time split holds (nothing after the split is trained on), and a seed makes it repeatable."""
from dataclasses import replace

from models.data import Interaction, split_time, training_windows
from models.train import TrainConfig, held_out, train
from stream.data.synth import SynthConfig, SynthShop


def synth_interactions(n=3000):
    evs = SynthShop(SynthConfig(n_users=150, n_items=120, n_events=n, seed=8)).events()
    return [Interaction(e["user_id"], e["item_id"], e["ts"]) for e in evs if e.get("item_id")]


def test_windows_cover_every_next_item_once():
    X, Y = training_windows([[1, 2, 3, 4, 5, 6, 7]], T=3)
    pairs = {(int(x[-1]), int(y[-1])) for x, y in zip(X, Y)}
    targets = sorted(int(t) for row in Y for t in row if t)
    assert targets == [2, 3, 4, 5, 6, 7]           # each next-item target exactly once
    assert (7 - 1 == len(targets)) and (6, 7) in pairs


def test_strided_windows_overlap_and_end_at_the_last_item():
    seq = list(range(1, 12))                         # 11 items: targets 2..11
    X, Y = training_windows([seq], T=4, stride=2)
    ends = [int(y[-1]) for y in Y]
    assert ends == [11, 9, 7, 5]                     # a window ends every 2 items from the end
    for x, y in zip(X, Y):                           # inputs are the targets shifted by one, left-padded
        xs, ys = [int(v) for v in x if v], [int(v) for v in y if v]
        assert ys[:-1] == xs[1:] and ys[-1] == xs[-1] + 1 and len(xs) <= 4
    covered = {int(t) for row in Y for t in row if t}
    assert covered == set(range(2, 12))              # every next item is still a target somewhere


def test_time_split_and_seeded_repeatability():
    events = synth_interactions()
    cfg = TrainConfig(epochs=2, patience=5, dim=16, layers=1, heads=1, max_len=10, negatives=32, seed=3)
    _, vocab, a, _ = train(events, cfg, progress=False, log=lambda *_: None)
    _, _, b, _ = train(events, cfg, progress=False, log=lambda *_: None)
    assert a["test"] == b["test"] and a["val_ndcg@10"] == b["val_ndcg@10"]
    # most-popular on the same validation split (the training window's own last 10 %), beside the model's
    assert 0.0 < a["val_most_popular_ndcg@10"] < 1.0 and a["val_most_popular_ndcg@10"] == b["val_most_popular_ndcg@10"]
    t = split_time(events, cfg.test_frac)
    assert a["train_events"] == sum(1 for x in events if x.ts < t)
    # items first seen after the split are unknown to the model (target 0): never trained on
    late_only = {x.item for x in events if x.ts >= t} - {x.item for x in events if x.ts < t}
    assert not late_only & set(vocab.index)
    hist, targets = held_out(events, t, vocab, cfg.max_len)
    assert len(targets) == a["test_events"] == sum(1 for x in events if x.ts >= t)


def test_trained_until_says_what_the_model_learned_from():
    """With fine-tuning the model has learned the whole training window; without it, only the part before
    the window's own validation split, and the report (the manifest's `trained_until_ts`) says so."""
    from models.train import validation_window
    events = synth_interactions()
    small = dict(epochs=1, patience=5, dim=16, layers=1, heads=1, max_len=10, negatives=32, seed=3)
    _, vocab, tuned, _ = train(events, TrainConfig(**small), progress=False, log=lambda *_: None)
    _, _, plain, _ = train(events, TrainConfig(**small, finetune_epochs=0), progress=False, log=lambda *_: None)
    assert tuned["trained_until_ts"] == tuned["split_ts"] - 1
    train_ev = [x for x in events if x.ts < plain["split_ts"]]
    val_ts = validation_window(train_ev, vocab, TrainConfig(**small))[0]
    assert plain["trained_until_ts"] == val_ts - 1 < tuned["trained_until_ts"]


def test_promote_keeps_out_a_model_that_does_not_beat_most_popular(tmp_path):
    """`recstream train --promote` promotes only a model that beats most-popular on the training window's
    own validation slice: a log with no order in it (each event an independent draw from a skewed
    popularity) is registered and kept out, with the reason in the registry; users walking through items in order are promoted."""
    import random

    import orjson

    from exporters.pipeline import train_export_register
    from stream.core.storage.registry import Registry
    rnd = random.Random(1)
    items = [f"i{k}" for k in range(300)]
    weights = [1.0 / (k + 1) for k in range(300)]
    noise = tmp_path / "noise.jsonl"
    noise.write_bytes(b"\n".join(orjson.dumps({
        "event_id": f"e{n}", "user_id": f"u{rnd.randrange(400)}", "type": "view",
        "item_id": rnd.choices(items, weights)[0], "ts": 1_700_000_000_000 + n * 1000}) for n in range(6000)))
    ordered, walks = tmp_path / "walks.jsonl", []          # users walking a ring of items, i -> i + 1, a minute a step
    for u in range(300):
        at, start = rnd.randrange(100), 1_700_000_000_000 + rnd.randrange(1_000_000)
        walks += [{"event_id": f"w{u}-{j}", "user_id": f"u{u}", "type": "view", "item_id": f"i{(at + j) % 100}",
                   "ts": start + j * 60_000} for j in range(20)]
    ordered.write_bytes(b"\n".join(orjson.dumps(e) for e in sorted(walks, key=lambda e: e["ts"])))
    quiet = dict(epochs=2, promote=True, log=lambda *_: None)
    reg_noise, reg_ordered = tmp_path / "noise-models", tmp_path / "ordered-models"
    bad = train_export_register(noise, "jsonl", registry_root=reg_noise, **quiet)
    assert bad["kept_out"] and "not above most-popular" in bad["kept_out"]
    reg = Registry(reg_noise)
    assert reg.promoted() is None
    assert reg.history()[-1]["action"] == "reject" and reg.history()[-1]["version"] == bad["version"]
    assert bad["val_ndcg@10"] <= bad["val_most_popular_ndcg@10"]
    good = train_export_register(ordered, "jsonl", registry_root=reg_ordered, **quiet)
    assert good["kept_out"] is None and Registry(reg_ordered).promoted() == good["version"]
    assert good["val_ndcg@10"] > good["val_most_popular_ndcg@10"]


def test_the_softmax_mask_is_decided_by_the_training_window_and_recorded():
    """The synthetic shop repeats items (the mask stays off); the same log with each user's repeats dropped,
    as on a rating log, trains with the seen items out of the softmax; the report's config says which."""
    events = synth_interactions()
    seen, once = set(), []
    for x in events:
        if (x.user, x.item) not in seen:
            seen.add((x.user, x.item))
            once.append(x)
    small = TrainConfig(epochs=1, patience=5, dim=16, layers=1, heads=1, max_len=10, seed=3, finetune_epochs=0)
    quiet = dict(progress=False, log=lambda *_: None)
    assert train(events, small, **quiet).report["config"]["mask_seen"] is False
    assert train(once, small, **quiet).report["config"]["mask_seen"] is True
    assert train(once, replace(small, mask_seen=False), **quiet).report["config"]["mask_seen"] is False
