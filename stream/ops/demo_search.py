"""The demo's search side (`make run`): the trends publisher beside the worker, and at the end one search
result page re-ranked through the API, and what rose."""
from __future__ import annotations

import logging
import threading

from stream.config.settings import Settings
from stream.ops.search_engine import LexicalEngine


def start_trends(s: Settings):
    from stream.drivers.search import TrendsPublisher
    pub = TrendsPublisher(s)
    threading.Thread(target=pub.run, name="trends", daemon=True).start()
    return pub


def show_search(port: int, user: str, events: list[dict], items: list[dict], titles: dict) -> None:
    """The user's last query (or words of the last item they looked at) through the stand-in engine, the page
    re-ranked for them by the API, and the rising items and queries."""
    import httpx
    import orjson
    logging.getLogger("httpx").setLevel(logging.WARNING)
    mine = [e for e in events if e["user_id"] == user]
    query = next((e["query"] for e in reversed(mine) if e["type"] == "search"), None)
    if query is None:
        last = next((e["item_id"] for e in reversed(mine) if e.get("item_id")), None)
        query = " ".join(titles.get(last, "lamp").split()[1:]) or "lamp"
    hits = LexicalEngine(items).search(query, 10)
    if not hits:
        return
    body = {"user_id": user, "query": query, "items": [{"item_id": i, "engine_score": sc} for i, sc in hits],
            "ts": max(e["ts"] for e in mine) + 1000}
    url = f"http://127.0.0.1:{port}/v1/search/rerank"
    print(f"== search: {user} types {query!r}; the shop's engine (BM25 over titles) returns {len(hits)} items; "
          f"curl -X POST {url} -d '{{\"user_id\": ..., \"query\": ..., \"items\": [...]}}'")
    try:
        out = httpx.post(url, content=orjson.dumps(body), timeout=10).json()
        print(f"  rule: {out['rule']}" + ("" if out["rule"] == "re-ranked" else "  (a replayed log has no clicks on "
              "recstream's pages to learn from: `recstream search-simulate` shows the loop learning)"))
        for n, it in enumerate(out["items"][:5]):
            why = ", ".join(f"{r['feature']} {r['contribution']:+.2f}" for r in it["reasons"]) or "-"
            print(f"    {n + 1}. (engine #{it['engine_rank'] + 1})  {titles.get(it['item_id'], it['item_id'])}  [{why}]")
        tr = httpx.get(f"http://127.0.0.1:{port}/v1/trends", params={"kind": "item", "n": 3}, timeout=10)
        if tr.status_code == 200:
            got = tr.json()
            # rising = most likely to grow most in the next window; the last window may still be below baseline
            rising = ", ".join(f"{titles.get(r['key'], r['key'])} ({r['rise']:+.1f} last window against its baseline)"
                               for r in got["rising"]) or "none"
            busy = ", ".join(f"{titles.get(r['key'], r['key'])} ({r['count']:.0f})" for r in got["popular"])
            by = "the learned order" if got.get("learned") else "the prior, the busiest keys, until learning beats it"
            print(f"== trends (GET /v1/trends, {got['window_s']:.0f} s windows of event time, at the log's end): "
                  f"rising, i.e. likely to grow most in the next window ({by}): {rising}; most active {busy}")
    except httpx.HTTPError as exc:
        print(f"  the API did not answer: {exc}")
