"""The examples in docstrings are tests too."""
import doctest
import importlib

import pytest

MODULES = ["stream.features", "models.ranker", "stream.settings", "stream.scoring", "stream.rank",
           "schemas._check", "schemas.event", "schemas.item", "stream.adapters.delimited", "stream.emit",
           "stream.errors", "stream.ranking_metrics", "stream.resilience", "stream.secrets", "stream.store",
           "stream.synth"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0, result
