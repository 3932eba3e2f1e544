"""The engine and its parser: each follow-up kind, exclusions, and sessions that never share state.

Runs on a small invented catalog (tests/catalog_fixture.py) with the real title matching (rapidfuzz)
and the LightGCN arm of the engine; the bundle-backed engine is tested in test_app.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from catalog_fixture import ROWS, SmallReadout, items_frame

from face_app.catalog import Catalog, display_title, ordered_histories
from face_app.dialogue import ConversationState, parse
from face_app.engine import MAX_MESSAGE_CHARS, EmbeddingRecommender, Engine, GeneratorRecommender


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(items_frame(), popularity=np.arange(12, 0, -1))


@pytest.fixture()
def engine(catalog: Catalog) -> Engine:
    readout = SmallReadout()
    lightgcn = EmbeddingRecommender(readout, catalog.popularity)
    return Engine(catalog, readout, {"lightgcn": lightgcn}, tokens=lambda i: f"<a_{i}><b_0>", n=3, pool=12)


def ids(reply) -> list[str]:
    return [r.item_id for r in reply.recommendations]


# --- catalog ---------------------------------------------------------------------------------------------------


def test_titles_are_shown_with_the_article_in_front(catalog: Catalog) -> None:
    assert display_title("Night Ferry, The") == "The Night Ferry"
    assert catalog.item("2").label == "The Night Ferry (1996)"
    assert catalog.raw_title("2") == "Night Ferry, The"  # as training prompts spell it


def test_title_search_tolerates_typos_case_and_a_missing_article(catalog: Catalog) -> None:
    assert catalog.search("glass harbour", 1)[0][0] == "1"
    assert catalog.search("Lemonade Sumer", 1)[0][0] == "7"
    assert catalog.search("night ferry", 1)[0] == ("2", 1.0)


def test_mentions_finds_several_titles_in_order(catalog: Catalog) -> None:
    assert catalog.mentions("I loved Kite Club and Glass Harbor") == ["6", "1"]
    assert catalog.mentions("i really liked Last Train to Marow, also the winter orchard") == ["12", "8"]
    assert catalog.mentions("nothing I can name here") == []


def test_histories_are_ordered_by_time_then_item_id() -> None:
    import pandas as pd

    frame = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["10", "9", "2", "1"],
                          "timestamp": [5, 5, 1, 3], "rating": [1.0] * 4})
    assert ordered_histories(frame) == {"u": ["2", "9", "10"], "v": ["1"]}


# --- parser ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        ("more like the second one", "more_like", True),
        ("more like the second one", "ordinal", 1),
        ("something darker", "mood", "darker"),
        ("something lighter please", "mood", "lighter"),
        ("anything from the 90s?", "years", ((1990, 1999),)),
        ("from the 1980s", "years", ((1980, 1989),)),
        ("made before 1990", "years", ((0, 1989),)),
        ("seen it", "seen", True),
        ("not that", "reject", True),
        ("why that one?", "why", True),
        ("why the third one?", "ordinal", 2),
        ("start over", "start_over", True),
        ("a comedy maybe", "genres", ("Comedy",)),
        ("show them again", "again", True),
    ],
)
def test_parser_understands_each_follow_up(catalog: Catalog, message: str, field: str, value) -> None:
    assert getattr(parse(message, catalog), field) == value


@pytest.mark.parametrize("message", ["something darker", "more like the second one", "seen it", "not that",
                                     "why that one?", "start over", "from the 90s"])
def test_control_phrases_never_name_a_title(catalog: Catalog, message: str) -> None:
    assert parse(message, catalog).titles == []


# --- engine ----------------------------------------------------------------------------------------------------


def test_named_titles_join_the_history_and_recommendations_follow_their_taste(engine: Engine) -> None:
    state = ConversationState()
    reply = engine.respond(state, "I loved Glass Harbor and The Night Ferry")
    assert state.history == ["1", "2"]
    assert len(reply.recommendations) == 3
    # The dark cluster is nearest: the top pick is a crime/thriller, never one of the history.
    assert set(ids(reply)).isdisjoint({"1", "2"})
    assert ids(reply)[0] in {"12", "4"}
    first = reply.recommendations[0]
    assert first.tokens.startswith("<a_") and first.descriptors and first.reason
    assert reply.user_descriptors and set(reply.user_descriptors) <= {"noir", "heist", "rain", "fog", "train"}


def test_reasons_are_grounded_in_shared_descriptors(engine: Engine) -> None:
    state = ConversationState()
    reply = engine.respond(state, "I loved Glass Harbor")
    top = reply.recommendations[0]
    shared = set(top.descriptors) & set(reply.user_descriptors)
    assert shared and any(word in top.reason for word in shared)


def test_nothing_repeats_across_turns_unless_asked(engine: Engine) -> None:
    state = ConversationState()
    first = ids(engine.respond(state, "I loved Glass Harbor"))
    second = ids(engine.respond(state, "more please"))
    assert set(first).isdisjoint(second)
    again = ids(engine.respond(state, "show them again"))
    assert set(again) & set(first + second)


def test_more_like_the_second_one_reranks_around_that_item(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Winter Orchard")
    state.last = ["5", "1", "8"]  # the previous turn's picks, as shown
    state.shown = list(state.last)
    reply = engine.respond(state, "more like the second one")
    # Glass Harbor (1) is the anchor: its nearest unseen neighbours are the heist thrillers.
    assert ids(reply)[0] in {"12", "4", "2"}
    assert "Glass Harbor" in reply.recommendations[0].reason
    assert "1" not in ids(reply)


class FixedArm:
    """A model arm that proposes the same items every turn, whatever the history; it remembers what it was told
    to exclude. generative: its order is final (as the LLM's), or the engine re-orders its pool by CF closeness."""

    name = "llm"

    def __init__(self, proposals: list[str], generative: bool = True) -> None:
        self.proposals, self.generative = proposals, generative
        self.excluded: set[str] = set()

    def rank(self, history, user_descriptors, request, exclude, n):
        self.excluded = set(exclude)
        return [(item_id, 0.0) for item_id in self.proposals if item_id not in exclude][:n]


def engine_with_arm(catalog: Catalog, proposals: list[str], generative: bool = True) -> Engine:
    readout = SmallReadout()
    arms = {"llm": FixedArm(proposals, generative), "lightgcn": EmbeddingRecommender(readout, catalog.popularity)}
    return Engine(catalog, readout, arms, default="llm", n=3, pool=12)


def test_a_generative_arms_picks_are_its_own_in_its_own_order(catalog: Catalog) -> None:
    engine = engine_with_arm(catalog, ["5", "7", "11"])  # light comedies, for a dark history
    reply = engine.respond(ConversationState(), "I loved Glass Harbor and The Night Ferry")
    assert ids(reply) == ["5", "7", "11"]  # nothing swapped in by CF closeness
    assert {r.source for r in reply.recommendations} == {"llm"}


def test_filters_reach_a_generative_arm_as_exclusions_inside_its_search(catalog: Catalog) -> None:
    engine = engine_with_arm(catalog, [str(i) for i in range(1, 13)])
    state = ConversationState()
    engine.respond(state, "I loved Kite Club")
    reply = engine.respond(state, "something from the 90s")
    arm = engine.recommenders["llm"]
    nineties = {r[0] for r in ROWS if r[2] is not None and 1990 <= r[2] <= 1999}
    assert arm.excluded >= {str(i) for i in range(1, 13)} - nineties - set(state.history)  # ruled out up front
    assert all(1990 <= r.year <= 1999 for r in reply.recommendations)
    assert len(reply.recommendations) == 3 and {r.source for r in reply.recommendations} == {"llm"}


def test_a_non_generative_pool_gives_way_to_the_historys_nearest_items(catalog: Catalog) -> None:
    engine = engine_with_arm(catalog, ["5", "7", "11"], generative=False)
    reply = engine.respond(ConversationState(), "I loved Glass Harbor and The Night Ferry")
    assert ids(reply) == ["12", "4", "3"]  # the dark films nearest the history, by closeness
    assert {r.source for r in reply.recommendations} == {"lightgcn"}
    kept = engine_with_arm(catalog, ["4", "5"], generative=False)
    reply = kept.respond(ConversationState(), "I loved Glass Harbor and The Night Ferry")
    assert ids(reply)[0] == "4" and reply.recommendations[0].source == "llm"  # close to the history: keeps its lead


def test_picks_follow_the_newest_items_of_a_long_history(catalog: Catalog) -> None:
    engine = engine_with_arm(catalog, [])
    state = ConversationState()
    state.add_history(["5", "7", "11", "1", "2", "12"])  # light films first, then three dark ones
    assert engine.recent(state) == ["1", "2", "12"]
    short = ConversationState()
    short.add_history(["5", "1"])
    assert engine.recent(short) == ["5", "1"]
    assert set(ids(engine.respond(state, "recommend something"))) <= {"4", "3", "10"}
    engine.recent_items = 0  # the arm's own order, then the CF ranking of the whole catalog
    assert engine.recent(state) == []


def test_darker_and_lighter_change_the_result(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Winter Orchard")
    plain = [r.item_id for r in engine.recommend(state)]
    state.constraints.mood = "darker"
    dark = engine.recommend(state)
    state.constraints.mood = "lighter"
    light = engine.recommend(state)
    dark_genres = {"Crime", "Thriller", "Horror", "Mystery", "War", "Film-Noir"}
    light_genres = {"Comedy", "Animation", "Children's", "Musical", "Romance"}
    assert set(dark[0].genres) & dark_genres and not set(dark[0].genres) & light_genres
    assert set(light[0].genres) & light_genres and not set(light[0].genres) & dark_genres
    assert [r.item_id for r in dark] != [r.item_id for r in light]
    assert plain != [r.item_id for r in light]  # the request changed the result


def test_a_decade_filters_by_year(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Kite Club")
    reply = engine.respond(state, "something from the 90s")
    assert reply.recommendations
    assert all(1990 <= r.year <= 1999 for r in reply.recommendations)
    assert "from the 1990s" in reply.text
    eighties = engine.respond(state, "and from the 80s?")
    assert all(1980 <= r.year <= 1989 for r in eighties.recommendations)


def test_seen_it_moves_the_item_into_the_history(engine: Engine) -> None:
    state = ConversationState()
    first = ids(engine.respond(state, "I loved Glass Harbor"))
    engine.respond(state, "seen it")
    assert first[0] in state.history
    assert first[0] not in ids(engine.respond(state, "show them again"))


def test_not_that_is_never_recommended_again(engine: Engine) -> None:
    state = ConversationState()
    first = ids(engine.respond(state, "I loved Glass Harbor"))
    engine.respond(state, "not the second one")
    assert first[1] in state.disliked
    for _ in range(3):
        assert first[1] not in ids(engine.respond(state, "show them again"))


def test_disliked_and_history_items_are_excluded_from_every_arm(engine: Engine) -> None:
    state = ConversationState(history=["1", "2"], disliked=["12", "4"])
    for _ in range(3):
        got = engine.recommend(state)
        assert set(r.item_id for r in got).isdisjoint({"1", "2", "12", "4"})
        state.shown.extend(r.item_id for r in got)


def test_why_explains_with_descriptors_without_new_picks(engine: Engine) -> None:
    state = ConversationState()
    first = engine.respond(state, "I loved Glass Harbor")
    reply = engine.respond(state, "why the first one?")
    assert reply.recommendations == []
    title = first.recommendations[0].title
    assert title in reply.text and any(w in reply.text for w in first.recommendations[0].descriptors)
    assert state.last == ids(first)


def test_start_over_clears_the_session(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Glass Harbor")
    engine.respond(state, "not that")
    reply = engine.respond(state, "start over")
    assert state == ConversationState()
    assert reply.recommendations == []


def test_likes_join_the_history_and_dislikes_leave_it(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Glass Harbor")
    engine.feedback(state, "12", liked=True)
    assert state.history[-1] == "12" and "12" in state.liked
    engine.feedback(state, "12", liked=False)
    assert "12" not in state.history and "12" in state.disliked


def test_two_sessions_never_share_state(engine: Engine) -> None:
    alice, bob = ConversationState(), ConversationState()
    a = engine.respond(alice, "I loved Glass Harbor")
    b = engine.respond(bob, "I loved Kite Club")
    engine.respond(alice, "not that")
    assert alice.history == ["1"] and bob.history == ["6"]
    assert bob.disliked == [] and alice.disliked == [ids(a)[0]]
    assert set(ids(a)).isdisjoint(ids(b)) or ids(a) != ids(b)
    assert bob.shown == ids(b)


def test_an_over_long_message_changes_nothing_and_says_why(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Glass Harbor")
    before = (list(state.history), list(state.shown), state.turns)

    reply = engine.respond(state, "I loved Kite Club " * 60_000)  # about 1 MB

    assert reply.recommendations == [] and "1,080,000 characters" in reply.text
    assert f"up to {MAX_MESSAGE_CHARS:,}" in reply.text
    assert (state.history, state.shown, state.turns) == before


def test_an_empty_session_asks_for_titles(engine: Engine) -> None:
    reply = engine.respond(ConversationState(), "hello")
    assert reply.recommendations == [] and "persona" in reply.text


def test_a_genre_alone_is_enough_to_start(engine: Engine) -> None:
    reply = engine.respond(ConversationState(), "a comedy please")
    assert reply.recommendations and all("Comedy" in r.genres for r in reply.recommendations)


def test_persona_history_comes_from_the_dataset_order(engine: Engine, tmp_path: Path) -> None:
    engine.personas = {"42": ["1", "2", "999"]}
    state = ConversationState(history=["5"])
    engine.use_persona(state, "42")
    assert state.history == ["1", "2"] and state.persona == "42"


def test_a_title_named_with_dislike_is_excluded_not_added(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Glass Harbor")
    reply = engine.respond(state, "I didn't like Last Train to Marrow")
    assert "12" in state.disliked and "12" not in state.history
    assert "12" not in ids(reply)


def test_reasons_quote_the_rarest_words_and_skip_words_that_describe_most_items(engine: Engine) -> None:
    assert engine.telling(["noir", "heist", "rain"], 2) == ["heist", "rain"]  # 3 items each; noir has 4
    engine._word_items["noir"] = 7  # now describes more than half the catalog of 12
    assert engine.telling(["noir", "heist"]) == ["heist"]


def test_a_film_listed_under_two_ids_is_shown_once_and_excluded_with_its_twin(tmp_path: Path) -> None:
    # ML-100k lists a few films twice; here "13" is a second id of Last Train to Marrow (1993).
    rows = [*ROWS, ("13", "Last Train to Marrow", 1993, ["Thriller"], [0.94, 0.06, 0.0, 0.1], ["train", "noir"])]
    catalog = Catalog(items_frame(rows), popularity=np.arange(13, 0, -1))
    assert catalog.twins("12") == ["13"] and catalog.twins("13") == ["12"] and catalog.twins("1") == []
    readout = SmallReadout(rows)
    engine = Engine(catalog, readout, {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)}, n=4, pool=13)
    state = ConversationState()
    first = ids(engine.respond(state, "I loved Glass Harbor and Iron Verdict"))
    assert len({"12", "13"} & set(first)) == 1  # both ids rank high; the film is shown once
    state = ConversationState()
    engine.add_titles(state, ["13"])
    for _ in range(3):
        assert "12" not in ids(engine.respond(state, "more please"))


def test_the_llm_prompt_shows_face_words_only_to_a_model_tuned_with_them() -> None:
    tuned_with_face = GeneratorRecommender(None, tokens=lambda i: f"<a_{i}>", user_descriptors=True)
    tuned_without = GeneratorRecommender(None, tokens=lambda i: f"<a_{i}>", user_descriptors=False)
    with_words = tuned_with_face.prompt(["1", "2"], ["noir", "heist"], None)
    plain = tuned_without.prompt(["1", "2"], ["noir", "heist"], None)
    assert "noir, heist" in with_words and "<a_1>" in with_words
    assert "noir" not in plain and "<a_1><a_2>" in plain.replace(" ", "")
