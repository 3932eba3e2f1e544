"""The read-out trained for words (training/readout.py), its display rule (face_app.descriptors.Display) and the
suitability rules (training/suitability.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from face_app.descriptors import Display, choose_shown
from training.suitability import named_in, profanity_list, supported, unsuitable
from training.vocabulary import domain_words, film_words


def display(word_vectors: torch.Tensor, genre_vectors: torch.Tensor, item_genres: torch.Tensor,
            **settings: object) -> Display:
    defaults = {"candidates": 3, "min_words": 2, "min_fit": 0.2, "user_genres": 1}
    genres = genre_vectors.shape[0]
    return Display(**{**defaults, **settings}, word_vectors=word_vectors, genre_vectors=genre_vectors,
                   generic_vectors=torch.zeros(1, genre_vectors.shape[1]), item_genres=item_genres,
                   genre_prior=torch.full((genres,), 1 / genres),
                   user_hidden=torch.zeros(word_vectors.shape[0], dtype=torch.bool))


def test_the_library_list_and_our_supplement_mark_words_seen_on_the_shipped_cards() -> None:
    for word in ("porn", "anal", "negro", "rape", "slit", "heterosexual"):
        assert unsuitable(word), word
    assert unsuitable("rapes")  # a form of a listed word, by its lemma
    for word in ("comedy", "western", "cowboy", "submarine", "detective", "war"):
        assert not unsuitable(word), word
    assert "porn" in profanity_list()


def test_a_sensitive_word_is_supported_only_by_the_entitys_own_data() -> None:
    own = named_in("Dead Man Walking (1995) Drama")

    assert supported("dead", own)
    assert not supported("cancer", own)
    assert not supported("death", named_in("Toy Story Animation Children's Comedy"))


def test_fit_is_the_closeness_to_the_entitys_genre_less_the_mean_over_genres() -> None:
    genres = torch.eye(3)  # three orthogonal genre sentences
    words = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]), dim=-1)
    rule = display(words, genres, torch.tensor([[True, False, False]]))

    fit = rule.fit(torch.tensor([[True, False, False], [False, False, False]]))

    assert torch.allclose(fit[0], torch.tensor([1 - 1 / 3, 0 - 1 / 3, 0.0]), atol=1e-6)  # "film"-like word: 0
    assert torch.equal(fit[1], torch.zeros(3))  # an entity without genres scores nothing


def test_a_word_close_to_any_film_scores_no_more_than_its_closeness_to_the_genre_over_that() -> None:
    genres = torch.eye(3)
    words = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]]), dim=-1)
    rule = display(words, genres, torch.tensor([[True, False, False]]))
    rule.generic_vectors = F.normalize(torch.tensor([[1.0, 0.0, 1.0]]), dim=-1)  # "a film" lies between genres

    fit = rule.fit(torch.tensor([[True, False, False]]))[0]

    assert fit[1] <= 0  # as close to "a film" as to its best genre: fits any film
    assert fit[0] > 0.25


def test_a_users_genres_are_those_their_history_holds_most_above_the_catalogs_share() -> None:
    table = torch.tensor([[True, False], [True, False], [True, True], [False, True]])
    rule = display(torch.zeros(1, 2), torch.eye(2), table, user_genres=1)
    rule.genre_prior = torch.tensor([0.9, 0.1])  # genre 0 is everywhere, genre 1 rare

    chosen = rule.history_genres([0, 2, 3])  # genre 0 twice, genre 1 twice

    assert chosen.tolist() == [False, True]


def test_choose_shown_ranks_the_concepts_candidates_by_fit_and_stops_at_the_threshold() -> None:
    rule = display(torch.zeros(6, 2), torch.eye(2), torch.zeros(1, 2, dtype=torch.bool), candidates=2,
                   min_words=2, min_fit=0.5)
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0, 0.0, 0.7],   # concept 0's candidates: words 0, 1
                           [0.0, 0.0, 0.9, 0.8, 0.0, 0.0]])  # concept 1's: words 2, 3
    fit = torch.tensor([0.1, 0.9, 0.6, 0.3, 1.0, 0.99])  # word 4 is never a candidate, word 5 only third

    assert choose_shown(scores, fit, torch.arange(6), k=4, display=rule) == [1, 2]
    rule.min_fit = 0.95  # none passes: the best are shown up to min_words
    assert choose_shown(scores, fit, torch.arange(6), k=4, display=rule) == [1, 2]


def test_choose_shown_takes_one_word_per_group_and_skips_blocked_words() -> None:
    rule = display(torch.zeros(4, 2), torch.eye(2), torch.zeros(1, 2, dtype=torch.bool), candidates=4,
                   min_words=3, min_fit=0.0)
    scores = torch.ones(1, 4)
    fit = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([0, 0, 2, 3])  # words 0 and 1 are forms of one word

    assert choose_shown(scores, fit, groups, k=3, display=rule) == [0, 2, 3]
    assert choose_shown(scores, fit, groups, k=3, display=rule, blocked=lambda w: w == 0) == [1, 2, 3]


def test_the_film_vocabulary_keeps_words_close_to_one_genre_not_to_all() -> None:
    anchors = torch.eye(3)
    words = ["cowboy", "film", "ghost", "laptop"]
    embeddings = F.normalize(torch.tensor([[1.0, 0.05, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.1, 0.1, 0.1]]),
                             dim=-1)

    kept = film_words(words, embeddings, anchors, share=0.5)

    assert [words[i] for i in kept] == ["cowboy", "ghost"]


def test_domain_words_are_the_genre_and_era_words_the_codebook_cannot_spell_that_minilm_reads_whole() -> None:
    """`domain_words`: "thriller" and "noir" (SmolLM2 reads " thr" "iller", " no" "ir") join; a genre already in
    the codebook ("comedy"), short pieces of a name ("sci fi"), "film" and a word MiniLM splits ("nineties":
    "nine" "##ties") do not."""
    minilm = {"thriller": 1, "noir": 2, "comedy": 3, "sixties": 4, "fifties": 5, "sci": 6, "film": 7}
    added = domain_words(["Comedy", "Film-Noir", "Sci-Fi", "Thriller", "Film-Noir"], ["comedy", "fifties"], minilm)
    assert added == ["noir", "thriller", "sixties"]
    assert domain_words(["Thriller"], ["thriller"], minilm) == ["fifties", "sixties"]


def test_no_word_the_shipped_bundle_can_show_is_on_the_profanity_list_or_an_unsupported_sensitive_word() -> None:
    from pathlib import Path

    from face_app.descriptors import Descriptors
    from training.suitability import SENSITIVE_SEEDS
    from training.vocabulary import normal_form

    readout = Descriptors.load(Path(__file__).parents[1] / "assets" / "ml-100k" / "readout")
    listed = profanity_list()

    # a visitor's fold-in can reach any vocabulary word, so every one is checked, not only the precomputed chips
    assert not [w for w in readout.words if unsuitable(w)]
    assert not [w for w in readout.words if w in listed]
    assert readout.display is not None, "the shipped read-out has no display rule"
    hidden = {w for w, h in zip(readout.words, readout.display.user_hidden.tolist(), strict=True) if h}
    seeds = {normal_form(s) for group in SENSITIVE_SEEDS.values() for s in group}
    assert {w for w in readout.words if normal_form(w) in seeds} <= hidden
    for user_id in readout.user_ids:
        assert not set(readout.for_user(user_id)) & hidden, user_id
    assert not set(readout.describe_history(readout.item_ids[:40])) & hidden


def test_no_word_a_reader_marked_unsuitable_is_shown_where_it_was_judged_or_to_any_user() -> None:
    import json
    from pathlib import Path

    from face_app.descriptors import Descriptors

    root = Path(__file__).parents[1]
    readout = Descriptors.load(root / "assets" / "ml-100k" / "readout")
    sheet = json.loads((root / "bench" / "descriptor-judgments.json").read_text())
    hidden = {w for w, h in zip(readout.words, readout.display.user_hidden.tolist(), strict=True) if h}
    marked = [(kind, entity, word) for kind, entities in sheet["judgments"].items()
              for entity, marks in entities.items() for word, mark in marks.items() if mark["label"] == "unsuitable"]
    assert len(marked) >= 20  # the sheet's readers did mark some: this test reads real marks

    for kind, entity, word in marked:
        shown = readout.for_item(entity) if kind == "items" else readout.for_user(entity)
        assert word not in shown, (kind, entity, word)
        assert word not in readout.words or word in hidden, word  # never on a user, a persona or a visitor


def test_a_refresh_reads_the_cards_own_build_section_and_limitations() -> None:
    from training.refresh import old_section

    card = "# b\n\nintro\n\n## How it was built\n\n```\ncmd\n```\n\n**Refreshed 2026-01-01** (...)\n\n## Results\n\n" \
           "x\n\n## Limitations\n\n- one\n- two\n\n## Data terms and citations\n"

    build = old_section(card, "How it was built", "Results")

    assert build == ["```", "cmd", "```", "", "**Refreshed 2026-01-01** (...)"]
    assert old_section(card, "Limitations", "Data terms and citations") == ["- one", "- two"]
    assert old_section(card, "Missing", "Results") == []


def test_the_genre_name_term_adds_closeness_to_the_genres_own_name() -> None:
    genres = torch.eye(3)
    # word 0 sits between the genre sentence and the genre's name; word 1 on the sentence alone
    words = F.normalize(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]), dim=-1)
    sentences = torch.cat([genres, torch.zeros(3, 1)], dim=1)
    names = F.normalize(torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]), dim=-1)
    rule = display(words, sentences, torch.tensor([[True, False, False]]))
    entity = torch.tensor([[True, False, False]])
    assert rule.fit(entity)[0, 0] < rule.fit(entity)[0, 1]  # by the sentences alone, word 1 leads
    rule.name_vectors, rule.name_weight = names, 1.5
    assert rule.fit(entity)[0, 0] > rule.fit(entity)[0, 1]  # its closeness to the name puts word 0 first


def test_a_historys_words_lean_to_the_words_its_films_cards_show() -> None:
    rule = display(torch.eye(4), torch.eye(4), torch.tensor([[True, False, False, False]] * 3), user_genres=1)
    cards = torch.tensor([[2, 1, -1], [2, -1, -1], [3, 2, -1]])  # three films' shown words, -1 padded
    assert torch.allclose(rule.card_share(cards, [0, 1, 2]), torch.tensor([0.0, 1 / 3, 1.0, 1 / 3]))
    plain = rule.history_fit(cards, [0, 1, 2])
    rule.card_weight = 1.0
    leaning = rule.history_fit(cards, [0, 1, 2])
    assert torch.allclose(leaning - plain, rule.card_share(cards, [0, 1, 2]))
    assert int(leaning.argmax()) in (0, 2) and leaning[2] > plain[2]


def test_a_centred_card_share_puts_what_sets_a_taste_apart_before_what_every_taste_shares() -> None:
    """Word 2 is on every card of this history and of an average one; word 3 on a third of this history's cards and
    on no average one. By the card share alone word 2 leads; centred on the catalog users' mean share, word 3."""
    rule = display(torch.eye(4), torch.eye(4), torch.tensor([[True, False, False, False]] * 3), user_genres=1,
                   card_weight=1.0)
    cards = torch.tensor([[2, 1, -1], [2, -1, -1], [3, 2, -1]])
    shared = rule.history_fit(cards, [0, 1, 2])
    assert shared[2] > shared[3]
    rule.card_prior, rule.card_centre = torch.tensor([0.0, 0.2, 1.0, 0.0]), 1.0
    centred = rule.history_fit(cards, [0, 1, 2])
    assert centred[3] > centred[2]
    assert torch.allclose(shared - centred, rule.card_prior)


