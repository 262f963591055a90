"""The HTTP API (`recstream serve`): what a shop's pages ask, and what the team watches.

    GET  /v1/users/{user_id}/recommendations?k=&variant=   the worker's latest list for the user, or a fresh
                                                          one (the read-only `ask` path) when there is none or
                                                          it is older than RECSTREAM_API_FRESH_AFTER_S
    GET  /v1/items/{item_id}/similar?k=                   co-visitation + co-occurrence + content
    POST /v1/events                                       one event or a list: validated with the worker's
                                                          contract (422 naming the field), produced to Kafka
    GET  /healthz  /readyz  /metrics                      process up; Redis, broker and a fresh worker
                                                          heartbeat; Prometheus text
    GET  /dashboard  /v1/dashboard                        the live page and the numbers it draws
    POST /v1/search/rerank   GET /v1/trends               the search side (stream/drivers/api_search.py)

The cached read is one async Redis GET. The fresh ask runs the pipeline core (candidates and the scorer
of the promoted model, or of the user's variant) in a thread; it does not apply anything and has no
online ranker of its own (the worker's rankers learn from the worker's lists). With pseudonymisation on,
ids are pseudonymised before any lookup and the caller's id is what the answer names.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from schemas import Rejected
from schemas.fast import fast_validate_event
from stream.config.compose import assemble
from stream.config.settings import Settings
from stream.core import emit
from stream.core.abstats import summarise
from stream.core.experiments import Experiment
from stream.core.ranking.rank import RankConfig
from stream.core.scoring.blendstore import BlendFollower, BlendStore
from stream.core.scoring.transformer import ModelWatcher
from stream.core.similar import similar_items
from stream.core.storage.serving import (
    WORKERS,
    decode_latest,
    fresh_workers,
    latest_key,
    read_outcomes,
)
from stream.core.storage.store import connect, connect_async
from stream.drivers.api_batch import AskBatcher
from stream.drivers.api_edge import Edge
from stream.drivers.api_metrics import StoreCollector
from stream.drivers.api_search import add_search_routes
from stream.secrets import Pseudonymiser

log = logging.getLogger("recstream.api")
DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"
MAX_BATCH = 1000                       # events per POST


class Api:
    """The state behind the routes: clients, the read-only pipeline, the producer, the metrics."""

    def __init__(self, s: Settings):
        self.s = s
        self.redis = connect_async(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.pipeline = assemble(connect(s.redis_url), s.key_prefix, rank_cfg=RankConfig(k=s.top_k),
                                 encoder_dir=s.encoder_dir, explore=False, init_store=False, guard=False)
        self.pipeline.learn_blend = False     # no next events here: fresh asks follow the workers' learned weight
        self.watcher = ModelWatcher(s.model_dir, self.pipeline)
        self.follower = BlendFollower(self.pipeline, BlendStore(self.pipeline.client, s.key_prefix, s.group_id))
        self.experiment = Experiment.load(s.experiments) if s.experiments else None
        if self.experiment is not None:
            self.pipeline.attach_experiment(self.experiment, {}, None)
        self.pseudo = Pseudonymiser(s.pseudonymise_key.encode()) if s.pseudonymise_key else None
        # fresh asks: concurrent requests answered together, on one thread (api_batch.py)
        self.asker = AskBatcher(self.pipeline, s.key_prefix, experiment=self.experiment, before=self._before)
        self.similar_pool = ThreadPoolExecutor(1, thread_name_prefix="similar")   # one thread, as for asks
        self._producer = None
        self._broker_ok = (0.0, False)
        r = self.registry = CollectorRegistry()
        self.requests = Counter("recstream_api_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("recstream_api_seconds", "Request latency", ["route"], registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1))
        self.served = Counter("recstream_api_recommendations_total", "Lists served", ["via"], registry=r)
        r.register(StoreCollector(self.pipeline.client, s.key_prefix, self.experiment))

    def _before(self) -> None:          # before a batch of fresh asks: a promoted model, the learned weight
        self.watcher()
        self.follower()

    @property
    def producer(self):
        if self._producer is None:
            from confluent_kafka import Producer

            from stream.drivers.kafka import producer_conf
            self._producer = Producer(producer_conf(self.s.brokers))
        return self._producer

    def stored_id(self, user: str) -> str:
        return self.pseudo.user(user) if self.pseudo else user

    # ---- recommendations ----------------------------------------------------------------------------
    async def recommendations(self, user: str, k: int, variant: str | None) -> dict:
        uid = self.stored_id(user)
        assigned = self.experiment.assign(uid) if self.experiment else None
        if variant is None or variant == assigned:
            got = await self.cached(user, uid, k)
            if got is not None:
                return got
        return await self.ask(user, uid, k, variant or assigned)

    async def cached(self, user: str, uid: str, k: int) -> dict | None:
        """The worker's latest list for the user, if there is one younger than the bound."""
        rec = decode_latest(await self.redis.get(latest_key(self.s.key_prefix, uid)))
        age = (time.time() * 1000 - rec["produced_at"]) if rec else None
        if rec is None or age > self.s.api_fresh_after_s * 1000:
            return None
        self.served.labels("cached").inc()
        return {"user_id": user, "recommendation_id": rec["recommendation_id"], "via": "cached",
                "age_ms": int(age), "variant": rec.get("variant"), "model_versions": rec["model_versions"],
                "items": [_item(it) for it in rec["items"][:k]]}

    async def ask(self, user: str, uid: str, k: int, variant: str | None) -> dict:
        items, version = await self.asker.ask(uid, k, variant)
        self.served.labels("fresh").inc()
        return {"user_id": user, "recommendation_id": emit.recommendation_id(uid, f"ask:{time.time_ns()}"),
                "via": "fresh", "age_ms": 0, "variant": variant, "model_versions": {"scorer": version},
                "items": [{"item_id": i} for i in items]}

    # ---- events ---------------------------------------------------------------------------------------
    def produce(self, events: list[tuple[str, bytes]]) -> int:
        p = self.producer
        for key, value in events:
            while True:
                try:
                    p.produce(self.s.events_topic, value, key.encode("utf-8", "surrogatepass"))
                    break
                except BufferError:
                    p.poll(0.05)
        return p.flush(10)

    # ---- readiness ------------------------------------------------------------------------------------
    async def ready(self) -> dict:
        checks = {}
        try:
            checks["redis"] = bool(await self.redis.ping())
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready", with its reason
            checks["redis"] = False
            checks["redis_error"] = type(exc).__name__
        if checks["redis"]:
            workers = fresh_workers(await self.redis.hgetall(self.s.key_prefix + WORKERS))
            checks["workers"] = len(workers)
        else:
            checks["workers"] = 0
        checks["broker"] = await self.broker_up()
        checks["ready"] = bool(checks["redis"] and checks["broker"] and checks["workers"])
        return checks

    async def broker_up(self) -> bool:
        at, ok = self._broker_ok
        if time.monotonic() - at < 5:
            return ok
        def probe() -> bool:
            try:
                self.producer.list_topics(timeout=2)
                return True
            except Exception:  # noqa: BLE001 - unreachable, whatever the reason
                return False
        ok = await run_in_threadpool(probe)
        self._broker_ok = (time.monotonic(), ok)
        return ok

    async def dashboard(self, user: str | None) -> dict:
        workers = fresh_workers(await self.redis.hgetall(self.s.key_prefix + WORKERS), 60)
        out = {"ts": int(time.time() * 1000), "workers": workers, "experiment": None, "user": None}
        if self.experiment is not None:
            raw = await run_in_threadpool(read_outcomes, self.pipeline.client, self.s.key_prefix, self.experiment.name)
            out["experiment"] = {"name": self.experiment.name, "control": self.experiment.control,
                                 "variants": summarise(raw, self.experiment.control)}
        if user:
            rec = decode_latest(await self.redis.get(latest_key(self.s.key_prefix, self.stored_id(user))))
            out["user"] = {"user_id": user, "recommendation": rec}
        return out


