"""The `Pipeline`'s wiring half: what the composition root and a model swap attach (content, exploration,
an online ranker, a promoted scorer, an experiment's variants), between batches."""
from __future__ import annotations

from stream.core.content import ContentSimilar
from stream.core.ranking.cascade import RankedScorer
from stream.core.ranking.explore import FreshExplorer
from stream.core.scoring import Scorer
from stream.core.scoring.blendweight import adopt
from stream.core.scoring.transformer import model_sources


class Wiring:
    """Mixed into `stream.core.pipeline.Pipeline`: sets its scorer, sources, ranker, explorer and experiment."""

    def attach_content(self, store, explore: bool = True) -> None:
        """Content embeddings (stream/core/content.py): catalog upserts embedded as they arrive, the "content"
        source, items unknown to the transformer borrow their nearest known item's score, and (with
        `explore`) fresh items get a bounded exploration slot."""
        self.content = store
        self.sources = [s for s in self.sources if s.name != "content"] + [ContentSimilar(store)]
        self.explorer = FreshExplorer() if explore else None

    def explorer_for(self, scorer: Scorer):   # the deployment's slot for its scorer; any other its own (paired)
        deployment = self.explorer is None or scorer is self.scorer
        return self.explorer if deployment else self._explorers.setdefault(id(scorer.ranker or scorer), FreshExplorer())

    def attach_ranker(self, ranker) -> None:
        """Put an online ranker on top of the scorer, now and after every hot swap."""
        self.ranker = ranker
        self.scorer = RankedScorer(self.scorer, ranker)

    def set_scorer(self, scorer: Scorer) -> None:
        """Swap the scorer between batches (hot-swap of a promoted model). A transformer scorer also
        becomes a candidate source ("model": its own top items for the user's sequence)."""
        self.base_scorer = scorer
        self._variant_scorers = {}
        self.blend = adopt(self.blend, scorer, self.blend_store) if self.learn_blend else None   # its base weight
        if self.ranker is not None:
            scorer = RankedScorer(scorer, self.ranker)
        sources = [s for s in self.sources if s.name not in ("model", "linear")]
        if scorer.transformer is not None:
            sources += model_sources(scorer.transformer)
        self.sources = sources
        self.scorer = scorer

    def attach_experiment(self, experiment, rankers: dict, outcomes) -> None:
        """Split users between `experiment`'s variants (`rankers`: variant -> its online ranker or None) and
        join what they were shown to what they did next (`outcomes`: an OutcomeJoin, stored by `publish`)."""
        self.experiment, self.variant_rankers, self.outcomes = experiment, rankers, outcomes
        self._variant_scorers = {}

    def variant_scorer(self, name: str) -> Scorer:
        """The scorer a variant ranks with: the promoted model (or the fallback) under its own ranker."""
        got = self._variant_scorers.get(name)
        if got is None:
            v = self.experiment.variant(name)
            base = self.base_scorer if v.scorer == "model" else self._fallback
            ranker = self.variant_rankers.get(name)
            got = self._variant_scorers[name] = RankedScorer(base, ranker) if ranker is not None else base
        return got
