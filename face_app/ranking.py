"""One ranking path for the chat, the eval stage's served rows, `bench.ranking` and the model card's replays.

A turn becomes a `Plan` (pure dialogue logic, `Engine.plan`): the visitor's history, the film of "more like X",
the items never to show, the standing filters, how many picks, the follow-up text the LLM reads and the visitor's
words. Each arm owns its whole policy in one `pick(plan)`:

- `GenerativePicker` (the tuned LLM): the arm's prompt and constrained search, the filters and exclusions as
  items the trie never lets a beam reach, the history's intent prior weighed inside the search
  (`face_app.picking.Intent`, weight `intent` and dominance `boost`) and, at weight `guide`, the SASRec its
  `<taste>` token reads; its picks are the items it generated, in its own order.
- `ClosenessPicker` (LightGCN+FACE): a pool of the arm's `pool` best items by the fold-in embedding, every item
  ordered by closeness to the anchors (the film of "more like X", or the history's newest `recent_items`) plus
  `model_weight` times the pool's order, the intent prior at weight `intent`, then the filters.

Both fill up from the CF ranking of the whole catalog, under the same filters, only when the filters leave fewer
than `n` items (`backfill`); each pick names the model that proposed it. Nothing here reads the session state, so
the same plan gives the same picks wherever it is asked from.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from face_app.arms import EmbeddingRecommender, Recommender
from face_app.catalog import Catalog
from face_app.dialogue import Constraints
from face_app.picking import Closeness, Intent, Mix, Ranked, admitted, admitted_in_order, one_per_film

# Filter sets whose ruled-out items a `Picking` remembers (`Picking.ruled_out`).
RULED_OUT_KEPT = 256


@dataclass(frozen=True)
class Plan:
    """What a turn asks of an arm.

    history: the visitor's history, oldest first; anchor: X of "more like X" (the arm then reads X alone);
    anchors: the items the closeness order measures from; exclude: items never shown this turn (their twins
    included); constraints: the standing filters; n: picks; request: the follow-up text the LLM reads (None: a
    plain request); user_words: the visitor's FACE words; mixes: the genre and decade mix the picks follow."""

    history: tuple[str, ...]
    anchor: str | None
    anchors: tuple[str, ...]
    exclude: frozenset[str]
    constraints: Constraints
    n: int
    request: str | None
    user_words: tuple[str, ...]
    mixes: tuple[Mix, ...]

    @property
    def reads(self) -> list[str]:
        """The items the arm is asked to continue: X alone on "more like X", else the whole history."""
        return [self.anchor] if self.anchor else list(self.history)


@dataclass(frozen=True)
class Pick:
    item_id: str
    score: float
    source: str  # the model that proposed it ("llm", "lightgcn")


@dataclass
class Picking:
    """What every arm's policy shares: the catalog, the CF item space, the intent prior and the CF arm that
    backfills."""

    catalog: Catalog
    closeness: Closeness
    intent: Intent
    cf: EmbeddingRecommender

    def __post_init__(self) -> None:
        # Standing filters repeat turn after turn ("from the 90s" holds until replaced): the items they rule out
        # are worked out once per filter set, as the whole catalog is checked for them.
        self._ruled_out = functools.lru_cache(maxsize=RULED_OUT_KEPT)(self._rule_out)

    def ruled_out(self, constraints: Constraints) -> frozenset[str]:
        """Every item the constraints rule out (a decade, a genre, the mood opposite to the one asked)."""
        c = constraints
        if not (c.years or c.genres or c.no_genres or c.mood):
            return frozenset()
        return self._ruled_out(tuple(c.years), tuple(c.genres), tuple(c.no_genres), c.mood)

    def _rule_out(self, years: tuple, genres: tuple, no_genres: tuple, mood: str | None) -> frozenset[str]:
        everything = [(item_id, 0.0) for item_id in self.closeness.item_ids]
        asked = Constraints(years=years, genres=genres, no_genres=no_genres, mood=mood)
        passing = {item_id for item_id, _ in admitted(self.catalog, asked, everything)}
        return frozenset(self.closeness.item_ids) - passing

    def closest_first(self, anchors: Sequence[str], ranked: Ranked, exclude: set[str] | frozenset[str],
                      model_weight: float) -> Ranked:
        return self.closeness.closest_first(anchors, ranked, set(exclude), model_weight) if anchors else ranked

    def backfill(self, plan: Plan, kept: list[Pick], model_weight: float) -> list[Pick]:
        """`kept`, then (when it holds fewer than n) the CF ranking of the whole catalog under the plan's filters,
        ordered by closeness to its anchors; at most n picks, one per film."""
        if len(kept) < plan.n:
            have = set(plan.exclude) | {twin for p in kept for twin in (p.item_id, *self.catalog.twins(p.item_id))}
            wide = self.cf.rank(list(plan.history), plan.user_words, None, have, len(self.closeness.row))
            wide = self.closest_first(plan.anchors, wide, have, model_weight)
            # `wide` holds no film of `kept`: the first films it adds are the ones one_per_film would keep.
            kept = kept + [Pick(item_id, score, self.cf.name) for item_id, score in
                           one_per_film(self.catalog, admitted_in_order(self.catalog, plan.constraints, wide),
                                        plan.n - len(kept))]
        first = one_per_film(self.catalog, [(pick.item_id, float(n)) for n, pick in enumerate(kept)])
        return [kept[int(n)] for _, n in first[: plan.n]]


