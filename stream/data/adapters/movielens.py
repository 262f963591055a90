"""MovieLens, given the dataset folder; the layout is detected.

  100K layout: u.data (`user \t item \t rating \t unix_s`), u.item (`id|title|date|video|url|19 genre flags`, latin-1)
  current CSV layout: ratings.csv (`userId,movieId,rating,timestamp`), movies.csv (`movieId,title,genres` with `|`)
Mapping to Event v1 (ratings are explicit, we replay them as interactions):
  user -> user_id   movie -> item_id   timestamp (unix s) -> ts (ms)   every rating -> type "view"
  rating -> context.rating ; event_id = "ml:{user}:{movie}" (a user rates a movie once)
Items: title -> title, genres -> category ["movies", first genre], all genres -> description, release
date (100K: `01-Jan-1995`; current layout: the year in the title, as 1 January) -> created_at.
Events come out in file order; replay and training sort by ts.
"""
from __future__ import annotations

import calendar
import csv
import re
import time
from typing import Iterator

from schemas import Rejected
from stream.data.adapters.base import LogSource, ms

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
               "Thriller", "War", "Western"]


def _released(date: str = "", title: str = "") -> int | None:
    """The release date as ms since the epoch: `01-Jan-1995` (100K), else a `(1995)` in the title (1 January)."""
    try:
        return calendar.timegm(time.strptime(date.strip(), "%d-%b-%Y")) * 1000
    except ValueError:
        pass
    year = re.search(r"\((\d{4})\)\s*$", title.strip())
    return calendar.timegm((int(year.group(1)), 1, 1, 0, 0, 0)) * 1000 if year else None


def _created(ms: int | None) -> dict:
    return {"created_at": ms} if ms is not None else {}


class MovieLensLog(LogSource):
    name = "movielens"

    def __init__(self, path):
        super().__init__(path)
        folder = self.path if self.path.is_dir() else self.path.parent
        if (folder / "u.data").exists():
            self.layout, self.ratings, self.movies = "100k", folder / "u.data", folder / "u.item"
        elif (folder / "ratings.csv").exists():
            self.layout, self.ratings, self.movies = "csv", folder / "ratings.csv", folder / "movies.csv"
        else:
            raise FileNotFoundError(f"{path}: neither u.data (MovieLens 100K) nor ratings.csv (current layout) found")

    def _event(self, user: str, movie: str, rating: str, ts: str) -> dict:
        return {"event_id": f"ml:{user}:{movie}", "user_id": user, "item_id": movie, "type": "view",
                "ts": ms(float(ts)), "context": {"rating": float(rating)}}

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        with open(self.ratings, encoding="utf-8") as fh:
            if self.layout == "csv":
                fh.readline()
            for n, line in enumerate(fh, 2 if self.layout == "csv" else 1):
                parts = line.rstrip("\n").split("\t" if self.layout == "100k" else ",")
                if len(parts) < 4:
                    yield n, Rejected(f"line: expected user, item, rating, timestamp; got {len(parts)} fields")
                    continue
                try:
                    yield n, self._event(*parts[:4])
                except ValueError:
                    yield n, Rejected(f"timestamp: expected unix seconds, got {parts[3]!r}")

    def items(self) -> Iterator[dict]:
        if self.layout == "100k":
            with open(self.movies, encoding="latin-1") as fh:
                for line in fh:
                    f = line.rstrip("\n").split("|")
                    if len(f) < 24:
                        continue
                    genres = [g for g, flag in zip(GENRES_100K, f[5:24]) if flag == "1"] or ["unknown"]
                    yield {"item_id": f[0], "title": f[1], "category": ["movies", genres[0]],
                           "description": ", ".join(genres), **_created(_released(f[2], f[1]))}
        else:
            with open(self.movies, encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    genres = [g for g in row["genres"].split("|") if g] or ["unknown"]
                    yield {"item_id": row["movieId"], "title": row["title"], "category": ["movies", genres[0]],
                           "description": ", ".join(genres), **_created(_released(title=row["title"]))}