def test_a_recent_card_share_reads_the_latest_films_cards_and_the_whole_historys_genres() -> None:
    rule = display(torch.eye(4), torch.eye(4), torch.tensor([[True, False, False, False]] * 2
                                                            + [[False, True, False, False]]), user_genres=1,
                   card_weight=1.0)
    cards = torch.tensor([[2, -1], [2, -1], [3, -1]])
    whole = rule.history_fit(cards, [0, 1, 2])
    rule.card_recent = 1
    recent = rule.history_fit(cards, [0, 1, 2])
    assert whole[2] > whole[3] and recent[3] > recent[2]  # the latest film's card leads
    genres_only = rule.fit(rule.history_genres([0, 1, 2])[None])[0]
    assert torch.allclose(recent - genres_only, torch.tensor([0.0, 0.0, 0.0, 1.0]))  # genres: the whole history


def test_a_cards_era_term_names_the_films_decade_and_nothing_for_a_film_without_a_year() -> None:
    import pandas as pd

    from training.readout import era_scores

    items = pd.DataFrame({"year": pd.array([1965, 1995, None, 1910], dtype="Int64")})
    words = ["sixties", "comedy", "nineties", "eighties"]
    scores = era_scores(items, words)
    assert scores.tolist() == [[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_a_users_genres_by_share_are_what_the_history_holds_most_by_lift_what_sets_it_apart() -> None:
    items = torch.tensor([[True, False], [True, False], [True, False], [False, True]])  # a common and a rare genre
    rule = display(torch.eye(2), torch.eye(2), items, user_genres=1)
    rule.genre_prior = torch.tensor([0.9, 0.1])
    assert rule.history_genres([0, 1, 2, 3]).tolist() == [False, True]  # lift: the rare genre
    rule.genre_rule = "share"
    assert rule.history_genres([0, 1, 2, 3]).tolist() == [True, False]  # share: three films of four


def test_what_the_base_llm_reads_in_a_title_is_one_pass_per_film_centred_and_cached(tmp_path, face_app_cache) -> None:
    import pandas as pd

    from face_app.llm import load_tokenizer
    from training.film_knowledge import film_prompt, film_word_scores, word_tokens

    items = pd.DataFrame({"title": ["Toy Story", "Fargo"], "year": pd.array([1995, None], dtype="Int64"),
                          "genres": [["Animation", "Comedy"], ["Crime"]]})
    assert film_prompt("Toy Story", 1995, ["Animation", "Comedy"]).endswith(
        "the movie Toy Story (1995), a animation, comedy film:")
    assert "Fargo, a crime film" in film_prompt("Fargo", pd.NA, ["Crime"])  # no year when unknown
    words = ["comedy", "crime", "snow", "toy", "thriller"]
    tokens, whole = word_tokens(load_tokenizer(), words)
    assert len(set(tokens.tolist())) == 5 and whole.tolist() == [True, True, True, True, False]  # " thr" "iller"
    scores = film_word_scores(items, words, base="tiny-random", cache=tmp_path)
    assert scores.shape == (2, 5) and torch.isfinite(scores).all()
    assert not torch.allclose(scores[0, :4], scores[1, :4])  # the prompt's film changes what the model expects
    assert scores[:, 4].eq(0).all()  # a word of several tokens: no next-token score of its own
    assert len(list((tmp_path / "film-words").glob("*.safetensors"))) == 1
    assert torch.equal(film_word_scores(items, words, base="tiny-random", cache=tmp_path), scores)


def test_the_title_term_says_which_words_a_films_own_title_holds_centred_per_word() -> None:
    """`title_word_scores`: a word close to one film's title gains for that film alone; a word close to every
    title gains nothing (each word's scores are centred over the catalog's titles)."""
    import pandas as pd

    from training.film_knowledge import plain_title, title_word_scores

    assert plain_title("Firm, The") == "The Firm"
    assert plain_title("Secret Agent, The (1996)") == "The Secret Agent (1996)"
    assert plain_title("Toy Story") == "Toy Story"
    axes = {"The Poet": [1.0, 0.0, 0.0], "Taxi": [0.0, 1.0, 0.0]}

    class Encoder:  # titles and words on known axes; "film" is as close to every title
        def cached_encode(self, texts):
            return torch.tensor([axes[t] for t in texts])

    words = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]), dim=-1)
    scores = title_word_scores(pd.DataFrame({"title": ["Poet, The", "Taxi"]}), words, Encoder())
    assert scores.shape == (2, 3) and torch.allclose(scores.sum(0), torch.zeros(3), atol=1e-6)
    assert scores[0, 0] > 0 > scores[1, 0] and scores[1, 1] > 0 > scores[0, 1]  # "poetry" for the poet, "taxi" for Taxi
    assert torch.allclose(scores[:, 2], torch.zeros(2), atol=1e-6)  # close to both titles alike: nothing


