"""The re-ranking policy of the non-generative arm, the history's intent both arms follow, and the filters
every arm's picks obey.

- `Closeness`: the CF item space of the FACE read-out. For the LightGCN arm every item is ordered by mean
  cosine to the newest `RECENT_ITEMS` history items (or to X, on "more like X") plus `MODEL_WEIGHT` times the
  arm's own order of its pool (both chosen on the valid split by `python -m bench.ranking`).
- `admitted`: the visitor's standing constraints (years, genres asked for and left out, darker/lighter)
  applied to a ranked list; for the generative arm the engine turns them into exclusions inside the search.
- `one_per_film`: a film listed under two ids in the catalog appears once.
- `Intent`: what a history (or the film of "more like X") makes likely at a glance, its genres and its decades,
  as a log prior over the catalog that each arm adds to its own scores with its own weight: the LLM inside its
  constrained beam search (`face_app.decoder.ItemGenerator.recommend(bonus=)`, so the picks are still the items
  it generates), LightGCN on its closeness order of the whole catalog. A genre or decade that dominates the
  history weighs more (`Mix.dominance`). The weights and boosts were chosen on the valid split
  (`python -m bench.ranking --intent-llm ... --boost ...`, docs/lcrec.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from face_app.catalog import Catalog, Item
from face_app.dialogue import DARK_GENRES, LIGHT_GENRES, Constraints

RECENT_ITEMS = 3
MODEL_WEIGHT = 0.1
# The weight of the intent prior against each arm's own scores (0: off): the LLM's log-probabilities of a whole
# index, and LightGCN's closeness order (cosine plus MODEL_WEIGHT times its own order).
# INTENT_LLM 0.5 since round 3, session 6: the rule re-applied to the guided LLM arm (guide 0.5, the codes head;
# bench/intent-valid-guided.json: 1 falls 0.016 below the arm without the prior, one standard error is 0.0136).
INTENT_LLM = 0.5
INTENT_CF = 0.1
# The prior of an item that covers none of the history's genres (or decades) is log(FLOOR / (FLOOR + best cover)).
FLOOR = 0.1
# A history is dominated by an attribute when one genre is carried (or one decade holds) more than DOMINANT of its
# films; the prior of that attribute then weighs up to 1 + boost times as much (linearly from DOMINANT to all of
# the films), so that a history of westerns gets westerns while a varied one keeps the arm's own order. The boost
# of each arm was chosen on the valid split, on whole histories and on their newest 3 films (docs/lcrec.md).
DOMINANT = 0.5
DOMINANCE_BOOST_LLM = 2.0
DOMINANCE_BOOST_CF = 4.0
# The weight of the SASRec log prior inside the LLM's search (`face_app.ranking.GenerativePicker.guide`; 0: the LLM
# alone), chosen on the valid split by the rule in docs/lcrec.md ("LLM guided by SASRec"): the smallest weight whose
# HR@10 is within one binomial standard error of the best (bench/guide-valid/): 2 for round 2's tune, 0.5 for the
# long tune's whole pass (bench/guide-valid/llm-guide-long-tune.json: 0.240 against the best, 0.253 at 2).
GUIDE_LLM = 0.5
# The reply names what the prior leans to: genres holding at least LEAN_SHARE of the history's genre mix, and
# decades holding at least LEAN_SHARE of its films (at most two of each, the largest first).
LEAN_SHARE = 0.3

Ranked = list[tuple[str, float]]


class Mix(NamedTuple):
    """One attribute (genres or decades) of a history: share [columns] sums to 1; matrix [items, columns] is 1
    where an item has the column's genre or decade; dominance in [0, 1]: how far the most common genre (decade)
    of the history's films goes past DOMINANT of them, 1 when every film has it."""

    share: np.ndarray
    matrix: np.ndarray
    dominance: float


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

    def closest_first(self, anchors: Sequence[str], ranked: Ranked, exclude: set[str],
                      model_weight: float = MODEL_WEIGHT) -> Ranked:
        """Every item of the space but `exclude`, ordered by mean closeness to `anchors` plus `model_weight` times
        the model's own order (1 for the first item of `ranked`, falling linearly to 0; 0 outside it). The whole
        space, not only the anchors' nearest, so that the intent prior and the filters can reach any item."""
        score = (self.unit @ self.unit[[self.row[a] for a in anchors]].T).mean(axis=1)
        denom = max(len(ranked), 1)
        for position, (item_id, _) in enumerate(ranked):
            score[self.row[item_id]] += model_weight * (1.0 - position / denom)
        order = np.argsort(-score, kind="stable")
        return [(self.item_ids[r], float(score[r])) for r in order if self.item_ids[r] not in exclude]


