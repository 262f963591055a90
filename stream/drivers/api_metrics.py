"""What the API's `/metrics` adds to its own request metrics, read from Redis at scrape time: each live
worker's heartbeat numbers and, with an experiment configured, every variant's outcomes with their 95 %
intervals (so Prometheus and Grafana show what `recstream ab report` shows)."""
from __future__ import annotations

import math

from prometheus_client.core import GaugeMetricFamily

from stream.core.abstats import RATES, summarise
from stream.core.search.rerank import PAGES_OUTCOMES
from stream.core.storage.serving import WORKERS, fresh_workers, read_outcomes

WORKER_GAUGES = (("events_per_s", "recstream_worker_events_per_second", "Events/s over the last heartbeat"),
                 ("p50_ms", "recstream_worker_latency_p50_ms", "Event-to-emit latency p50 over the last 30 s"),
                 ("p99_ms", "recstream_worker_latency_p99_ms", "Event-to-emit latency p99 over the last 30 s"),
                 ("lag", "recstream_worker_lag_messages", "Consumer lag summed over the worker's partitions"),
                 ("events", "recstream_worker_events", "Events processed since the worker started"),
                 ("rejected", "recstream_worker_rejected", "Messages dead-lettered since the worker started"))


class StoreCollector:
    def __init__(self, client, prefix: str, experiment=None):
        self.client, self.prefix, self.experiment = client, prefix, experiment

    def collect(self):
        workers = fresh_workers(self.client.hgetall(self.prefix + WORKERS))
        for key, name, doc in WORKER_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["worker"])
            for wid, st in sorted(workers.items()):
                if st.get(key) is not None:
                    g.add_metric([wid], float(st[key]))
            yield g
        dl = GaugeMetricFamily("recstream_worker_dead_letters", "Dead letters by reason since the worker started",
                               labels=["worker", "reason"])
        for wid, st in sorted(workers.items()):
            for reason, n in sorted((st.get("dead_letters") or {}).items()):
                dl.add_metric([wid, reason], float(n))
        yield dl
        pages = GaugeMetricFamily("recstream_search_pages", "Search result pages closed (shown) and clicked, by the "
                                  "rule that ordered them (reranked, cold, learning, control)", labels=["rule", "outcome"])
        for field, n in sorted(self.client.hgetall(self.prefix + PAGES_OUTCOMES).items()):
            rule, _, outcome = field.decode().partition(":")
            pages.add_metric([rule, outcome], float(n))
        yield pages
        if self.experiment is None:
            return
        exp = self.experiment
        rows = summarise(read_outcomes(self.client, self.prefix, exp.name), exp.control)
        lists = GaugeMetricFamily("recstream_ab_lists", "Lists shown per variant", labels=["experiment", "variant"])
        users = GaugeMetricFamily("recstream_ab_users", "Users shown a list per variant",
                                  labels=["experiment", "variant"])
        rate = GaugeMetricFamily("recstream_ab_rate", "Outcome rate per shown list (revenue: per user), with its "
                                 "95 % interval", labels=["experiment", "variant", "metric", "bound"])
        for r in rows:
            lists.add_metric([exp.name, r["variant"]], r["lists"])
            users.add_metric([exp.name, r["variant"]], r["users"])
            for metric in (*(m for m, _ in RATES), "revenue_per_user"):
                m = r[metric]
                for bound, v in (("value", m["value"]), ("low", m["ci95"][0]), ("high", m["ci95"][1])):
                    if not math.isnan(v):
                        rate.add_metric([exp.name, r["variant"], metric, bound], v)
        yield lists
        yield users
        yield rate
