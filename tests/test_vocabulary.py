"""The descriptor vocabulary rule, the hub correction and the word measures (training/vocabulary.py,
face_app.descriptors.hub_penalty), on constructed cases with known answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from face_app.descriptors import assign_words, hub_penalty
from training.vocabulary import (
    COMMON_SHARE,
    describing,
    describing_words,
    lifts,
    normal_form,
    one_per_form,
    own_group_lift,
    word_report,
)


def test_spellings_and_inflections_share_one_form():
    assert normal_form("humour") == normal_form("humor") == "humor"
    assert normal_form("comedies") == normal_form("comedy")
    assert normal_form("theatres") == normal_form("theatre") == normal_form("theater")
    assert normal_form("warns") == normal_form("warn")
    assert normal_form("favourite") == normal_form("favorite")
    # short words and words that only look like a variant stay apart
    assert normal_form("tour") == "tour" and normal_form("hour") == "hour"
    assert normal_form("war") != normal_form("warns")


def test_one_word_per_form_keeps_the_first_listed():
    words = ["humor", "comedy", "humour", "comedies", "drama", "theatre", "theater"]
    assert [words[i] for i in one_per_form(words)] == ["humor", "comedy", "drama", "theatre"]


def test_describing_words_are_nouns_and_adjectives():
    for word in ("comedy", "horror", "funny", "dark", "detective", "noir"):  # noir: unknown to the lexicon, kept
        assert describing(word), word
    for word in ("confirms", "warns", "predict", "respectively", "apr", "ibn"):
        assert not describing(word), word


def test_the_vocabulary_keeps_the_share_closest_to_the_profiles():
    words = ["comedy", "confirms", "horror", "drama", "romance", "humour", "humor"]
    torch.manual_seed(0)
    profiles = F.normalize(torch.randn(20, 8), dim=-1)
    near, far = profiles[:5].mean(0), -profiles.mean(0)
    vectors = torch.stack([near, near, far, near + 0.1 * far, far, near, near])  # humour/humor: one form
    kept = describing_words(words, F.normalize(vectors, dim=-1), profiles, share=0.5)
    # merged and filtered first: comedy, horror, drama, romance, humour (confirms is a verb, humor merges into
    # humour, listed first); then the half closest to the profiles
    # (drama is a little further than comedy and humour: near + 0.1 * far)
    assert [words[i] for i in kept] == ["comedy", "humour"]
    everything = describing_words(words, F.normalize(vectors, dim=-1), profiles, share=1.0)
    assert [words[i] for i in everything] == ["comedy", "horror", "drama", "romance", "humour"]


def test_the_hub_correction_frees_concepts_from_a_word_close_to_all_of_them():
    # word 0 is a hub: every concept is a little closer to it than to its own word
    torch.manual_seed(1)
    own = F.normalize(torch.randn(6, 16), dim=-1)
    hub = F.normalize(own.sum(0), dim=-1)
    codebook = torch.cat([hub[None], own])
    concepts = F.normalize(0.6 * hub + 0.4 * own, dim=-1)[:, None, :]  # [6, 1, 16]
    plain = assign_words(concepts, codebook)
    assert (plain[:, 0] == 0).all()  # the hub wins everywhere without the correction
    penalty = hub_penalty(concepts[:, 0], codebook, neighbours=3)
    assert penalty[0] == penalty.max()
    corrected = assign_words(concepts, codebook, penalty=penalty)
    assert corrected[:, 0].tolist() == list(range(1, 7))  # each concept gets its own word


def test_lift_of_words_tied_to_groups_and_of_random_words():
    groups = [["Horror"]] * 5 + [["Comedy"]] * 15
    tied = [["scary"]] * 5 + [["funny"]] * 15
    table = lifts(tied, groups, min_group=1)
    assert abs(table["scary"]["Horror"] - 4.0) < 1e-9  # P(Horror | scary) = 1 over P(Horror) = 0.25
    assert table["scary"]["Comedy"] == 0.0
    assert own_group_lift(tied, groups) > 1.3
    same = [["movie"]] * 20
    assert abs(own_group_lift(same, groups) - 1.0) < 0.1


def test_lifts_leave_out_groups_too_small_to_tell():
    groups = [["Horror"]] * 3 + [["Comedy"]] * 30
    words = [["scary"]] * 3 + [["funny"]] * 30
    assert set(lifts(words, groups, min_group=20)["scary"]) == {"Comedy"}


def test_word_report_names_common_words_that_tell_nothing():
    groups = [["Horror"]] * 10 + [["Comedy"]] * 10
    words = [["scary", "film"]] * 10 + [["funny", "film"]] * 10
    report = word_report(words, groups, ["scary", "funny", "film", "other", "more"], k=2, min_group=1)
    assert report["distinct_words"] == 3
    assert [w["word"] for w in report["common_uninformative"]] == ["film"]  # on 100% with lift 1 everywhere
    assert report["most_common"][0]["word"] == "film"
    assert all(w["share"] > COMMON_SHARE for w in report["common_uninformative"])
    assert report["own_group_lift"] > report["random_own_group_lift"] - 1e-9