@functools.cache  # items are frozen and a catalog's are few; `admitted` asks it for every film on a mood turn
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
    return list(admitted_in_order(catalog, constraints, ranked))


def admitted_in_order(catalog: Catalog, constraints: Constraints, ranked: Iterable[tuple[str, float]]
                      ) -> Iterator[tuple[str, float]]:
    """`admitted`'s items one at a time, reading `ranked` only as far as they are asked for (with a mood asked, the
    films of another mood come after the whole of `ranked` was read)."""
    c = constraints
    if not (c.years or c.genres or c.no_genres or c.mood):
        yield from ranked
        return
    want = wanted(c.mood) if c.mood else None
    later = []
    for item_id, score in ranked:
        item = catalog.item(item_id)
        if not c.admits(item.year, item.genres):
            continue
        if want is None or mood(item) == want:
            yield item_id, score
        elif mood(item) != -want:
            later.append((item_id, score))
    yield from later


def one_per_film(catalog: Catalog, ranked: Iterable[tuple[str, float]], n: int | None = None) -> Ranked:
    """`ranked` without a later id of a film already in it; the first `n` only, when given (reading `ranked` only
    that far)."""
    kept: Ranked = []
    taken: set[str] = set()
    if n is not None and n <= 0:
        return kept
    for item_id, score in ranked:
        if item_id not in taken:
            kept.append((item_id, score))
            taken.update([item_id, *catalog.twins(item_id)])
            if n is not None and len(kept) == n:
                break
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
              left_out: Sequence[str] = ()) -> list[Mix]:
        """The history's `Mix` per attribute to follow: genres unless `genres` is False (the visitor asked for
        genres), decades unless `years` is False (the visitor asked for years); genres `left_out` by the visitor
        leave the mix. An attribute the history says nothing of is left out."""
        rows = [self.row[i] for i in history if i in self.row]
        out = []
        if genres and rows:
            kept = self.genres[rows].copy()
            kept[:, [j for j, g in enumerate(self.genre_names) if g in set(left_out)]] = 0.0
            spread = kept / np.maximum(self.genres[rows].sum(axis=1, keepdims=True), 1.0)
            mix = spread.sum(axis=0)
            if mix.sum() > 0:
                out.append(Mix(mix / mix.sum(), self.genres, dominance(kept.mean(axis=0).max())))
        if years and rows:
            mix = self.decades[rows].sum(axis=0)
            if mix.sum() > 0:
                out.append(Mix(mix / mix.sum(), self.decades, dominance(mix.max() / len(rows))))
        return out

    def leaning(self, mixes: list[Mix]) -> str:
        """What the mixes lean to, in words ("Horror and Thriller films of the 1980s"; "" when nothing stands out)."""
        genres: list[str] = []
        decades: list[str] = []
        for mix, matrix, _ in mixes:
            names = self.genre_names if matrix is self.genres else [f"{d}s" for d in self.decades_start]
            top = [j for j in np.argsort(-mix, kind="stable")[:2] if mix[j] >= LEAN_SHARE]
            (genres if matrix is self.genres else decades).extend(names[j] for j in top)
        if not genres and not decades:
            return ""
        films = f"{' and '.join(genres)} films" if genres else "films"
        return films + (f" of the {' and '.join(sorted(decades))}" if decades else "")

    def cover(self, mixes: list[Mix]) -> list[np.ndarray]:
        """Per attribute, float [items]: the share of the history's mix each item covers."""
        return [mix.matrix @ mix.share for mix in mixes]

    def prior(self, mixes: list[Mix], boost: float = 0.0) -> np.ndarray | None:
        """float [items] in `item_ids` order: sum over the attributes of (1 + boost * dominance) times
        log((FLOOR + cover) / (FLOOR + the best cover)): 0 for an item that covers the mix as well as any, about
        -2.4 per attribute (times the dominance factor) for one that covers none of it. None with no mix."""
        if not mixes:
            return None
        return sum((1.0 + boost * mix.dominance) * np.log((FLOOR + c) / (FLOOR + c.max()))
                   for mix, c in zip(mixes, self.cover(mixes), strict=True))

    def bonus(self, mixes: list[Mix], weight: float, boost: float = 0.0) -> dict[str, float] | None:
        """item id -> weight * prior (None with no mix or weight 0)."""
        prior = self.prior(mixes, boost)
        if prior is None or weight <= 0:
            return None
        return dict(zip(self.item_ids, (weight * prior).tolist(), strict=True))


def dominance(top_share: float) -> float:
    """How far the share of a history's films that carry its most common genre (or decade) goes past DOMINANT,
    scaled to [0, 1]."""
    return float(np.clip((top_share - DOMINANT) / (1.0 - DOMINANT), 0.0, 1.0))
