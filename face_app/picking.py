"""The re-ranking policy of the non-generative arm, the history's intent both arms follow, and the filters
every arm's picks obey.

- `Closeness`: the CF item space of the FACE read-out. The LightGCN arm's pool and the nearest items of the
  newest `RECENT_ITEMS` history items (or of X, on "more like X") are ordered by mean cosine to them plus
  `MODEL_WEIGHT` times the arm's own order (both chosen on the valid split by `python -m bench.ranking`).
- `admitted`: the visitor's standing constraints (years, genres asked for and left out, darker/lighter)
  applied to a ranked list; for the generative arm the engine turns them into exclusions inside the search.
- `one_per_film`: a film listed under two ids in the catalog appears once.
- `Intent`: what a history (or the film of "more like X") makes likely at a glance, its genres and its decades,
  as a log prior over the catalog that each arm adds to its own scores with its own weight: the LLM inside its
  constrained beam search (`face_app.decoder.ItemGenerator.recommend(bonus=)`, so the picks are still the items
  it generates), LightGCN on its closeness-ordered pool. The weights were chosen on the valid split
  (`python -m bench.ranking --intent ...`, docs/lcrec.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from face_app.catalog import Catalog, Item
from face_app.dialogue import DARK_GENRES, LIGHT_GENRES, Constraints

RECENT_ITEMS = 3
MODEL_WEIGHT = 0.1
# The weight of the intent prior against each arm's own scores (0: off): the LLM's log-probabilities of a whole
# index, and LightGCN's closeness order (cosine plus MODEL_WEIGHT times its own order).
INTENT_LLM = 1.0
INTENT_CF = 0.1
# The prior of an item that covers none of the history's genres (or decades) is log(FLOOR / (FLOOR + best cover)).
FLOOR = 0.1
# The reply names what the prior leans to: genres holding at least LEAN_SHARE of the history's genre mix, and
# decades holding at least LEAN_SHARE of its films (at most two of each, the largest first).
LEAN_SHARE = 0.3

Ranked = list[tuple[str, float]]


class Closeness:
    """Cosine closeness of items in the CF space: item_ids [I] and their embeddings [I, d] (any float array)."""

    def __init__(self, item_ids: Sequence[str], embeddings: np.ndarray) -> None:
        self.item_ids = list(item_ids)
        self.row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        emb = np.asarray(embeddings, dtype=np.float64)
        self.unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.row

    def similarity(self, a: str, b: str) -> float:
        return float(self.unit[self.row[a]] @ self.unit[self.row[b]])

    def closest(self, candidates: Sequence[str], item_id: str) -> str | None:
        """The candidate closest to `item_id` (None when no candidate is in the space)."""
        known = [c for c in candidates if c in self.row]
        return max(known, key=lambda c: self.similarity(c, item_id)) if known else None

    def closest_first(self, anchors: Sequence[str], ranked: Ranked, exclude: set[str], pool: int,
                      model_weight: float = MODEL_WEIGHT) -> Ranked:
        """`ranked` and the anchors' `2 * pool` nearest items (none of `exclude`), ordered by mean closeness to
        `anchors` plus `model_weight` times the model's own order (1 for its first item, falling linearly to 0)."""
        sims = (self.unit @ self.unit[[self.row[a] for a in anchors]].T).mean(axis=1)
        position = {item_id: p for p, (item_id, _) in enumerate(ranked)}
        neighbours = [self.item_ids[r] for r in np.argsort(-sims, kind="stable")[: 2 * pool]]
        candidates = list(position) + [i for i in neighbours if i not in position and i not in exclude]
        denom = max(len(ranked), 1)

        def combined(item_id: str) -> float:
            prior = 1.0 - position[item_id] / denom if item_id in position else 0.0
            return float(sims[self.row[item_id]]) + model_weight * prior

        return sorted(((i, combined(i)) for i in candidates), key=lambda pair: -pair[1])


def mood(item: Item) -> int:
    """+1 dark, -1 light, 0 neither or both, from genres."""
    dark, light = bool(set(item.genres) & DARK_GENRES), bool(set(item.genres) & LIGHT_GENRES)
    return int(dark) - int(light)


def wanted(mood_asked: str) -> int:
    """The `mood` value "darker" / "lighter" asks for."""
    return 1 if mood_asked == "darker" else -1


