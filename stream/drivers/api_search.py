"""The API's search routes (stream/drivers/api.py mounts them):

    POST /v1/search/rerank        a result page reordered for the user (schemas/search.py; 422 naming the
                                  field), with the rule that decided and per-item reasons
    GET  /v1/trends?kind=&n=      what `recstream trends run` published last: rising and popular items,
                                  categories or queries
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from schemas import Rejected, validate_search_request
from stream.core.search.rerank import RerankConfig, SearchReranker
from stream.drivers.search import TRENDS_KEY, rerank_request
from stream.errors import TRANSIENT_REDIS


def add_search_routes(app: FastAPI, api) -> None:
    pool = ThreadPoolExecutor(1, thread_name_prefix="rerank")
    reranker = SearchReranker(api.pipeline, RerankConfig(window_s=api.s.search_window_s, holdout=api.s.search_holdout))

    @app.post("/v1/search/rerank", summary="A search result page reordered for the user")
    async def rerank(request: Request):
        req = validate_search_request(await request.body())
        if isinstance(req, Rejected):
            return JSONResponse({"detail": [{"loc": ["body", *req.field.split(".")], "msg": req.reason,
                                             "type": "value_error"}]}, 422)
        user = req.user_id
        if api.pseudo is not None:
            req = replace(req, user_id=api.stored_id(user))
        try:
            out = await asyncio.get_running_loop().run_in_executor(pool, rerank_request, reranker, req, api.s.key_prefix)
        except TRANSIENT_REDIS as exc:
            return JSONResponse({"detail": f"the store is unavailable ({type(exc).__name__}); try again"}, 503)
        out["user_id"] = user
        return Response(orjson.dumps(out), media_type="application/json")

    @app.get("/v1/trends", summary="What shoppers view, buy and search more of than before")
    async def trends(kind: Literal["item", "category", "query"] = "item", n: int = Query(10, ge=1, le=100)):
        raw = await api.redis.get(api.s.key_prefix + TRENDS_KEY)
        if raw is None:
            return JSONResponse({"detail": "no trends published yet: is `recstream trends run` running?"}, 503)
        snap = orjson.loads(raw)
        got = snap.get(kind, {"rising": [], "popular": []})
        return {"kind": kind, "ts": snap["ts"], "window_s": snap["window_s"], "learned": kind in snap.get("learned", []),
                "rising": got["rising"][:n], "popular": got["popular"][:n]}
