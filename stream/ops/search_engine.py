"""A small lexical search engine over the catalog's titles: the shop's engine in the search simulator and
the demo (BM25 from `rank-bm25`), not part of recstream's serving path.

>>> titles = ["Acme pro phone", "Nova lite lamp", "Acme lite phone", "Vela eco sofa", "Koda mini kite", "Brio max vase"]
>>> engine = LexicalEngine([{"item_id": f"i{n}", "title": t} for n, t in enumerate(titles)])
>>> [item for item, _ in engine.search("lite phone")]
['i2', 'i0', 'i1']
"""
from __future__ import annotations

import re

import numpy as np
from rank_bm25 import BM25Okapi

_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LexicalEngine:
    def __init__(self, items: list[dict]):
        self.ids = [it["item_id"] for it in items]
        self.bm25 = BM25Okapi([tokens(it.get("title") or "") for it in items])

    def search(self, query: str, n: int = 20) -> list[tuple[str, float]]:
        """The top `n` items with a positive score for `query`, best first (ties in catalog order)."""
        s = self.bm25.get_scores(tokens(query))
        top = np.argsort(-s, kind="stable")[:n]
        return [(self.ids[i], round(float(s[i]), 4)) for i in top if s[i] > 0]
