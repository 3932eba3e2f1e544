"""Title understanding: rapidfuzz matching over a title's written forms, three outcomes per mention (added,
asked, nothing), the question kept in the session and answered in words or by a click, and the generated
corpus of `bench.titles` meeting its targets on a small catalog.

The catalog here is a handful of well-known films chosen for their traps (a sequel, a remake, a film one
typo away from another), with made-up CF vectors and descriptors; not data from MovieLens.
"""

from __future__ import annotations

import html

import numpy as np
import pytest
from catalog_fixture import ROWS, SmallReadout, items_frame

from bench.titles import TARGETS, evaluate, make_corpus
from face_app.arms import EmbeddingRecommender
from face_app.catalog import Catalog, normalise, title_forms
from face_app.dialogue import ConversationState, parse
from face_app.engine import Engine
from face_app.handlers import NEITHER_CHOICE, App, Session

FILMS = [
    ("101", "Star Wars", 1977, ["Sci-Fi", "Adventure"], [0.1, 0.2, 1.0, 0.0], ["space", "rebel", "saga"]),
    ("102", "Empire Strikes Back, The", 1980, ["Sci-Fi"], [0.1, 0.2, 0.95, 0.1], ["space", "saga", "snow"]),
    ("103", "Star Kid", 1997, ["Children's", "Sci-Fi"], [0.0, 0.8, 0.6, 0.0], ["kids", "robot", "space"]),
    ("104", "War, The", 1994, ["Drama"], [0.3, 0.3, 0.0, 0.9], ["family", "summer", "war"]),
    ("105", "Godfather, The", 1972, ["Crime", "Drama"], [0.95, 0.0, 0.0, 0.3], ["mafia", "family", "noir"]),
    ("106", "Godfather: Part II, The", 1974, ["Crime", "Drama"], [0.9, 0.0, 0.1, 0.3], ["mafia", "family", "noir"]),
    ("107", "Psycho", 1960, ["Horror", "Thriller"], [0.8, 0.0, 0.3, 0.0], ["motel", "scream", "knife"]),
    ("108", "Psycho", 1998, ["Horror", "Thriller"], [0.75, 0.05, 0.3, 0.0], ["motel", "remake", "knife"]),
    ("109", "Usual Suspects, The", 1995, ["Crime", "Thriller"], [0.9, 0.1, 0.0, 0.1], ["heist", "twist", "noir"]),
    ("110", "Terminator 2: Judgment Day", 1991, ["Action", "Sci-Fi"], [0.5, 0.0, 0.8, 0.0], ["robot", "future", "gun"]),
]
ROWS_WITH_FILMS = [*ROWS, *FILMS]
POPULARITY = np.array([50] * len(ROWS) + [583, 367, 3, 9, 413, 209, 239, 20, 267, 295])


def make_engine() -> Engine:
    catalog = Catalog(items_frame(ROWS_WITH_FILMS), popularity=POPULARITY)
    readout = SmallReadout(ROWS_WITH_FILMS)
    return Engine(catalog, readout, {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)}, n=3, pool=20)


@pytest.fixture()
def engine() -> Engine:
    return make_engine()


# --- matching ----------------------------------------------------------------------------------------------------


def test_titles_are_compared_without_article_case_accents_or_roman_numerals() -> None:
    assert normalise("The Godfather: Part II") == normalise("godfather 2") == "godfather 2"
    assert normalise("Schindler's List") == "schindlers list" and normalise("Cité") == "cite"
    assert [f for f, _ in title_forms("Terminator 2: Judgment Day")] == [
        "terminator 2 judgment day", "terminator 2", "judgment day", "t2"]


def test_misspelt_titles_are_added_and_the_near_neighbour_never_is(engine: Engine) -> None:
    state = ConversationState()

    reply = engine.respond(state, "I liked Star Wras and The Empire Strikes Bak")

    assert state.history == ["101", "102"] and "103" not in state.history
    assert "Added Star Wars (1977), The Empire Strikes Back (1980) to your history." in reply.text
    assert not state.pending and reply.recommendations


def test_a_title_repeated_in_one_message_counts_once(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "Star Wars " * 10)
    assert state.history == ["101"]


@pytest.mark.parametrize("text, expected", [
    ("godfather 2", ["106"]), ("The Godfather Part II", ["106"]), ("the godfather", ["105"]),
    ("Psycho 1960", ["107"]), ("psycho (1998)", ["108"]), ("usual suspects", ["109"]), ("T2", ["110"]),
    ("terminator 2", ["110"]), ("I loved The War", ["104"]), ("a war movie", []), ("something darker", []),
])
def test_sequels_numbers_years_and_nicknames_pick_the_right_film(engine: Engine, text: str,
                                                                 expected: list[str]) -> None:
    request = parse(text, engine.catalog)
    assert request.titles == expected and not request.unsure


# --- asking ------------------------------------------------------------------------------------------------------


