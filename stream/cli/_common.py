"""What several command groups share."""
from __future__ import annotations

from stream.config.settings import Settings

TOPIC_ALIASES = {"events": "events_topic", "items": "items_topic", "recommendations": "recs_topic",
                 "recs": "recs_topic", "dlq": "dlq_topic", "trends": "trends_topic",
                 "search-requests": "search_requests_topic", "search-results": "search_results_topic"}


def topic_of(s: Settings, name: str) -> str:
    """A topic name, or an alias of one the settings name.

    >>> from stream.config.settings import Settings
    >>> topic_of(Settings(), "dlq"), topic_of(Settings(), "other")
    ('recstream.events.dlq', 'other')
    """
    return getattr(s, TOPIC_ALIASES[name]) if name in TOPIC_ALIASES else name


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """Seconds in a duration like 90s, 30m, 1h, 30d, 2w (argparse `type=`; event time or wall time).

    >>> duration("30m"), duration("1h"), duration("45")
    (1800.0, 3600.0, 45.0)
    """
    import argparse
    t = text.strip().lower()
    try:
        if t and t[-1] in _UNITS:
            value = float(t[:-1]) * _UNITS[t[-1]]
        else:
            value = float(t)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive duration such as 90s, 30m, 1h, 30d or 2w")
    return value