def _item(it: dict) -> dict:
    return {"item_id": it["item_id"], "score": it["score"], "source": it["source"], "sources": it.get("sources", [])}


def _problem(status: int, field: str, reason: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": field.split("."), "msg": reason, "type": "value_error"}]}, status)


def _json(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


def create_app(s: Settings) -> Edge:
    api = Api(s)

    @asynccontextmanager
    async def lifespan(app):
        # as the worker does: long-lived objects (clients, the pipeline, the catalog cache) frozen out of the
        # collector's scans, young collections less often. Fresh ask at 100/s, p99 over two runs each:
        # 26.8 and 21.3 ms with it, 109.7 and 47.4 ms without (the cached read's p99 was level)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        yield
        await api.redis.aclose()
        if api._producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, api._producer.flush, 5)
            api._producer = None           # dropped: librdkafka's threads stop with it
        api.asker.close()
        api.similar_pool.shutdown(wait=False)

    app = FastAPI(title="recstream", version="1", description=__doc__.split("\n\n")[0], lifespan=lifespan)
    app.state.api = api

    @app.get("/v1/users/{user_id}/recommendations", summary="What to show this user now")
    async def recommendations(user_id: str, k: int = Query(10, ge=1, le=100), variant: str | None = None):
        if variant is not None and (api.experiment is None or variant not in
                                    {v.name for v in api.experiment.variants} | {"holdout"}):
            return _problem(422, "query.variant", f"unknown variant {variant!r}")
        return _json(await api.recommendations(user_id, k, variant))

    @app.get("/v1/items/{item_id}/similar", summary="Items like this one")
    async def similar(item_id: str, k: int = Query(10, ge=1, le=100)):
        items = await asyncio.get_running_loop().run_in_executor(api.similar_pool, similar_items,
                                                                 api.pipeline.client, s.key_prefix, item_id, k,
                                        api.pipeline.content)
        return _json({"item_id": item_id, "items": items})

    @app.post("/v1/events", status_code=202, summary="Send one event or a list of them")
    async def events(request: Request):
        body = await request.body()
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _problem(422, "body", f"not JSON: {exc}")
        many = isinstance(obj, list)
        raws = obj if many else [body]
        if many and not 1 <= len(raws) <= MAX_BATCH:
            return _problem(422, "body", f"expected 1 to {MAX_BATCH} events, got {len(raws)}")
        out = []
        for i, raw in enumerate(raws):
            v = fast_validate_event(raw)
            if isinstance(v, Rejected):
                return _problem(422, f"body.{i}.{v.field}" if many else f"body.{v.field}", v.reason)
            out.append((v.user_id, orjson.dumps(raw) if many else body))
        left = await run_in_threadpool(api.produce, out)
        if left:
            return _problem(503, "broker", f"{left} events not acknowledged by the broker; send them again")
        return {"accepted": len(out)}

    add_search_routes(app, api)

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis, the broker and a worker heartbeat answer")
    async def readyz():
        checks = await api.ready()
        return JSONResponse(checks, 200 if checks["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(generate_latest(api.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/dashboard", summary="The numbers the dashboard draws")
    async def dashboard_data(user: str | None = None):
        return await api.dashboard(user)

    @app.get("/dashboard", response_class=HTMLResponse, summary="The live dashboard")
    async def dashboard():
        return HTMLResponse(DASHBOARD.read_text())

    return Edge(app, api)                   # outermost: the hot path skips every middleware of the app


def app_from_env() -> Edge:
    """The app from RECSTREAM_* settings: what each process of `recstream serve --workers N` builds."""
    sys.setswitchinterval(0.0005)
    return create_app(Settings.from_env())
