"""Stage 4: scoring, behind one protocol (`base.Scorer`). Until a transformer is registered,
`FallbackScorer` blends the candidate sources' own scores; then `transformer.BlendedScorer`; the online
ranker (`stream.core.ranking.cascade.RankedScorer`) goes on top of either."""
from stream.core.scoring.base import CandidateBatch, Scored, Scorer, scored
from stream.core.scoring.fallback import DEFAULT_WEIGHTS, FallbackScorer

__all__ = ["CandidateBatch", "Scored", "Scorer", "scored", "FallbackScorer", "DEFAULT_WEIGHTS"]
