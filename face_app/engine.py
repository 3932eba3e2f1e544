"""The recommender engine behind the chat (no Gradio in here): `Engine.respond(state, message) -> Reply`.

Each turn: parse the message (`face_app.dialogue`), update the session state (titles named surely join the
history, "seen it" / "not that" / likes / dislikes), then ask the session's arm for its picks. A title named
uncertainly is never added: the turn asks "Did you mean A or B?" instead, keeps the question in the session
state, and the next message (or a click on a choice, `Engine.answer`) settles it; a message that is no
answer drops it. Nothing in the history, nothing disliked, and nothing shown before (unless asked "again") is
ever recommended; each pick says which model proposed it. A reply starts with one sentence saying how the
message was read ("Taking ‘the second one’ as Dust Road (1975); films from the 1970s or 1980s, no Horror, 10
picks."), naming only what was applied; "recent" is measured from the catalog's newest year, "older" from the
middle of the history.

The rooms around it: `face_app.arms` (the two recommenders behind one interface), `face_app.picking` (the
LightGCN arm's closeness ordering and the filters every arm obeys: for the generative LLM arm they act inside
the search, as items the trie never lets a beam reach; the CF ranking fills in only when the filters leave
fewer than N items in the whole catalog) and `face_app.wording` (reasons, explanations, headlines).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from face_app.arms import ARM_NAMES, ArmUnavailable, EmbeddingRecommender, Readout, Recommender, bundle_arms
from face_app.catalog import Catalog, ordered_histories
from face_app.datasets import load_dataset
from face_app.dialogue import (
    NEITHER,
    OPEN_START,
    ConversationState,
    Question,
    Request,
    clean_message,
    describe_years,
    parse,
    read_answer,
)
from face_app.picking import (
    DOMINANCE_BOOST_CF,
    DOMINANCE_BOOST_LLM,
    GUIDE_LLM,
    INTENT_CF,
    INTENT_LLM,
    MODEL_WEIGHT,
    RECENT_ITEMS,
    Closeness,
    Intent,
)
from face_app.ranking import ClosenessPicker, GenerativePicker, Pick, Picking, Plan
from face_app.wording import Wording, sentence

log = logging.getLogger("face_app")

# Longer messages are answered with a note and change nothing. Title matching (every run of words against
# every title form, in one rapidfuzz call) takes about 0.1 s of one core for 500 characters over ML-100k's
# 1,682 titles and well under a second for 2,000.
MAX_MESSAGE_CHARS = 2000
EMPTY_MESSAGE_HINT = ('Type a message first: name a few movies ("I loved Toy Story and Fargo") '
                      'or ask for "something darker".')
# Histories whose FACE read-out the engine remembers (a tuple of ids and k words each: well under 1 MB).
DESCRIBED_HISTORIES = 4096
# Picks a turn may ask for ("show me 10"): more than MAX_PICKS gives MAX_PICKS, and the reply says so.
MAX_PICKS = 20
# "recent" / "newer": the catalog's newest RECENT_YEARS years (ML-100k ends in 1998, so 1994-1998), never today's.
RECENT_YEARS = 5
# "older" / "classic" with no history to compare with: films before this year.
OLDER_BEFORE = 1980
ENGLISH_ONLY = 'I read messages in English: try one like "I loved Toy Story and Fargo, something darker please".'
WHAT_I_UNDERSTAND = ('Name movies you like ("I loved Toy Story and Fargo"), ask for "something darker", "from the '
                     '90s" or "more like the second one", or pick a persona.')


@dataclass
class Recommendation:
    """One recommended item as the UI shows it."""

    item_id: str
    title: str
    year: int | None
    genres: list[str]
    tokens: str
    descriptors: list[str]
    score: float
    reason: str
    rank: int
    source: str  # the recommender that proposed it ("llm", "lightgcn")
    # How well it matches, by one rule for every arm (`Engine.matches`): the share of the films the visitor could be
    # shown that LightGCN's fold-in of the history (of the anchor film, for "more like X") scores below it; None
    # with nothing to measure.
    match: float | None = None
    match_to: str | None = None  # the anchor's title when the match is measured against it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reply:
    """What `respond` returns: the message to show, the recommendations, and the visitor's descriptors."""

    text: str
    recommendations: list[Recommendation] = field(default_factory=list)
    user_descriptors: list[str] = field(default_factory=list)
    request: Request | None = None
    seconds: float = 0.0
    served: str | None = None  # the arm whose picks these are (None: no picks were asked of an arm)


