"""bench.descriptor_fit: the judged sheet's sample, its marks and the score of a read-out's shown words."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bench.descriptor_fit import draw_sample, merge, score


class FakeContext:
    """What `score` reads of a bundle: the shown words per entity and the proxy (here: 1 for "good" words)."""

    def __init__(self, shown: dict[str, dict[str, list[str]]]) -> None:
        self.shown_words = shown
        self.readout = SimpleNamespace(words=["a", "b"])
        self.bundle = SimpleNamespace(name="fake")
        self.source = "fake/readout"

    def shown(self, kind: str, entity: str) -> list[str]:
        return self.shown_words[kind][entity]

    def proxy(self, kind: str, entity: str, words: list[str]) -> list[float]:
        return [1.0 if w.startswith("good") else 0.0 for w in words]


def sheet(items: dict[str, dict[str, str]], random: dict[str, list[str]]) -> dict:
    return {"seed": 7, "sample": {"items": list(items), "users": []},
            "random": {"items": random, "users": {}},
            "judgments": {"items": {e: {w: {"label": label, "round": "initial"} for w, label in marks.items()}
                                    for e, marks in items.items()}, "users": {}}}


def test_score_counts_shown_and_random_words_by_their_marks() -> None:
    marks = {"1": {"good1": "fit", "good2": "fit", "good3": "fit", "good4": "fit", "bad": "no", "rnd": "no",
                   "rude": "unsuitable"},
             "2": {"good5": "fit", "bad2": "no", "rnd2": "fit"}}
    context = FakeContext({"items": {"1": ["good1", "good2", "good3", "good4", "bad", "rude"], "2": ["good5", "bad2"]},
                           "users": {}})

    result = score(context, sheet(marks, {"1": ["rnd"], "2": ["rnd2"]}))["per_kind"]["items"]

    assert result["shown_fit"] == pytest.approx(5 / 8)
    assert result["shown_unsuitable"] == 1
    assert result["entities_with_4_fitting"] == pytest.approx(0.5)
    # film "1" (the most-rated half, drawn first) has 4 fitting words; film "2" (the other half) is short of 4
    assert (result["short_of_4_most_rated_half"], result["short_of_4_other_half"]) == (0, 1)
    assert result["random_fit"] == pytest.approx(0.5)
    # 6 fitting words x 3 others: the five "good" ones win every pair, "rnd2" (proxy 0) ties its three (half each)
    assert result["proxy_auc_fit_vs_no"] == pytest.approx((15 + 1.5) / 18)


def test_score_stops_on_shown_words_never_judged_unless_iterating() -> None:
    context = FakeContext({"items": {"1": ["good1", "new"]}, "users": {}})
    judged = sheet({"1": {"good1": "fit"}}, {})

    with pytest.raises(SystemExit, match="never judged"):
        score(context, judged)
    result = score(context, judged, allow_unjudged=True)
    assert result["unjudged"] == {"items": {"1": ["new"]}} and not result["complete"]


def test_merge_adds_marks_and_never_changes_one_already_judged() -> None:
    judged = sheet({"1": {"good1": "fit"}}, {})

    added = merge(judged, {"reader": "D", "judgments": [
        {"kind": "item", "id": "1", "word": "good1", "label": "no"},
        {"kind": "item", "id": "1", "word": "new", "label": "fit"}]}, "later-1")

    assert added == 1
    assert judged["judgments"]["items"]["1"]["good1"]["label"] == "fit"
    assert judged["judgments"]["items"]["1"]["new"] == {"label": "fit", "round": "later-1", "reader": "D"}
    with pytest.raises(ValueError, match="unknown label"):
        merge(judged, {"judgments": [{"kind": "item", "id": "1", "word": "x", "label": "maybe"}]}, "later-1")


def test_the_sample_takes_half_its_films_from_the_most_rated_and_is_fixed_by_its_seed() -> None:
    popularity = np.arange(1000, 0, -1).astype(float)  # item i is the i-th most rated
    ids = [str(i) for i in range(1000)]

    sample = draw_sample(popularity, [f"u{i}" for i in range(50)], ids, seed=3, films=20, users=5, top=200)

    assert sum(int(i) < 200 for i in sample["items"]) == 10
    assert len(set(sample["items"])) == 20 and len(set(sample["users"])) == 5
    assert sample == draw_sample(popularity, [f"u{i}" for i in range(50)], ids, seed=3, films=20, users=5, top=200)


def test_a_pending_round_for_several_read_outs_draws_each_unjudged_word_once_with_as_many_random_words() -> None:
    from bench.descriptor_fit import blind_batches

    context = FakeContext({"items": {"1": ["good1", "new1"]}, "users": {}})
    context.readout = SimpleNamespace(words=[f"w{i}" for i in range(50)] + ["good1", "new1", "new2"])
    context.about = lambda kind, entity: {"film": "Film 1"}
    lever = SimpleNamespace(for_item=lambda entity: ["new1", "new2", "good1"])
    judged = sheet({"1": {"good1": "fit"}}, {})

    entries, drawn = blind_batches(context, judged, np.random.default_rng(0), only_unjudged=True, others=[lever])

    (entry,) = entries
    extra = drawn["items"]["1"]
    assert sorted(entry["words"]) == sorted(["new1", "new2", *extra])  # the two unjudged words, once each
    assert len(extra) == 2 and not {"good1", "new1", "new2"} & set(extra)  # random words never shown nor judged
