"""Versioned message contracts: JSON Schema documents (`*.v1.json`) and fast validators."""
from schemas._check import Rejected
from schemas.event import EVENT_TYPES, Event, validate_event
from schemas.item import Item, validate_item
from schemas.recommendation import RankedItem, Recommendation, validate_recommendation
from schemas.search import SearchRequest, validate_search_request

__all__ = ["EVENT_TYPES", "Event", "Item", "RankedItem", "Recommendation", "Rejected", "SearchRequest",
           "validate_event", "validate_item", "validate_recommendation", "validate_search_request"]
