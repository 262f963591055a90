"""Ranker specs, as `RECSTREAM_RANKER`, an experiment's variants and `recstream backtest --rankers` name them."""
from __future__ import annotations

from stream.core.scoring.features import FEATURE_NAMES

MODELS = ("gbdt", "lr", "fm")
DEFAULT_WEIGHT = 0.5            # the cascade's weight when a spec names none


def parse_spec(spec: str) -> tuple[str, float | None]:
    """'gbdt' (trees, always whole-set), 'lr' (the cascade at the default weight), 'lr:2.5' (the cascade at
    weight 2.5) or 'lr:learned' (the learned model orders the whole candidate set, learning from every
    event; `gate.py` judges it against the base order): (model, weight or None). 'gbdt:ungated' and
    'lr:ungated' are the whole-set modes without the gate (the learned order always serves). Any spec may
    end in ':without=NAME+NAME' (`spec_without`).

    >>> parse_spec("fm:2"), parse_spec("lr"), parse_spec("lr:learned"), parse_spec("gbdt"), parse_spec("gbdt:ungated")
    (('fm', 2.0), ('lr', 0.5), ('lr', None), ('gbdt', None), ('gbdt', None))
    """
    spec = strip_without(spec)
    model, _, w = spec.partition(":")
    if model not in MODELS:
        raise ValueError(f"ranker model {model!r}: expected one of {', '.join(MODELS)}")
    if w in ("learned", "ungated") or (model == "gbdt" and w == ""):
        return model, None
    if model == "gbdt":
        raise ValueError(f"ranker {spec!r}: the gbdt ranker orders the whole candidate set (no cascade weight)")
    return model, float(w) if w else DEFAULT_WEIGHT


def spec_without(spec: str) -> tuple[str, ...]:
    """The features a spec leaves out ('gbdt:without=hist_bought+pop_rel'): an ablation row beside the
    default in one backtest (the columns are held at 0 when learning and scoring, so no tree splits on them).

    >>> spec_without("gbdt:without=hist_bought+pop_rel"), spec_without("gbdt")
    (('hist_bought', 'pop_rel'), ())
    """
    _, sep, names = spec.partition(":without=")
    out = tuple(n for n in names.split("+") if n) if sep else ()
    bad = [n for n in out if n not in FEATURE_NAMES]
    if bad or (sep and not out):
        raise ValueError(f"ranker {spec!r}: without= names unknown features {bad or names!r} "
                         f"(expected names from FEATURE_NAMES, joined by '+')")
    return out


def strip_without(spec: str) -> str:
    spec_without(spec)                 # validated here, so a bad name fails where the spec is parsed
    return spec.partition(":without=")[0]
