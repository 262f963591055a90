"""Stage 3: candidate sources. Each is a small class that queues its Redis reads on the batch's
pipeline (`plan`) and turns the replies into scored candidates (`collect`); all sources share
one round-trip per batch. Each candidate records which sources proposed it and their scores."""
from stream.core.candidates.base import SOURCE_NAMES, BatchContext, CandidateSource
from stream.core.candidates.category import CategoryPopular
from stream.core.candidates.covisit import CoOccurrence, CoVisitation
from stream.core.candidates.recent import UserHistory
from stream.core.candidates.stage import StagePopular
from stream.core.candidates.trending import Trending


def default_sources(prefix: str, trend_half_life_s: float) -> list[CandidateSource]:
    return [CoVisitation(prefix), CoOccurrence(prefix), UserHistory(), Trending(prefix, trend_half_life_s),
            CategoryPopular(prefix), StagePopular(prefix)]


__all__ = ["SOURCE_NAMES", "BatchContext", "CandidateSource", "CategoryPopular", "CoOccurrence", "CoVisitation",
           "StagePopular", "UserHistory", "Trending", "default_sources"]
