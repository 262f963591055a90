"""Content embeddings: the exported encoder's parity, the index, cold start by search query, the
exploration slot, and (on the real stack) a brand-new item reaching a user through the content source."""
import time
import uuid

import numpy as np
import orjson
import pytest

from schemas import Event, validate_item

SHOES = ["Salomon trail running shoes", "Asics gel running shoes for men", "Brooks road running trainers"]
OTHER = ["stainless steel kitchen knife set", "non-stick frying pan 28 cm", "espresso coffee machine",
         "smartphone 128GB black", "wireless earbuds with charging case", "hardcover cookbook italian recipes",
         "garden hose 30 m", "cordless drill 18V", "yoga mat non-slip", "ceramic dinner plates set"]


def catalog(texts, cat_of=lambda t: "shoes" if "shoe" in t or "trainer" in t else "home"):
    return [validate_item({"item_id": f"i{n}", "title": t, "category": [cat_of(t)]}) for n, t in enumerate(texts)]


def test_encoder_parity_with_the_torch_model(encoder_dir):
    _, m = encoder_dir
    p = m["parity"]
    print(f"encoder parity: max abs diff {p['max_abs_diff']:.2e}, min cosine {p['min_cosine']:.8f}")
    assert p["max_abs_diff"] < 1e-4 and p["min_cosine"] > 0.9999 and p["sentences"] >= 10