@dataclass
class GenerativePicker:
    """The LLM arm's policy (module docstring). guide: the weight of the SASRec the LLM's `<taste>` token reads,
    as a second log prior inside the search ("LLM guided by SASRec": its log-softmax over the catalog for the
    history the arm continues; 0: the LLM alone, and a model without a `<taste>` encoder is never guided)."""

    recommender: Recommender
    picking: Picking
    intent: float
    boost: float
    model_weight: float
    guide: float = 0.0

    def bonus(self, plan: Plan) -> dict[str, float] | None:
        intent = self.picking.intent.bonus(list(plan.mixes), self.intent, self.boost)
        guide = self.sasrec_prior(plan.reads) if self.guide else None
        if guide is None:
            return intent
        return guide if intent is None else {item: value + intent.get(item, 0.0) for item, value in guide.items()}

    def sasrec_prior(self, history: Sequence[str]) -> dict[str, float] | None:
        """item id -> `guide` times the SASRec's log-softmax for the history (None: no encoder, or no history).
        The history's SASRec state is the one the `<taste>` token reads (`TastePrompt.state_for`, remembered), so
        SASRec runs once per history, not once per use."""
        taste = getattr(getattr(self.recommender, "generator", None), "taste", None)
        if taste is None or not history:
            return None
        with torch.no_grad():
            scores = taste.encoder.logits(taste.state_for(taste.indices(history)))[0]
        prior = (self.guide * torch.log_softmax(scores.float(), dim=-1)).tolist()
        return dict(zip(taste.item_ids, prior, strict=True))

    def pick(self, plan: Plan) -> list[Pick]:
        exclude = set(plan.exclude) | self.picking.ruled_out(plan.constraints)
        ranked = self.recommender.rank(plan.reads, plan.user_words, plan.request, exclude, plan.n, self.bonus(plan))
        kept = [Pick(item_id, score, self.recommender.name)
                for item_id, score in one_per_film(self.picking.catalog, ranked)]
        return self.picking.backfill(plan, kept, self.model_weight)


@dataclass
class ClosenessPicker:
    """The LightGCN arm's policy (module docstring)."""

    recommender: Recommender
    picking: Picking
    intent: float
    boost: float
    model_weight: float
    pool: int

    def bonus(self, plan: Plan) -> dict[str, float] | None:
        return self.picking.intent.bonus(list(plan.mixes), self.intent, self.boost)

    def pick(self, plan: Plan) -> list[Pick]:
        pool = self.recommender.rank(list(plan.history), plan.user_words, plan.request, set(plan.exclude),
                                     self.pool)
        ranked = [(item_id, score) for item_id, score in pool if item_id in self.picking.closeness.row]
        ordered = self.picking.closest_first(plan.anchors, ranked, plan.exclude, self.model_weight)
        bonus = self.bonus(plan)
        if bonus is not None:
            ordered = sorted(((i, s + bonus.get(i, 0.0)) for i, s in ordered), key=lambda pair: -pair[1])
        proposed = {item_id for item_id, _ in pool}
        kept = [Pick(item_id, score, self.recommender.name if item_id in proposed else self.picking.cf.name)
                for item_id, score in one_per_film(self.picking.catalog, admitted_in_order(
                    self.picking.catalog, plan.constraints, ordered), plan.n)]
        return self.picking.backfill(plan, kept, self.model_weight)
