"""The re-ranking policy of the non-generative arm, and the filters every arm's picks obey.

- `Closeness`: the CF item space of the FACE read-out. The LightGCN arm's pool and the nearest items of the
  newest `RECENT_ITEMS` history items (or of X, on "more like X") are ordered by mean cosine to them plus
  `MODEL_WEIGHT` times the arm's own order (both chosen on the valid split by `python -m bench.ranking`).
- `admitted`: the visitor's standing constraints (years, genres asked for and left out, darker/lighter)
  applied to a ranked list; for the generative arm the engine turns them into exclusions inside the search.
- `one_per_film`: a film listed under two ids in the catalog appears once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from face_app.catalog import Catalog, Item
from face_app.dialogue import DARK_GENRES, LIGHT_GENRES, Constraints

RECENT_ITEMS = 3
MODEL_WEIGHT = 0.1

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