def _card_inputs() -> tuple[Display, torch.Tensor, dict[str, torch.Tensor]]:
    """Two films (genres 0 and 1 of three orthogonal genre sentences), four words, with given LLM, title and era
    terms and concept scores, for the card features and orders."""
    from training.readout import card_features

    words = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    table = torch.tensor([[True, False, False], [False, True, False]])
    rule = display(words, torch.eye(3), table, name_vectors=torch.eye(3), name_weight=1.5)
    scores = torch.tensor([[[0.9, 0.1, 0.5, 0.0]], [[0.2, 0.8, 0.3, 0.1]]])  # [I, K=1, V]
    lm = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    title = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    era = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    neighbours = torch.tensor([[1], [0]])
    return rule, table, card_features(rule, table, scores, neighbours, lm, title, era)


def test_the_hand_set_card_order_is_the_proxy_plus_the_weighted_terms_and_learned_weights_replace_it() -> None:
    from training.config import FACEConfig
    from training.readout import card_order

    rule, table, features = _card_inputs()
    hand = FACEConfig(display_name_weight=1.5, display_lm_weight=0.07, display_title_weight=1.0,
                      display_era_weight=1.0)
    expected = rule.fit(table) + 0.07 * features["lm"] + features["title"] + features["era"]
    assert torch.allclose(card_order(features, hand), expected, atol=1e-6)
    # the same terms as learned weights give the same order; a learned order reads each term under its own name
    same = FACEConfig(display_card_weights={"genre": 1.0, "name": 1.5, "lm": 0.07, "title": 1.0, "era": 1.0})
    assert torch.allclose(card_order(features, same), expected, atol=1e-6)
    # the training sheet's "hand-set" order stays hand-set when the config ships learned weights
    from bench.display_learn import hand_set

    shipped = FACEConfig(display_name_weight=1.5, display_lm_weight=0.07, display_title_weight=1.0,
                         display_era_weight=1.0, display_card_weights={"bias": -1.0, "own": 2.0})
    assert torch.allclose(card_order(features, hand_set(shipped)), expected, atol=1e-6)
    own_only = card_order(features, FACEConfig(display_card_weights={"bias": -1.0, "own": 2.0}))
    assert torch.allclose(own_only, torch.tensor([[0.8, -0.8, 0.0, -1.0], [-0.6, 0.6, -0.4, -0.8]]), atol=1e-6)
    # a neighbour's concepts: film 0's `near` is film 1's closeness
    assert torch.allclose(features["near"], torch.tensor([[0.2, 0.8, 0.3, 0.1], [0.9, 0.1, 0.5, 0.0]]))


