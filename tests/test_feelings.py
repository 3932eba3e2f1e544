"""Feelings per title and requests as people say them (issue 25): each title's feeling from its own clause, moods
and occasions through `face_app.dialogue.MOODS`, negations, and what the engine does with them (the history, the
disliked list, the reply that says how it read the message). On the small invented catalog, with the real title
matching; and the phrasing sets scored on the shipped catalog by `bench.phrasings`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from catalog_fixture import SmallReadout, items_frame

from bench.phrasings import SET, score
from face_app.arms import EmbeddingRecommender
from face_app.catalog import Catalog
from face_app.dialogue import ConversationState, parse
from face_app.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
GLASS, IRON, FERRY = "1", "4", "2"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(items_frame(), popularity=np.arange(12, 0, -1))


@pytest.mark.parametrize(("message", "expected"), [
    ("I hated Glass Harbor but loved Iron Verdict", {GLASS: "dislike", IRON: "like"}),
    ("Glass Harbor was boring, Iron Verdict was great", {GLASS: "dislike", IRON: "like"}),
    ("not a fan of Glass Harbor; Iron Verdict though", {GLASS: "dislike", IRON: "like"}),
    ("loved Glass Harbor, didn't like Iron Verdict", {GLASS: "like", IRON: "dislike"}),
    ("I loved Glass Harbor and hated Iron Verdict", {GLASS: "like", IRON: "dislike"}),
    ("I thought Glass Harbor was bad and Iron Verdict was good", {GLASS: "dislike", IRON: "like"}),
    ("Glass Harbor and Iron Verdict were both terrible", {GLASS: "dislike", IRON: "dislike"}),
    ("I loved Glass Harbor, Iron Verdict and The Night Ferry", {GLASS: "like", IRON: "like", FERRY: "like"}),
    ("Glass Harbor, not for me. Iron Verdict? loved it", {GLASS: "dislike", IRON: "like"}),
    ("I've seen Glass Harbor, and Iron Verdict was dreadful", {GLASS: "seen", IRON: "dislike"}),
    ("Glass Harbor", {GLASS: "like"}),
])
def test_each_title_gets_the_feeling_of_its_own_clause(catalog: Catalog, message: str, expected: dict) -> None:
    assert parse(message, catalog).feelings == expected


@pytest.mark.parametrize(("message", "genres", "no_genres", "mood"), [
    ("something light and funny", ("Comedy",), (), "lighter"),
    ("something scary", ("Horror",), (), "darker"),
    ("nothing scary please", (), ("Horror",), None),
    ("something for my kids", ("Children's",), (), "lighter"),
    ("something funny but not for kids", ("Comedy",), ("Children's",), "lighter"),
    ("not too dark", (), (), "lighter"),
    ("a tearjerker", ("Drama", "Romance"), (), None),
    ("Glass Harbor was fun", (), (), None),  # a feeling about a title, not a request
])
def test_moods_and_occasions_read_by_the_table(catalog: Catalog, message: str, genres, no_genres, mood) -> None:
    request = parse(message, catalog)
    assert (request.genres, request.no_genres, request.mood) == (genres, no_genres, mood)


def test_the_engine_keeps_each_feeling_and_says_how_it_read_the_message(catalog: Catalog) -> None:
    readout = SmallReadout()
    engine = Engine(catalog, readout, {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)}, n=3, pool=12)
    state = ConversationState()
    reply = engine.respond(state, "I hated Glass Harbor but loved Iron Verdict")
    assert state.history == [IRON] and state.disliked == [GLASS] and state.liked == [IRON]
    assert "I won't suggest Glass Harbor" in reply.text and "Added Iron Verdict" in reply.text
    assert GLASS not in {r.item_id for r in reply.recommendations}
    reply = engine.respond(state, "something light and funny")
    assert "‘light and funny’ as Comedy, lighter" in reply.text
    assert reply.recommendations and all("Comedy" in r.genres for r in reply.recommendations)


@pytest.mark.parametrize("name", ["phrasings.json", "phrasings-heldout.json"])
def test_the_phrasing_sets_read_on_the_shipped_catalog(name: str) -> None:
    """Both sets on the ML-100k catalog: most titles get their intended feeling and most requests are read (a
    parser that read one feeling per message scored titles 0.60 / 0.61 on the first set:
    bench/phrasings-before.json)."""
    from face_app.bundle import Bundle
    from face_app.datasets import load_dataset

    bundle = Bundle.load(ROOT / "assets" / "ml-100k")
    dataset = load_dataset(bundle.dataset["source"], paths=bundle.dataset.get("paths"))
    shipped, _ = Catalog.from_dataset(dataset, list(bundle.descriptors.item_ids))
    messages = json.loads((SET.parent / name).read_text())["messages"]
    result = score(messages, lambda text: parse(text, shipped))
    for part in ("titles", "requests"):
        assert result[part]["all"]["precision"] >= 0.95 and result[part]["all"]["recall"] >= 0.95, result[part]
