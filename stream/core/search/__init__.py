"""The search side: a shop's result page re-ranked for the user (`rerank.py`, learning from what users click
after a search in `learn.py`), and what shoppers search, click and buy more of than before (`trends.py`)."""
