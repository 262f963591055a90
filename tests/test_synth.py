from collections import Counter

from schemas import Rejected, validate_event, validate_item
from stream.data.synth import SynthConfig, SynthShop

CFG = SynthConfig(n_users=300, n_items=400, n_events=6000, seed=3)


def test_deterministic_and_valid():
    a = list(SynthShop(CFG).events())
    b = list(SynthShop(CFG).events())
    assert a == b and len(a) == CFG.n_events
    assert all(not isinstance(validate_event(e), Rejected) for e in a)
    assert all(not isinstance(validate_item(i), Rejected) for i in SynthShop(CFG).items)
    assert [e["ts"] for e in a] == sorted(e["ts"] for e in a)
    assert list(SynthShop(SynthConfig(n_users=300, n_items=400, n_events=6000, seed=4)).events()) != a


def test_funnel_new_items_bots_and_search():
    shop = SynthShop(CFG)
    evs = list(shop.events())
    types = Counter(e["type"] for e in evs)
    assert types["view"] > types["click"] > types["add_to_cart"] > types["purchase"] > 0 and types["search"] > 0
    # every purchase follows a cart of the same item by the same user
    carted = set()
    for e in evs:
        if e["type"] == "add_to_cart":
            carted.add((e["user_id"], e["item_id"]))
        if e["type"] == "purchase":
            assert (e["user_id"], e["item_id"]) in carted
    created = {i["item_id"]: i["created_at"] for i in shop.items}
    assert any(c > CFG.start_ts for c in created.values())              # items arrive over time
    assert all(created[e["item_id"]] <= e["ts"] for e in evs if e.get("item_id") and not e["user_id"].startswith("bot"))
    assert any(e["user_id"].startswith("bot") for e in evs)