def test_card_weights_name_only_known_terms() -> None:
    import pytest
    from pydantic import ValidationError

    from training.config import FACEConfig

    with pytest.raises(ValidationError, match="unknown terms"):
        FACEConfig(display_card_weights={"genre": 1.0, "popularity": 2.0})


def test_a_learned_threshold_shows_more_words_the_lower_it_is_and_expects_four_by_the_poisson_binomial() -> None:
    from bench.display_learn import expected_card, threshold_table

    assert expected_card([1.0, 1.0, 1.0, 1.0]) == 1.0
    assert abs(expected_card([0.5] * 4) - 1 / 16) < 1e-9
    assert abs(expected_card([0.5] * 5) - 6 / 32) < 1e-9
    assert expected_card([0.9, 0.9, 0.9]) == 0.0
    logits = torch.logit(torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.2, 0.1, 0.05]]))
    pool = torch.ones_like(logits, dtype=torch.bool)
    table = threshold_table(logits, pool, torch.arange(10), {"head": [0]}, [0.3, 0.42, 0.5], k=8, min_words=5)
    assert [row["words_per_card"] for row in table] == [7, 6, 5]
    assert table[0]["expected_fit"] < table[1]["expected_fit"] < table[2]["expected_fit"]
    assert table[0]["expected_with_4"] > table[2]["expected_with_4"]


