"""What several command groups share."""
from __future__ import annotations

from stream.config.settings import Settings

TOPIC_ALIASES = {"events": "events_topic", "items": "items_topic", "recommendations": "recs_topic",
                 "recs": "recs_topic", "dlq": "dlq_topic"}


def topic_of(s: Settings, name: str) -> str:
    """A topic name, or an alias of one of the four the settings name.

    >>> from stream.config.settings import Settings
    >>> topic_of(Settings(), "dlq"), topic_of(Settings(), "other")
    ('recstream.events.dlq', 'other')
    """
    return getattr(s, TOPIC_ALIASES[name]) if name in TOPIC_ALIASES else name