def test_encoder_embeddings_make_sense_without_torch(encoder_dir):
    from stream.core.content import ContentEncoder
    enc = ContentEncoder(encoder_dir[0])
    v = enc.encode(["Nike running shoes men", "Adidas Ultraboost trainers", "stainless steel kitchen knife set"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_index_exact_search_and_upsert():
    from stream.core.content import ContentIndex
    idx = ContentIndex(2, capacity=1)
    idx.add(["a", "b", "c"], np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32))
    assert [i for i, _ in idx.search(np.array([[1, 0]], np.float32), 2)[0]] == ["a", "c"]
    idx.add(["a"], np.array([[0, -1]], dtype=np.float32))           # upsert moves it
    assert [i for i, _ in idx.search(np.array([[0, -1]], np.float32), 1)[0]] == ["a"]
    assert len(idx) == 3


def test_cold_start_search_query_and_first_click(redis_client, encoder_dir):
    from stream.core.content import ContentEncoder, ContentStore
    from stream.core.pipeline import Pipeline
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    p = Pipeline(redis_client, prefix)
    p.attach_content(ContentStore(redis_client, prefix, ContentEncoder(encoder_dir[0])))
    items = catalog(SHOES + OTHER)
    p.catalog.upsert(items)
    p.content.upsert(items)
    shoes = {f"i{n}" for n in range(len(SHOES))}
    t0 = 1_700_000_000_000
    # someone else makes the kitchen items trend
    p.process_events([Event(event_id=f"o{n}", user_id="other", type="click", ts=t0 + n, item_id=f"i{3 + n % 3}")
                      for n in range(6)])
    # a brand-new user whose only event is a search
    r = p.process_events([Event(event_id="s1", user_id="new", type="search", ts=t0 + 100, item_id=None, query="running shoes")])
    rec = r.recommendations[0]
    top3 = [it.item_id for it in rec.items[:3]]
    assert set(top3) == shoes, [(it.item_id, it.sources) for it in rec.items]
    assert all("content" in it.sources for it in rec.items[:3])
    # a user with nothing at all gets trending
    asked = p.ask(["nobody"], t0 + 200, k=3)["nobody"]
    assert set(asked) <= {"i3", "i4", "i5"} and asked
    # a first click moves the user off cold start at once: content neighbours of that item
    r = p.process_events([Event(event_id="c1", user_id="fresh", type="click", ts=t0 + 300, item_id="i6")])
    got = [it.item_id for it in r.recommendations[0].items if "content" in it.sources]
    assert got and "i6" not in got


def test_exploration_slot_is_bounded_and_follows_clicks():
    from stream.core.candidates import SOURCE_NAMES
    from stream.core.ranking.explore import FreshExplorer
    c = SOURCE_NAMES.index("content")
    items = ["old1", "old2", "new_a", "new_b"]
    F = np.zeros((4, len(SOURCE_NAMES)))
    F[2, c] = F[3, c] = 0.9
    pop = {"old1": 50, "old2": 40}
    ex = FreshExplorer(seed=1, gate=False)         # the item-level choice (the gate: the next test)
    picked = [(0, 2.0), (1, 1.0)]
    assert ex.choose(items, F, pop, picked, set()).index in (2, 3)
    assert ex.choose(items, F, pop, [(2, 1.0)], set()) is None        # already holds a fresh item
    # new_a shown 30 times, clicked every time; new_b shown 30 times, never clicked
    from types import SimpleNamespace as NS
    for n in range(30):
        ex.shown(f"u{n}", "new_a")
        ex.shown(f"u{n}", "new_b")
        ex.feedback({f"u{n}": NS(fresh=[NS(item_id="new_a")])})
    picks = [ex.choose(items, F, pop, picked, set()).index for _ in range(50)]
    assert picks.count(2) > 45


@pytest.mark.parametrize("slot_taken,displaced_taken,rate", [(0.02, 0.3, "low"), (0.3, 0.02, "high")])
def test_how_often_lists_explore_is_learned_from_what_the_slot_displaces(slot_taken, displaced_taken, rate):
    """The gate compares the slot's take rate with that of the items it pushed out: when fresh items are
    taken far less often than the list's last place, few lists explore (the floor, 5 %, still do); when
    more often, almost all do."""
    from types import SimpleNamespace as NS

    from stream.core.candidates import SOURCE_NAMES
    from stream.core.ranking.explore import FreshExplorer
    c = SOURCE_NAMES.index("content")
    items = [f"old{n}" for n in range(10)] + ["new_a"]
    F = np.zeros((11, len(SOURCE_NAMES)))
    F[10, c] = 0.9
    pop = {f"old{n}": 50 for n in range(10)}
    picked = [(n, 1.0 - n / 10) for n in range(10)]
    ex = FreshExplorer(seed=3)
    rng = np.random.default_rng(0)
    explored = []
    for n in range(3000):
        slot = ex.choose(items, F, pop, picked, set(), k=10)
        explored.append(slot is not None)
        if slot is None:
            continue
        assert slot.displaced == "old9"
        ex.shown(f"u{n}", "new_a", slot.displaced)
        touched = [NS(item_id="new_a")] if rng.random() < slot_taken else []
        if rng.random() < displaced_taken:
            touched.append(NS(item_id="old9"))         # the item the slot pushed out of the list
        ex.feedback({f"u{n}": NS(fresh=touched)})
    late = np.mean(explored[-1000:])
    if rate == "low":
        assert 0.03 < late < 0.1
    else:
        assert late > 0.9


@pytest.mark.integration
def test_new_item_reaches_a_user_through_the_content_source(settings, redis_client, encoder_dir, tmp_path):
    from dataclasses import replace

    from conftest import start_worker, stop_process, wait_for
    from test_worker import Collector

    from schemas import validate_recommendation
    from stream.ops.produce import produce_events, produce_items
    s = replace(settings, encoder_dir=str(encoder_dir[0]))
    items = [it.to_dict() for it in catalog(SHOES + OTHER)]
    produce_items(items, s.items_topic, s.brokers)
    recs = Collector(s.recs_topic, s.brokers)
    worker = start_worker(s, log=tmp_path / "worker.log")
    t0 = int(time.time() * 1000)
    try:
        events = [{"event_id": f"o{n}", "user_id": f"other{n}", "type": "click", "ts": t0 + n,
                   "item_id": f"i{3 + n % 10}"} for n in range(20)]
        events += [{"event_id": f"u{n}", "user_id": "runner", "type": "view", "ts": t0 + 100 + n, "item_id": f"i{n}"}
                   for n in range(len(SHOES))]
        produce_events(enumerate(events, 1), s.events_topic, s.brokers)
        wait_for(lambda: any(orjson.loads(r.value)["user_id"] == "runner" for r in recs.items), timeout=90,
                 what="a first recommendation for the runner")
        new = {"item_id": "brand-new", "title": "Hoka trail running shoes", "category": ["shoes"]}
        upserted = time.monotonic()
        produce_items([new], s.items_topic, s.brokers)
        n = [0]

        def new_item_shown():
            n[0] += 1      # the runner keeps browsing (a view of one of their shoes, re-triggering a list)
            produce_events([(1, {"event_id": f"again{n[0]}", "user_id": "runner", "type": "view",
                                 "ts": int(time.time() * 1000), "item_id": f"i{n[0] % 3}"})], s.events_topic, s.brokers)
            time.sleep(1.0)
            for r in recs.items:
                rec = validate_recommendation(r.value)
                if rec.user_id == "runner":
                    for it in rec.items:
                        if it.item_id == "brand-new" and "content" in it.sources:
                            return True
            return False

        wait_for(new_item_shown, timeout=30, interval=0.5, what="the new item in the runner's recommendations")
        took = time.monotonic() - upserted
        print(f"new item recommended {took:.1f} s after its upsert")
        assert worker.poll() is None
    finally:
        code = stop_process(worker)
        recs.stop()
    assert code == 0
    assert "content index: 0 item embeddings loaded" in (tmp_path / "worker.log").read_text()
    assert int(redis_client.hlen(f"{s.key_prefix}emb")) == len(items) + 1


def test_index_search_is_each_query_s_best_n_best_first():
    """The batched search equals a per-query brute force: each query's n highest cosines, best first, as the
    product computes them, each with an item that has it (equal cosines: any of the tied items, each once)."""
    from stream.core.content import ContentIndex
    rng = np.random.default_rng(3)
    m = rng.normal(size=(300, 8)).astype(np.float32)
    m[50:60] = m[7]                                   # ten copies of one item: ties at every rank they reach
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    idx = ContentIndex(8)
    idx.add([f"i{k}" for k in range(300)], m)
    q = np.vstack([m[7], rng.normal(size=(20, 8))]).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ m.T
    for n in (1, 12, 300):
        for row, hits in zip(sims, idx.search(q, n)):
            assert [s for _, s in hits] == [float(x) for x in np.sort(row)[::-1][:n]]
            assert all(float(row[int(i[1:])]) == s for i, s in hits) and len({i for i, _ in hits}) == n


def test_user_vectors_are_each_users_weighted_average_bit_for_bit():
    """The batch computation of the content source's query vectors gives, for every user, what the
    per-user `np.average` (weights 0.7 ** rank over the embedded recent items) over its norm gives, bit
    for bit: items the index lacks (first, in the middle, all of them) and search-query users included."""
    from types import SimpleNamespace as NS

    from stream.core.content import ContentIndex, ContentSimilar
    rng = np.random.default_rng(11)
    idx = ContentIndex(16, 64)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    idx.add([f"i{j}" for j in range(300)], vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    snaps = {f"u{u}": NS(recent=[f"i{rng.integers(0, 360)}" for _ in range(rng.integers(0, 9))], query="")
             for u in range(200)}
    snaps["gaps"] = NS(recent=["nope", "i3", "gone", "i4", "i5", "i6"], query="")
    snaps["asks"] = NS(recent=["nope"], query="red shoes")
    store = NS(index=idx, encoder=NS(dim=16),
               embed_queries=lambda texts: np.ones((len(texts), 16), np.float32) / 4.0)
    users, rows = ContentSimilar(store).user_vectors(snaps)
    want_users, want = [], []
    for uid, snap in snaps.items():
        vs = [(idx.vector(i), 0.7 ** r) for r, i in enumerate(snap.recent[:5]) if idx.vector(i) is not None]
        if vs:
            q = np.average(np.stack([v for v, _ in vs]), axis=0, weights=[w for _, w in vs])
            want_users.append(uid)
            want.append(q / (np.linalg.norm(q) or 1.0))
    want_users.append("asks")
    want.append(np.ones(16) / 4.0)
    assert users == want_users and "gaps" in users
    assert rows.dtype == np.float64 and np.array_equal(rows, np.stack(want))