def test_the_training_films_are_drawn_apart_from_the_scored_ones_half_among_the_most_rated() -> None:
    import numpy as np

    from bench.display_learn import draw_films

    popularity = np.arange(1000, 0, -1, dtype=float)  # row 0 the most rated
    excluded = set(range(0, 400, 2))
    films = draw_films(popularity, excluded, seed=3, films=40, top=100)
    assert not set(films) & excluded and len(set(films)) == 40
    assert sum(f < 100 for f in films) == 20


def test_a_words_prior_is_smoothed_towards_all_marks_and_never_learned_from_its_own_films_marks() -> None:
    import numpy as np

    from bench.display_learn import out_of_fold_prior, word_log_odds

    words = ["satire", "satire", "satire", "comedy", "comedy", "humor"]
    labels = np.array([0, 0, 0, 1, 1, 1])
    odds, default = word_log_odds(words, labels, prior_marks=1.0)
    assert default == 0.0  # half of all marks fit
    assert np.isclose(odds["satire"], np.log(0.5 / 3.5)) and np.isclose(odds["comedy"], np.log(2.5 / 0.5))
    # each film's marks get the prior of the other films' marks only: "humor", judged on film 2 alone, gets the
    # other films' default (two of their four marks fit); "satire" on film 0 gets films 1 and 2's two "no"
    groups = np.array([0, 1, 2, 0, 1, 2])
    prior = out_of_fold_prior(words, labels, groups, folds=3)
    assert prior[5] == 0.0 and odds["humor"] > 0
    assert np.isclose(prior[0], np.log(0.5 / 2.5)) and np.isclose(prior[3], np.log(1.5 / 0.5))