@dataclass
class Engine:
    """Shared, read-only models; every per-session fact lives in the `ConversationState` passed in.

    readout: the FACE read-out (descriptors, CF item embeddings, fold-in).
    recommenders: by name ("llm", "lightgcn"); `default` picks the one used when a call names none.
    tokens: item id -> index-token string (empty when the bundle has no index).
    pool, recent_items, model_weight: the LightGCN arm's ordering (`face_app.picking`).
    intent_llm, intent_cf: the weight of the history's genre and decade prior (`picking.Intent`; 0: off) against
    the LLM's log-probabilities, and against LightGCN's closeness order; boost_llm, boost_cf: how much more an
    attribute the history is dominated by weighs, per arm (`picking.Mix.dominance`); guide_llm: the weight of the
    SASRec prior inside the LLM's search (`face_app.ranking.GenerativePicker.guide`; 0: the LLM alone).
    """

    catalog: Catalog
    readout: Readout
    recommenders: dict[str, Recommender]
    tokens: Callable[[str], str] = lambda item_id: ""
    default: str = "lightgcn"
    n: int = 5
    pool: int = 50
    recent_items: int = RECENT_ITEMS
    model_weight: float = MODEL_WEIGHT
    intent_llm: float = INTENT_LLM
    intent_cf: float = INTENT_CF
    boost_llm: float = DOMINANCE_BOOST_LLM
    boost_cf: float = DOMINANCE_BOOST_CF
    guide_llm: float = GUIDE_LLM
    personas: dict[str, list[str]] = field(default_factory=dict)
    users: Any = None  # the dataset's user table (demographics), for persona labels
    substitute: bool = True  # an arm that failed to load may be stood in for by LightGCN, saying so (`serving`)

    def __post_init__(self) -> None:
        self.closeness = Closeness(self.readout.item_ids, self.readout.item_embeddings.detach().double().numpy())
        self.wording = Wording(self.catalog, self.readout, self.closeness)
        self.intent = Intent(self.catalog, self.readout.item_ids)
        self._described = functools.lru_cache(maxsize=DESCRIBED_HISTORIES)(
            lambda history: tuple(self.readout.describe_history(history)))
        self._cf = EmbeddingRecommender(self.readout, self._popularity())
        self._picking = Picking(self.catalog, self.closeness, self.intent, self._cf)
        years = [self.catalog.item(i).year for i in self.readout.item_ids if i in self.catalog]
        self._newest_year = max((y for y in years if y is not None), default=None)

    @classmethod
    def from_bundle(cls, bundle: Any, *, load_llm: bool = True, n: int = 5, background: bool = False,
                    precision: str = "fp32") -> Engine:
        """The engine of a loaded `Bundle`: its catalog read from the dataset (fetched through the pinned
        sources), the persona histories rebuilt from it, and its arms (`face_app.arms.bundle_arms`)."""
        readout = bundle.descriptors
        dataset = load_dataset(bundle.dataset["source"], paths=bundle.dataset.get("paths"))
        catalog, interactions = Catalog.from_dataset(dataset, list(readout.item_ids))
        histories = ordered_histories(interactions[interactions["user_id"].isin(set(bundle.personas))])
        # A persona's last item is its held-out test target: the visitor starts from what came before.
        personas = {user: histories.get(user, [])[:-1] for user in bundle.personas}
        recommenders = bundle_arms(bundle, catalog, load_llm=load_llm, background=background, precision=precision)
        default = "llm" if "llm" in recommenders else "lightgcn"
        return cls(catalog, readout, recommenders, tokens=bundle.tokens, default=default, n=n, personas=personas,
                   users=dataset.users)

    def _popularity(self) -> np.ndarray:
        pop = np.zeros(len(self.readout.item_ids), dtype=np.int64)
        for item_id, count in zip(self.catalog.ids, self.catalog.popularity, strict=True):
            if item_id in self.closeness.row:
                pop[self.closeness.row[item_id]] = count
        return pop

    # --- session-level actions the UI calls directly ----------------------------------------------------------

    def use_persona(self, state: ConversationState, user_id: str) -> list[str]:
        """Start over as a dataset user: their history (the held-out last item excluded)."""
        state.reset()
        state.persona = user_id
        state.add_history([i for i in self.personas.get(user_id, []) if i in self.closeness.row])
        return state.history

    def add_titles(self, state: ConversationState, item_ids: Sequence[str]) -> list[str]:
        return state.add_history([i for i in item_ids if i in self.closeness.row])

    def feedback(self, state: ConversationState, item_id: str, liked: bool) -> None:
        """A like puts the item in the history; a dislike keeps it out of every later turn."""
        if liked:
            state.like(item_id)
        else:
            state.dislike(item_id)

    def user_descriptors(self, state: ConversationState) -> list[str]:
        """The FACE read-out of the session's history (no words for an empty one). Remembered per history
        (`DESCRIBED_HISTORIES` of them): a turn that leaves the history as it was ("something darker") and the
        panel drawn after it read it out once, not again."""
        return list(self._described(tuple(state.history))) if state.history else []

    def item_descriptors(self, item_id: str) -> list[str]:
        return list(self.readout.for_item(item_id))

    # --- one chat turn ----------------------------------------------------------------------------------------

    def respond(self, state: ConversationState, message: str, recommender: str | None = None) -> Reply:
        """Parse `message`, update `state`, and recommend (or explain, or start over).

        Any text is answered: an empty one, an over-long one, or one in which nothing is recognised gets
        a reply that says so and changes nothing."""
        start = time.perf_counter()
        text = clean_message(message)
        if not text:
            return Reply(EMPTY_MESSAGE_HINT, seconds=time.perf_counter() - start)
        if len(text) > MAX_MESSAGE_CHARS:
            return Reply(f"That message is {len(message):,} characters long; I read messages of up to "
                         f"{MAX_MESSAGE_CHARS:,}. Nothing changed: please send a shorter one.",
                         seconds=time.perf_counter() - start)
        with self._coming(recommender or self.default):
            request = parse(text, self.catalog)
            reply = self._respond(state, request, recommender or self.default)
        reply.request = request
        reply.seconds = time.perf_counter() - start
        return reply

    def answer(self, state: ConversationState, item_id: str | None, recommender: str | None = None) -> Reply:
        """The visitor's click on a choice of the pending question: an item id among its choices, or None for
        "neither". The same turn as answering in words; with no question open, or an id that is not among
        its choices, nothing changes."""
        start = time.perf_counter()
        if not state.pending or (item_id is not None and item_id not in state.pending[0].choices):
            return Reply("That question is no longer open; nothing changed.", seconds=time.perf_counter() - start)
        text = self.catalog.item(item_id).label if item_id else "neither"
        with self._coming(recommender or self.default):
            reply = self._answered(state, item_id, recommender or self.default, text)
        reply.seconds = time.perf_counter() - start
        return reply

    def _respond(self, state: ConversationState, request: Request, arm: str) -> Reply:
        if state.pending:
            question = state.pending[0]
            index = read_answer(request, question, self.catalog)
            if index is not None:
                return self._answered(state, None if index == NEITHER else question.choices[index], arm, request.text)
            state.pending.clear()  # the visitor moved on: what was asked about stays out
        return self._turn(state, request, arm)

    def _answered(self, state: ConversationState, item_id: str | None, arm: str, text: str) -> Reply:
        """Settle the first pending question with `item_id` (None: neither), as if the visitor had named that
        film surely in the message that raised the question; then ask the next one, or recommend."""
        question = state.pending.pop(0)
        if item_id is None:
            return self._turn(state, Request(text=text, asks=True), arm,
                              notes=[f"OK, nothing added for “{question.written}”."])
        action = question.action
        request = Request(text=text, titles=[item_id], asks=True, reject=action == "dislike", seen=action == "seen",
                          more_like=action == "more_like")
        if item_id not in state.listed:
            state.listed.append(item_id)
        return self._turn(state, request, arm, listing=False)

    def _turn(self, state: ConversationState, request: Request, arm: str, notes: list[str] | None = None,
              listing: bool = True) -> Reply:
        """One understood message. listing: the titles it names are the visitor's new list ("the second one"
        then means the second of them until picks are shown); False for the answer to a question, whose film
        joins the list it was named in."""
        notes = list(notes or [])
        if request.start_over:
            state.reset()
            return Reply("Starting over. Tell me a few movies you like, or pick a persona.")
        if not request.understood:
            return Reply(self._not_understood(request))
        state.turns += 1
        target, by_ordinal = self._referenced(state, request)
        reading = [f"Taking ‘{request.ordinal_text}’ as {self.catalog.item(target).label}"] if by_ordinal else []
        notes += self._apply_feedback(state, request, target)
        if listing and request.titles:
            state.listed, state.refers_to_listed = list(request.titles), True
        if request.unsure and not request.why:
            state.pending = [Question(m.written, list(m.choices), request.action) for m in request.unsure]
        if state.pending:
            # Nothing uncertain is added and nothing recommended until the question is settled.
            return Reply(" ".join([*sentence(reading), *notes, self.wording.ask(state.pending[0])]), [],
                         self.user_descriptors(state))
        if request.why:
            reply = self._explain(state, target)
            reply.text = " ".join([*sentence(reading), reply.text])
            return reply
        anchor = None
        if request.more_like:
            anchor = next((t for t in request.titles if t in self.closeness.row), None) or target
        reading += self._update_constraints(state, request)
        c = state.constraints
        if not state.history and anchor is None and not (c.genres or c.years or c.no_genres):
            return Reply(" ".join([*sentence(reading), *notes, "Tell me a few movies you like (\"I loved Toy Story "
                                   "and Fargo\"), or pick a persona, and I will recommend from there."]).strip())
        n = self.n
        if request.count is not None:
            n = min(max(request.count, 1), MAX_PICKS)
            reading.append(f"{n} pick{'s' * (n != 1)}" + (f" (at most {MAX_PICKS} a turn; you asked for "
                                                         f"{request.count})" if request.count > MAX_PICKS else ""))
        if request.again:
            reading.append("earlier picks allowed again")
        text = request.text if request.is_follow_up or anchor else None
        user_words = self.user_descriptors(state)  # the history is settled for this turn: read out once
        plan = self.plan(state, request_text=text, anchor=anchor, again=request.again, n=n, user_words=user_words)
        arm, notice = self.serving(arm, substitute=self.substitute)
        if notice:
            notes.append(notice)
        recs = self.cards(state, plan, self.picker(arm).pick(plan))
        state.last = [r.item_id for r in recs]
        state.shown.extend(i for i in state.last if i not in state.shown)
        if recs:
            state.refers_to_listed = False
        headline = self.wording.headline(state, len(recs), anchor, self._leaning(arm, plan), asked=n)
        return Reply(" ".join([*sentence(reading), *notes, headline]).strip(), recs, user_words, served=arm)

    def _not_understood(self, request: Request) -> str:
        """The reply to a message that names no known title and asks for nothing (it is not echoed back)."""
        if request.naming:
            return (f"I couldn't find that title among the {len(self.catalog):,} movies I know. Check the spelling, "
                    f"or search for it under \"Add a title to your history\". Nothing changed.")
        hint = WHAT_I_UNDERSTAND if request.english else ENGLISH_ONLY
        return f"I didn't find a movie I know or a request I understand in that; nothing changed. {hint}"

    def _referenced(self, state: ConversationState, request: Request) -> tuple[str | None, bool]:
        """The film a follow-up points at, and whether an ordinal chose it.

        An ordinal counts over the visitor's own list (the films named in their latest message that named any)
        right after that list, before any picks were shown, or when the message says "the films I listed";
        otherwise over the latest picks. Without an ordinal: a pick named by title, else the first pick."""
        listed = request.of_listed or state.refers_to_listed
        among = state.listed if listed and state.listed else state.last
        if request.ordinal is not None and among:
            index = request.ordinal if request.ordinal >= 0 else len(among) + request.ordinal
            if 0 <= index < len(among):
                return among[index], True
        named = [t for t in request.titles if t in state.last]
        if named:
            return named[0], False
        return (state.last[0] if state.last and not state.refers_to_listed else None), False

    def _apply_feedback(self, state: ConversationState, request: Request, target: str | None) -> list[str]:
        notes = []
        named = [t for t in request.titles if t in self.closeness.row]
        feeling = {t: request.feelings.get(t, request.action) for t in named}
        if not named and (request.seen or request.reject):
            # "not that", "seen it": the pick the message points at ("I didn't like psycho" asked about: none).
            items = [target] if target and not request.unsure else []
            feeling = {item_id: "dislike" if request.reject else "seen" for item_id in items}
        elif request.why or (request.more_like and len(named) == 1):
            return notes
        # Each title its own feeling, from its own clause ("hated X but loved Y"): the reply names each.
        disliked = [i for i, f in feeling.items() if f == "dislike"]
        seen = [i for i, f in feeling.items() if f == "seen"]
        liked = [i for i, f in feeling.items() if f == "like"]
        for item_id in disliked:
            state.dislike(item_id)
        if disliked:
            notes.append(f"I won't suggest {', '.join(self.catalog.item(i).label for i in disliked)}.")
        if seen:
            state.add_history(seen)
            notes.append(f"Added to what you've seen: {', '.join(self.catalog.item(i).label for i in seen)}.")
        added = state.add_history(liked)
        for item_id in added:
            if item_id not in state.liked:
                state.liked.append(item_id)
        if added:
            notes.append(f"Added {', '.join(self.catalog.item(i).label for i in added)} to your history.")
        return notes

    def _update_constraints(self, state: ConversationState, request: Request) -> list[str]:
        """Apply the message's years, genres and mood to the standing constraints; returns how each was read.

        A period replaces the one before; genres asked for replace those before; genres left out add to those
        left out before (a genre asked for again is no longer left out)."""
        c = state.constraints
        read = []
        if request.clear_years:
            c.years = ()
            read.append("any year")
        years, note = request.years, ""
        if request.era:
            years, note = self._era_years(state, request.era)
        if years:
            c.years = years
            read.append(f"films {describe_years(years)}" + (f" ({note})" if note else ""))
        if request.genres:
            c.genres = request.genres
            c.no_genres = tuple(g for g in c.no_genres if g not in request.genres)
            read.append(" or ".join(request.genres) + " films")
        if request.no_genres:
            c.no_genres = tuple(dict.fromkeys([*c.no_genres, *request.no_genres]))
            c.genres = tuple(g for g in c.genres if g not in request.no_genres)
            read.append(", ".join(f"no {g}" for g in request.no_genres))
        if request.mood:
            c.mood = request.mood
            read.append(f"something {request.mood}")
        if request.readings:  # how each mood or occasion phrase was read ("‘light and funny’ as Comedy, lighter")
            read.insert(0, "reading " + "; ".join(request.readings))
        return read

    def _era_years(self, state: ConversationState, era: str) -> tuple[tuple[tuple[int, int], ...], str]:
        """"recent": the catalog's newest `RECENT_YEARS` years; "older": before the middle year of the history's
        films, or before `OLDER_BEFORE` with none. Returns the year ranges and what they were measured from."""
        if era == "recent" and self._newest_year is not None:
            first = self._newest_year - RECENT_YEARS + 1
            return ((first, self._newest_year),), f"the newest years of a catalog that ends in {self._newest_year}"
        years = sorted(y for i in state.history if i in self.catalog and (y := self.catalog.item(i).year))
        if years:
            middle = years[len(years) // 2]
            return ((OPEN_START, middle - 1),), f"‘{era}’: older than the middle of your history, {middle}"
        return ((OPEN_START, OLDER_BEFORE - 1),), f"‘{era}’ with no history to compare with: a fixed cut"

    # --- ranking ----------------------------------------------------------------------------------------------

    def excluded(self, state: ConversationState, again: bool = False) -> set[str]:
        """Never: the history and what was disliked; not again: what was shown before (unless asked).
        Another id of the same film counts as that film."""
        out = set(state.history) | set(state.disliked)
        if not again:
            out |= set(state.shown)
        return out | {twin for item_id in out for twin in self.catalog.twins(item_id)}

    def plan(self, state: ConversationState, *, request_text: str | None = None, anchor: str | None = None,
             again: bool = False, n: int | None = None, user_words: list[str] | None = None) -> Plan:
        """The turn as a `face_app.ranking.Plan`: what to continue, what never to show, the filters, how many.
        user_words: the session's descriptors when the caller has them already (else read out here)."""
        exclude = self.excluded(state, again)
        if anchor:
            exclude.add(anchor)
        user_words = self.user_descriptors(state) if user_words is None else user_words
        anchors = [anchor] if anchor else self.recent(state)
        # "more like X": the model is asked what follows X alone (on the scenario suite this kept more picks
        # close to X than X appended to the whole history did: 2 of 3 turns against 1 of 3), and X's genres and
        # decade are the intent the picks follow.
        c = state.constraints
        mixes = self.intent.mixes([anchor] if anchor else state.history, genres=not c.genres, years=not c.years,
                                  left_out=c.no_genres)
        return Plan(history=tuple(state.history), anchor=anchor, anchors=tuple(anchors), exclude=frozenset(exclude),
                    constraints=replace(c), n=n or self.n, request=request_text, user_words=tuple(user_words),
                    mixes=tuple(mixes))

    def _coming(self, arm: str) -> contextlib.AbstractContextManager:
        """The turn, announced to the batcher of the arm's search when it has one (`face_app.batching.Batcher.coming`):
        a batch then waits for this turn's search rather than leaving it for the next batch."""
        batcher = getattr(getattr(self.recommenders.get(arm), "generator", None), "batcher", None) \
            if self.available(arm) else None
        return batcher.coming() if batcher is not None else contextlib.nullcontext()

    def available(self, arm: str) -> bool:
        """Whether the named arm can serve a turn right now: it exists and its model is loaded (an LLM that is still
        loading on its background thread, or whose load failed, cannot)."""
        recommender = self.recommenders.get(arm)
        ready = getattr(recommender, "ready", None)
        return recommender is not None and (ready is None or bool(ready()))

    def serving(self, arm: str, *, substitute: bool = True) -> tuple[str, str | None]:
        """The arm that serves a turn asked of `arm`, and what the reply must say when it is not `arm`.

        An arm still loading is waited for (its first turn blocks until the model is up). An arm whose load failed
        is never replaced silently: with `substitute` the LightGCN arm serves and the returned notice says so (the
        caller puts it in the reply, and it is logged here); without it (study mode, where the arm is the
        experiment) `ArmUnavailable` is raised."""
        if arm not in self.recommenders:
            raise ArmUnavailable(f"no arm named {arm!r}: this app serves {', '.join(sorted(self.recommenders))}")
        failed = getattr(self.recommenders[arm], "failed", None)
        if failed is None or not failed():
            return arm, None
        if not substitute or arm == "lightgcn" or "lightgcn" not in self.recommenders:
            raise ArmUnavailable(f"the {arm} arm failed to load and cannot serve")
        log.warning(f"the {arm} arm failed to load: this turn is served by the lightgcn arm, and its reply says so")
        return "lightgcn", (f"The {ARM_NAMES.get(arm, arm)} could not be loaded, so these picks come from the "
                            f"{ARM_NAMES['lightgcn']} instead.")

    def picker(self, arm: str | None = None) -> GenerativePicker | ClosenessPicker:
        """The named arm's whole ranking policy (`face_app.ranking`) with the engine's current weights."""
        name = arm or self.default
        if name not in self.recommenders:
            raise ArmUnavailable(f"no arm named {name!r}: this app serves {', '.join(sorted(self.recommenders))}")
        recommender = self.recommenders[name]
        if recommender.generative:
            return GenerativePicker(recommender, self._picking, self.intent_llm, self.boost_llm, self.model_weight,
                                    self.guide_llm)
        return ClosenessPicker(recommender, self._picking, self.intent_cf, self.boost_cf, self.model_weight,
                               self.pool)

    def recommend(self, state: ConversationState, arm: str | None = None, *, request_text: str | None = None,
                  anchor: str | None = None, again: bool = False, n: int | None = None,
                  user_words: list[str] | None = None) -> list[Recommendation]:
        """Top-`n` (default `self.n`) for the session under its standing constraints: `plan`, then the arm's
        `pick`, as cards."""
        plan = self.plan(state, request_text=request_text, anchor=anchor, again=again, n=n, user_words=user_words)
        return self.cards(state, plan, self.picker(arm).pick(plan))

    def cards(self, state: ConversationState, plan: Plan, picks: Sequence[Pick]) -> list[Recommendation]:
        matches = self.matches(plan, [p.item_id for p in picks])
        anchor = self.catalog.item(plan.anchor).title if plan.anchor and plan.anchor in self.catalog else None
        cards = [self._card(state, p.item_id, p.score, rank, p.source, plan.anchor, list(plan.user_words))
                 for rank, p in enumerate(picks, start=1)]
        for card in cards:
            card.match, card.match_to = matches.get(card.item_id), anchor
        return cards

    def matches(self, plan: Plan, item_ids: Sequence[str]) -> dict[str, float]:
        """Each pick's match, the same rule whichever arm picked it (the arms' own scores, log-probabilities and
        cosines, share no scale): the share of the films the visitor could be shown (the catalog less the plan's
        exclusions) whose LightGCN score for this taste is below the pick's. The taste is the fold-in of the
        history, or of the anchor film for "more like X"; with neither there is none, and no match is shown."""
        basis = [plan.anchor] if plan.anchor else list(plan.history)
        if not basis:
            return {}
        scores = self._cf.scores(basis)
        rows = self.closeness.row  # item id -> row of the read-out's item order, as `scores`
        unseen = np.ones(len(scores), dtype=bool)
        unseen[[rows[i] for i in plan.exclude if i in rows]] = False
        ordered = np.sort(scores[unseen] if unseen.any() else scores)
        return {i: float(np.searchsorted(ordered, scores[rows[i]], side="left") / len(ordered))
                for i in item_ids if i in rows}

    def _leaning(self, arm: str, plan: Plan) -> str:
        """What the intent prior leaned to on this turn, in words ("" when the arm's weight is 0)."""
        if not self.picker(arm).intent:
            return ""
        return self.intent.leaning(list(plan.mixes))

    def recent(self, state: ConversationState) -> list[str]:
        """The newest `recent_items` items of the history (none when `recent_items` is 0)."""
        known = [i for i in state.history if i in self.closeness.row]
        return known[-self.recent_items:] if self.recent_items > 0 else []

    # --- words ------------------------------------------------------------------------------------------------

    def _card(self, state: ConversationState, item_id: str, score: float, rank: int, source: str,
              anchor: str | None, user_words: list[str]) -> Recommendation:
        item = self.catalog.item(item_id)
        words = self.item_descriptors(item_id)
        return Recommendation(
            item_id=item_id, title=item.title, year=item.year, genres=list(item.genres), tokens=self.tokens(item_id),
            descriptors=words, score=round(float(score), 4), rank=rank,
            reason=self.wording.reason(state, item, words, anchor, user_words), source=source,
        )

    def _explain(self, state: ConversationState, target: str | None) -> Reply:
        if target is None:
            return Reply("I haven't recommended anything yet. Tell me a movie you like first.")
        user_words = self.user_descriptors(state)
        return Reply(self.wording.explain(state, target, user_words), [], user_words)
