"""The one composition root: a `Pipeline` built from `Settings`, as the worker, `recstream rebuild`, the
demo's worker and the benchmarks run it (scorer, online ranker with its checkpoint keeper, content
encoder and exploration, pseudonymisation). The backtest builds its variants from the same parts with
`attach_ranker`/`attach_content`, over the same `Pipeline` class.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stream.config.settings import Settings
from stream.core.pipeline import Pipeline
from stream.core.ranking.rank import RankConfig
from stream.core.storage.store import connect

log = logging.getLogger("recstream.compose")


def build_pipeline(s: Settings, group_id: str | None = None, *, init_store: bool = True, guard: bool = True,
                   ranker: bool = True):
    """The pipeline as the worker runs it; with an online ranker, also its keeper (restored already).
    The worker passes init_store=False (it decides whether a store without a marker is new or emptied);
    `recstream rebuild` passes guard=False and ranker=False."""
    pipeline = Pipeline(connect(s.redis_url), s.key_prefix,
                        rank_cfg=RankConfig(k=s.top_k, exclude_trigger=bool(s.exclude_trigger)),
                        init_store=init_store, guard=guard)
    if s.pseudonymise_key:
        from stream.secrets import Pseudonymiser
        pipeline.pseudonymiser = Pseudonymiser(s.pseudonymise_key.encode())
    keeper = None
    if s.ranker != "off" and ranker:
        from stream.core.ranking.ranker import OnlineRanker, RankerCheckpoint, RankerConfig, RankerKeeper, parse_spec
        model, weight = parse_spec(s.ranker)
        ranker = OnlineRanker(RankerConfig(model=model, weight=weight, window_s=s.ranker_window_s))
        keeper = RankerKeeper(ranker, RankerCheckpoint(pipeline.client, s.key_prefix, group_id or s.group_id, model),
                              s.ranker_checkpoint_s)
        keeper.restore()
        pipeline.attach_ranker(ranker)
    pipeline.keeper = keeper
    if (Path(s.encoder_dir) / "model.onnx").exists():
        from stream.core.content import ContentEncoder, ContentStore
        store = ContentStore(pipeline.client, s.key_prefix, ContentEncoder(s.encoder_dir))
        store.load()
        pipeline.attach_content(store)
    else:
        log.info(
            "no text encoder at %s: no content source (export one with `recstream encoder export`)", s.encoder_dir)
    return pipeline