def test_an_uncertain_mention_is_asked_about_and_adds_nothing(engine: Engine) -> None:
    state = ConversationState()

    reply = engine.respond(state, "I loved star ws")

    assert state.history == [] and reply.recommendations == []
    assert reply.text.startswith("Did you mean Star Wars (1977) or Star Kid (1997)?")
    assert [q.choices for q in state.pending] == [["101", "103"]]


@pytest.mark.parametrize("text", ["Star Wars made me cry", "star wars is the best", "it made me laugh"])
def test_ordinary_words_near_a_title_are_not_asked_about(engine: Engine, text: str) -> None:
    # "made" is one edit from "Jade"-like titles and "the best" from "The Pest" in the real catalog; here "star
    # was" / "the war" sit as close to films of this catalog: ordinary lower-case words are the visitor's sentence
    state = ConversationState()
    engine.respond(state, text)
    assert state.pending == []


def test_a_misspelt_title_that_is_no_word_is_still_asked_about(engine: Engine) -> None:
    for text in ("I loved star ws", "I loved Star Wra"):
        assert parse(text, engine.catalog).unsure or parse(text, engine.catalog).titles, text


def test_ordinary_words_rule() -> None:
    from face_app.catalog import ordinary_words

    assert ordinary_words("made") and ordinary_words("the best")
    assert not ordinary_words("wras") and not ordinary_words("Made") and not ordinary_words("gone with the wend")


@pytest.mark.parametrize("answer, added", [
    ("the first", ["101"]), ("1", ["101"]), ("2", ["103"]), ("Star Wars", ["101"]), ("the second one", ["103"]),
    ("the 1997 one", ["103"]), ("neither", []), ("no", []),
])
def test_the_question_is_answered_in_words(engine: Engine, answer: str, added: list[str]) -> None:
    state = ConversationState()
    engine.respond(state, "I loved star ws")

    reply = engine.respond(state, answer)

    assert state.history == added and not state.pending
    if added:
        assert f"Added {engine.catalog.item(added[0]).label} to your history." in reply.text
        assert reply.recommendations and added[0] not in [r.item_id for r in reply.recommendations]
    else:
        assert "nothing added for “star ws”" in reply.text


def test_an_exact_title_shared_by_two_films_asks_and_a_year_settles_it(engine: Engine) -> None:
    state = ConversationState()
    reply = engine.respond(state, "I loved Psycho")
    assert reply.text.startswith("Did you mean Psycho (1960) or Psycho (1998)?") and state.history == []
    engine.respond(state, "the 1998 one")
    assert state.history == ["108"]


def test_a_message_that_is_no_answer_drops_the_question_and_adds_nothing_of_it(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved star ws")
    engine.respond(state, "I loved The Usual Suspects")
    assert state.history == ["109"] and not state.pending


def test_a_disliked_uncertain_title_is_excluded_once_confirmed(engine: Engine) -> None:
    state = ConversationState()
    engine.respond(state, "I loved Star Wars")
    engine.respond(state, "I didn't like psycho")
    engine.respond(state, "the first")
    assert state.disliked == ["107"] and "107" not in state.history


def test_questions_belong_to_their_own_session(engine: Engine) -> None:
    alice, bob = ConversationState(), ConversationState()
    engine.respond(alice, "I loved star ws")
    engine.respond(bob, "I loved Godfather 2")
    engine.respond(bob, "the first")  # not an answer for bob: no question of his is open
    assert alice.pending and not bob.pending and bob.history == ["106"]
    engine.respond(alice, "the first")
    assert alice.history == ["101"]


def test_a_click_on_a_choice_adds_that_film_through_the_ui_handler(engine: Engine) -> None:
    app = App(engine, {})
    session = Session()
    app.chat("I loved star ws", session)
    radio = app.question(session)
    assert radio.visible and [value for _, value in radio.choices] == ["101", "103", NEITHER_CHOICE]

    app.choose("103", session)

    assert session.state.history == ["103"] and not session.state.pending
    assert app.question(session).visible is False
    assert "Added Star Kid (1997) to your history." in html.unescape(str(session.messages[-4]["content"]))


def test_neither_by_click_adds_nothing(engine: Engine) -> None:
    app = App(engine, {})
    session = Session()
    app.chat("I loved star ws", session)
    app.choose(NEITHER_CHOICE, session)
    assert session.state.history == [] and not session.state.pending


# --- the corpus ----------------------------------------------------------------------------------------------------


def test_the_generated_corpus_meets_the_targets_on_a_small_catalog(engine: Engine) -> None:
    cases = make_corpus(engine.catalog, mentions=200, negatives=50, seed=3)
    assert sum(len(c.intended) for c in cases) >= 200 and sum(not c.intended for c in cases) == 50
    assert all(c.text for c in cases) and make_corpus(engine.catalog, 200, 50, seed=3) == cases  # seeded

    result = evaluate(engine.catalog, cases)

    assert result["precision"] >= TARGETS["precision"] and result["recall"] >= TARGETS["recall"], result["errors"]
    assert result["negatives_nothing_added"] == 1.0
