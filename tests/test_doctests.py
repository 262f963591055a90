"""The examples in docstrings are tests too."""
import doctest
import importlib

import pytest

MODULES = ["stream.core.scoring.features", "stream.core.ranking.ranker", "stream.config.settings", "stream.core.scoring", "stream.core.ranking.rank",
           "schemas._check", "schemas.event", "schemas.item", "stream.data.adapters.delimited", "stream.core.emit",
           "stream.errors", "models.metrics", "stream.drivers.resilience", "stream.secrets", "stream.core.storage.store",
           "stream.data.synth"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0, result