def test_the_word_term_reads_the_learned_prior_and_the_default_for_an_unjudged_word(tmp_path) -> None:
    import json

    from training.readout import word_prior_vector

    path = tmp_path / "learned.json"
    path.write_text(json.dumps({"word_prior": {"satire": -2.0, "comedy": 1.5}, "word_default": -0.5}))
    assert word_prior_vector(["comedy", "laptop", "satire"], path).tolist() == [1.5, -0.5, -2.0]


def test_in_two_rounds_a_little_rated_film_takes_its_first_word_before_a_popular_film_its_second() -> None:
    """`read_out_cards`: word 0 may sit on one film of two (`film_share_cap` 0.5). In one round the popular film,
    read first, takes it as its second word and the little-rated film, whose best word it is, goes without; with
    `display_item_first_words` 1 each film first takes its best word, and the popular film's second is word 2."""
    from training.config import FACEConfig
    from training.readout import read_out_cards

    rule = display(torch.zeros(4, 2), torch.eye(2), torch.zeros(2, 2, dtype=torch.bool), candidates=4,
                   min_words=1, min_fit=-1.0)
    pools = [torch.ones(1, 4), torch.ones(1, 4)]
    order = torch.tensor([[0.8, 0.9, 0.7, -5.0],    # the popular film: word 1, then 0, then 2
                          [0.9, -5.0, -5.0, 0.5]])  # the little-rated film: word 0, then 3
    genre, degree, groups = torch.zeros(4, dtype=torch.bool), torch.tensor([9.0, 1.0]), torch.arange(4)
    one_round = FACEConfig(film_share_cap=0.5, exposure_cap=1.0)
    words, exposure = read_out_cards(pools, order, groups, 2, rule, genre, degree, one_round)
    assert words.tolist() == [[1, 0], [3, -1]]
    assert torch.allclose(exposure, torch.tensor([0.9, 0.9, 0.0, 0.1]))
    two_rounds = FACEConfig(film_share_cap=0.5, exposure_cap=1.0, display_item_first_words=1)
    words, exposure = read_out_cards(pools, order, groups, 2, rule, genre, degree, two_rounds)
    assert words.tolist() == [[1, 2], [0, 3]]
    assert torch.allclose(exposure, torch.tensor([0.1, 0.9, 0.9, 0.1]))