def admitted(catalog: Catalog, constraints: Constraints, ranked: Ranked) -> Ranked:
    """Items of `ranked` that satisfy the years/genre constraints, none of the opposite mood to the one asked;
    with a mood asked, the items of that mood first (stable: within each group the ranked order holds)."""
    kept = []
    for item_id, score in ranked:
        item = catalog.item(item_id)
        if not constraints.admits(item.year, item.genres):
            continue
        if constraints.mood and mood(item) == -wanted(constraints.mood):
            continue
        kept.append((item_id, score))
    if constraints.mood:
        kept.sort(key=lambda pair: -(mood(catalog.item(pair[0])) == wanted(constraints.mood)))
    return kept


def one_per_film(catalog: Catalog, ranked: Ranked) -> Ranked:
    """`ranked` without a later id of a film already in it."""
    kept, taken = [], set()
    for item_id, score in ranked:
        if item_id not in taken:
            kept.append((item_id, score))
            taken.update([item_id, *catalog.twins(item_id)])
    return kept



class Intent:
    """The genres and decades of the catalog's items, and the prior a history puts on them.

    A history's genre mix spreads each of its films evenly over the film's genres; its decade mix counts its
    films per decade. An item covers the share of the genre mix its genres hold, and the share of the decade
    mix its decade holds (0 for an unknown year)."""

    def __init__(self, catalog: Catalog, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        self.row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        items = [catalog.item(i) if i in catalog else None for i in self.item_ids]
        self.genre_names = sorted({g for item in items if item for g in item.genres})
        decades = sorted({item.year // 10 for item in items if item and item.year})
        genre_column = {g: j for j, g in enumerate(self.genre_names)}
        decade_column = {d: j for j, d in enumerate(decades)}
        self.decades_start = [10 * d for d in decades]  # the first year of each decade column
        self.genres = np.zeros((len(items), len(self.genre_names)))  # 1 where the item has the genre
        self.decades = np.zeros((len(items), len(decades)))  # 1 on the item's decade
        for row, item in enumerate(items):
            if item and item.genres:
                self.genres[row, [genre_column[g] for g in item.genres]] = 1.0
            if item and item.year:
                self.decades[row, decade_column[item.year // 10]] = 1.0

    def mixes(self, history: Sequence[str], genres: bool = True, years: bool = True,
              left_out: Sequence[str] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
        """(the history's mix, the items' indicator matrix) per attribute to follow: genres unless `genres` is
        False (the visitor asked for genres), decades unless `years` is False (the visitor asked for years);
        genres `left_out` by the visitor leave the mix. An attribute the history says nothing of is left out."""
        rows = [self.row[i] for i in history if i in self.row]
        out = []
        if genres and rows:
            spread = self.genres[rows] / np.maximum(self.genres[rows].sum(axis=1, keepdims=True), 1.0)
            mix = spread.sum(axis=0)
            mix[[j for j, g in enumerate(self.genre_names) if g in set(left_out)]] = 0.0
            if mix.sum() > 0:
                out.append((mix / mix.sum(), self.genres))
        if years and rows:
            mix = self.decades[rows].sum(axis=0)
            if mix.sum() > 0:
                out.append((mix / mix.sum(), self.decades))
        return out

    def leaning(self, mixes: list[tuple[np.ndarray, np.ndarray]]) -> str:
        """What the mixes lean to, in words ("Horror and Thriller films of the 1980s"; "" when nothing stands out)."""
        genres: list[str] = []
        decades: list[str] = []
        for mix, matrix in mixes:
            names = self.genre_names if matrix is self.genres else [f"{d}s" for d in self.decades_start]
            top = [j for j in np.argsort(-mix, kind="stable")[:2] if mix[j] >= LEAN_SHARE]
            (genres if matrix is self.genres else decades).extend(names[j] for j in top)
        if not genres and not decades:
            return ""
        films = f"{' and '.join(genres)} films" if genres else "films"
        return films + (f" of the {' and '.join(sorted(decades))}" if decades else "")

    def cover(self, mixes: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Per attribute, float [items]: the share of the history's mix each item covers."""
        return [matrix @ mix for mix, matrix in mixes]

    def prior(self, mixes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """float [items] in `item_ids` order: sum over the attributes of log((FLOOR + cover) / (FLOOR + the best
        cover)): 0 for an item that covers the mix as well as any, about -2.2 per attribute for one that covers
        none of it. None with no mix to follow."""
        if not mixes:
            return None
        return sum(np.log((FLOOR + c) / (FLOOR + c.max())) for c in self.cover(mixes))

    def bonus(self, mixes: list[tuple[np.ndarray, np.ndarray]], weight: float) -> dict[str, float] | None:
        """item id -> weight * prior (None with no mix or weight 0)."""
        prior = self.prior(mixes)
        if prior is None or weight <= 0:
            return None
        return dict(zip(self.item_ids, (weight * prior).tolist(), strict=True))
