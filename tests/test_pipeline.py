"""The tiny config, end to end through the CLI, on the real ML-100k (a few hundred users)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from face_app.descriptors import Descriptors
from training.__main__ import main
from training.data import SplitData
from training.metrics import METRICS
from training.report import README_END, README_START

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


# `tiny_build` (tests/conftest.py): the whole tiny pipeline, built once per session and shared with test_app.py.


def test_tiny_build_writes_the_report_contract(tiny_build: Path) -> None:
    report = json.loads((tiny_build / "report.json").read_text())
    assert report["dataset"] == "tiny"
    assert report["data"]["users"] == 300
    served = ("LLM arm, guided by SASRec (served)", "LightGCN arm (served)")  # the chat's defaults guide the LLM
    assert set(report["models"]) == {"Pop", "LightGCN", "SASRec", "LightGCN+FACE", "LLM", *served}
    assert all(set(run) >= {"valid", "test"} for name in served for run in report["runs"][name])
    for values in report["models"].values():
        assert set(METRICS) <= set(values)
        assert all(0.0 <= values[m] <= 1.0 for m in METRICS)
        assert values["HR@1"] <= values["HR@5"] <= values["HR@10"] <= values["Recall@20"]
    assert set(report["timings"]) == {"data", "cf", "face", "index", "tune", "eval", "export"}
    assert report["seeds"] == [0]


def test_tiny_models_learn_more_than_popularity(tiny_build: Path) -> None:
    models = json.loads((tiny_build / "report.json").read_text())["models"]
    assert models["SASRec"]["NDCG@10"] > models["Pop"]["NDCG@10"]
    # a model that ranks at random hits the held-out item in its top 10 with probability 10 / items
    items = json.loads((tiny_build / "report.json").read_text())["data"]["items"]
    assert models["LightGCN"]["HR@10"] > 3 * 10 / items


def test_tiny_build_reports_a_collision_free_index(tiny_build: Path) -> None:
    index = json.loads((tiny_build / "report.json").read_text())["index"]
    assert index["levels"] == 3 and index["codebook_size"] == 32
    assert index["collisions"] == 0
    assert len(index["code_usage"]) == 3 and all(0.0 < u <= 1.0 for u in index["code_usage"])
    assert index["recon_loss"] > 0.0


def test_tiny_build_tunes_a_loadable_llm(tiny_build: Path) -> None:
    from face_app.decoder import ItemGenerator
    from face_app.prompts import recommend_prompt

    generator = ItemGenerator.load(tiny_build / "tune" / "model")
    spec = json.loads((tiny_build / "tune" / "model" / "generator.json").read_text())
    assert spec["user_descriptors"] == "face"  # the face stage ran first, so the descriptors task used its words
    assert spec["taste"] and spec["keep_layers"] == 1  # configs/tiny.yaml: the <taste> token, one layer kept
    assert [v["step"] for v in spec["training"]["valid_curve"]] == [20, 40]
    assert spec["training"]["precision"] in ("fp32", "bf16") and spec["training"]["machine"]["cpu"]
    adapter = tiny_build / "tune" / "model" / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 2_000_000  # LoRA and the index rows only, not the embedding matrices
    history = generator.index.item_ids[:3]
    prompt = recommend_prompt([generator.index.text(i) for i in history], taste=True)
    found = generator.recommend(prompt, k=5, exclude=history, history=history)
    assert len(found) == 5 and not set(history) & {item for item, _ in found}


def test_a_tuned_generator_is_merged_once_and_then_read_from_the_cache(tiny_build: Path) -> None:
    import shutil

    from face_app.decoder import ItemGenerator, merged_dir
    from face_app.prompts import recommend_prompt

    model_dir = tiny_build / "tune" / "model"
    merged = merged_dir(model_dir)
    shutil.rmtree(merged, ignore_errors=True)
    first = ItemGenerator.load(model_dir)  # base + LoRA merged, then cached
    assert (merged / "model.safetensors").exists()
    second = ItemGenerator.load(model_dir)  # read from the cache
    history = first.index.item_ids[:3]
    prompt = recommend_prompt([first.index.text(i) for i in history], taste=True)
    one = first.recommend(prompt, k=5, exclude=history, history=history)
    two = second.recommend(prompt, k=5, exclude=history, history=history)
    assert [i for i, _ in one] == [i for i, _ in two]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(one, two, strict=True))
    # another adapter is another entry
    copy = tiny_build / "copied-model"
    shutil.copytree(model_dir, copy, dirs_exist_ok=True)
    adapter = copy / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes() + b" ")
    assert merged_dir(copy) != merged
    shutil.rmtree(copy)


def test_tiny_build_renders_markdown_and_plots(tiny_build: Path) -> None:
    text = (tiny_build / "report.md").read_text()
    assert "| SASRec |" in text and "| total |" in text
    assert (tiny_build / "plots" / "LightGCN.png").stat().st_size > 1000
    assert (tiny_build / "cf" / "LightGCN" / "seed0" / "model.safetensors").exists()


def test_tiny_build_writes_descriptors_for_every_entity(tiny_build: Path) -> None:
    report = json.loads((tiny_build / "report.json").read_text())
    metrics = report["descriptors"]
    assert {"hit@10", "mrr", "random_hit@10", "random_mrr", "distinct_words", "k"} <= set(metrics)
    assert metrics["k"] == 8 and metrics["distinct_words"] > 50
    assert metrics["hit@10"] > metrics["random_hit@10"]
    described = json.loads((tiny_build / "face" / "descriptors.json").read_text())
    assert len(described["users"]) == 300 and len(described["items"]) == report["data"]["items"]
    assert all(len(set(words)) == 8 for words in described["items"].values())
    samples = report["descriptor_samples"]
    assert len(samples["items"]) == 12 and len(samples["users"]) == 5
    assert "## FACE descriptors" in (tiny_build / "report.md").read_text()


def test_fold_in_of_a_users_history_ranks_their_next_item_far_above_chance(tiny_build: Path) -> None:
    readout = Descriptors.load(tiny_build / "face" / "readout")
    data = SplitData.load(tiny_build / "data")
    ranks = []
    for user in range(data.n_users):
        history = [readout.item_ids[i] for i in data.history(user, "test")]
        scores = readout.fold_in(history) @ readout.item_embeddings.T
        scores[torch.from_numpy(data.history(user, "test"))] = -float("inf")
        ranks.append(int((scores > scores[data.test[user]]).sum()))
        words = readout.describe_history(history)
        assert len(set(words)) == readout.k and set(words) <= set(readout.words)
    # Chance puts the held-out item at about half the catalogue.
    assert np.median(ranks) < 0.25 * data.n_items
    user = 0
    own = readout.user_embeddings[user]
    folded = readout.fold_in([readout.item_ids[i] for i in data.train[user]])
    assert torch.cosine_similarity(own, folded, dim=0) > 0.5


def test_finished_stages_are_skipped(tiny_build: Path, capsys) -> None:
    before = (tiny_build / "report.json").read_text()
    assert main(["build", "--config", str(TINY), "--workdir", str(tiny_build)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipping") == 7
    assert (tiny_build / "report.json").read_text() == before


def test_changed_config_refuses_to_reuse_stages(tiny_build: Path, capsys) -> None:
    code = main(["build", "--config", str(TINY), "--workdir", str(tiny_build), "--set", "cf.seeds=[1]"])
    assert code == 2
    assert "stage 'cf'" in capsys.readouterr().err


def test_a_tune_setting_changes_only_the_stages_that_read_it(tiny_build: Path) -> None:
    from training.config import DEPENDS_ON, config_hash, load_config

    before, after = load_config(TINY), load_config(TINY, ["tune.max_steps=80"])
    changed = {stage for stage in DEPENDS_ON if config_hash(before, stage) != config_hash(after, stage)}
    assert changed == {"tune", "eval", "export"}  # continuing a tune never re-runs data, cf, face or index


def test_a_setting_added_later_keeps_the_stages_built_before_it_at_its_earlier_value() -> None:
    """`cf.sasrec.style` came after workdirs were built: at `sasrec` the stage hashes and run keys are those of a
    config without it (so a resumed build reuses its stages and runs), and `recbole` changes what reads SASRec."""
    import hashlib
    import json

    from training.cf import run_key
    from training.config import DEPENDS_ON, config_dict, config_hash, load_config

    plain, recbole = load_config(TINY), load_config(TINY, ["cf.sasrec.style=recbole"])
    values = config_dict(plain)
    del values["cf"]["sasrec"]["style"]
    before = hashlib.sha256(json.dumps({k: values[k] for k in DEPENDS_ON["face"]}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    assert config_hash(plain, "face") == before
    assert "style" not in run_key("SASRec", plain)["model"]
    assert run_key("SASRec", recbole)["model"]["style"] == "recbole"
    changed = {stage for stage in DEPENDS_ON if config_hash(plain, stage) != config_hash(recbole, stage)}
    assert changed == set(DEPENDS_ON) - {"data"}


def test_report_publishes_results_and_refreshes_the_readme_block(tiny_build: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nstale table\n{README_END}\nrest\n")
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    command = f"python -m training build --config {TINY.name}"
    args = ["report", "--workdir", str(tiny_build), "--out", str(out), "--build-command", command]
    assert main([*args, "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale table" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| SASRec |" in text and "(docs/results.md)" in text
    published = out.read_text()
    assert command in published and "| LightGCN |" in published
    assert (out.parent / "plots" / "SASRec.png").exists()


def test_tiny_bundle_has_a_model_card_from_its_report_and_real_conversations(tiny_build: Path) -> None:
    from face_app.bundle import Bundle
    from training.config import ExportConfig

    bundle = tiny_build / "bundle"
    card = (bundle / "README.md").read_text()
    report = json.loads((tiny_build / "report.json").read_text())
    for name, values in report["models"].items():  # the table is the report's, to four decimals, with its seeds
        seeds = ", ".join(str(run["seed"]) for run in report["runs"][name])
        assert f"| {name} | {seeds} | {values['HR@1']:.4f} |" in card
    assert "the tuned LLM at or above SASRec: HR@10" in card and "LightGCN+FACE above LightGCN" in card
    assert "configs/tiny.yaml" in card and "| tune |" in card and "Harper and Joseph A. Konstan" in card
    for name, messages in ExportConfig().conversations.items():  # each scripted chat, with its picks
        section = card.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for message in messages:
            assert f"**Visitor:** {message}" in section
        assert section.count("· by ") == 5 * len(messages)
    assert "Toy Story (1995)" in card and "<a_" in card
    # only facts of this build: its own commands and size, no figure of the ML-100k build
    assert "python -m training build --config " in card and "--workdir " + str(tiny_build) in card
    assert f"{report['data']['users']} users" in card and "943 users" not in card and "1682 items" not in card
    assert "tuned for" in card and "first 1 decoder layers" in card
    machines = json.loads((tiny_build / "machines.json").read_text())
    assert set(machines) == set(report["timings"]) and all(m["cores"] >= 1 for m in machines.values())
    Bundle.load(bundle)  # the card is listed in the manifest, so the bundle still verifies


def test_no_shipped_file_names_an_absolute_path_of_the_build_machine(tiny_build: Path) -> None:
    absolute_path = re.compile(r"^/[\w.-]+/")  # "/tmp/...", "/root/.cache/...": not a vocabulary entry like "/"

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for path in (tiny_build / "bundle").rglob("*.json"):
        absolute = [s for s in strings(json.loads(path.read_text())) if absolute_path.match(s) or str(tiny_build) in s]
        assert not absolute, f"{path.relative_to(tiny_build)}: {absolute[:2]}"


SECOND_DISPLAY = ["face.display_item_candidates=8", "face.display_item_neighbours=3", "face.display_lm=tiny-random",
                  "face.display_lm_weight=0.07", "face.display_name_weight=1.5", "face.display_card_weight=1.0",
                  "face.display_genre_rule=blend", "face.display_min_words=3", "face.display_min_fit=0.7",
                  "face.display_item_min_words=5", "face.display_item_min_fit=0.9", "face.display_era_weight=1.0",
                  "face.display_card_centre=1.0", "face.display_card_recent=3"]


@pytest.mark.parametrize("display", [[], SECOND_DISPLAY], ids=["first-display", "second-display"])
def test_the_readout_mode_face_stage_shows_only_suitable_words_by_the_display_rule(tiny_build: Path,
                                                                                     tmp_path: Path,
                                                                                     display: list[str]) -> None:
    """The face stage in `mode: readout` on the tiny build's LightGCN: a read-out with a display rule, 5 to 8 shown
    words per film (a user 3 to 8 under the second display), none of them unsuitable, the report counting shown
    words only; the second display's settings survive a save and a load."""
    import shutil

    from training.config import load_config
    from training.readout import run
    from training.suitability import unsuitable

    work = tmp_path / "work"
    for part in ("data", "cf"):
        shutil.copytree(tiny_build / part, work / part)
    overrides = ["face.mode=readout", "face.vocabulary=film", "face.suitable=true", "face.centre=true",
                 "face.profiles=rich-items", "face.epochs=1", "face.display_candidates=16", "face.film_share_cap=0.05"]
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", overrides + display)

    run(config, work)

    readout = Descriptors.load(work / "face" / "readout")
    assert readout.display is not None and readout.display.candidates == 16  # the configured display rule, saved
    shown = [readout.for_item(i) for i in readout.item_ids]
    assert all(5 <= len(words) <= 8 for words in shown)
    assert not {w for words in shown for w in words if unsuitable(w)}
    assert not [w for w in readout.words if unsuitable(w)]
    described = json.loads((work / "face" / "descriptors.json").read_text())
    assert described["items"][readout.item_ids[0]] == shown[0]  # shown words, no padding rows
    extra = json.loads((work / "face" / "report_extra.json").read_text())["descriptors"]
    assert extra["vocabulary"]["mode"] == "readout" and extra["readout"]["shown_per_item"][:5] == [0] * 5
    users = [readout.for_user(u) for u in readout.user_ids]
    assert all((3 if display else 5) <= len(words) <= 8 for words in users)
    if display:
        rule = readout.display
        assert rule.name_vectors is not None and rule.name_weight == 1.5 and rule.card_weight == 1.0
        assert rule.genre_rule == "blend" and rule.min_words == 3 and rule.candidates == 16
        # the catalog users' mean card share, saved: a visitor's words are centred on it as a dataset user's are
        assert rule.card_centre == 1.0 and rule.card_prior is not None
        assert rule.card_prior.shape == (len(readout.words),)
        data = SplitData.load(work / "data")
        expected = torch.stack([rule.card_share(readout.item_words, h.tolist()[-3:]) for h in data.train]).mean(0)
        assert rule.card_recent == 3 and torch.allclose(rule.card_prior, expected)
        # every user's words are the display rule's with the centred recent share; centring changes some of them
        from face_app.descriptors import choose_shown

        scores = readout.concept_scores(readout.user_embeddings, "users")
        changed = 0
        for user, history in enumerate(data.train):
            shown = readout.user_words[user][readout.user_words[user] >= 0].tolist()
            fit = rule.history_fit(readout.item_words, history.tolist())
            assert shown == choose_shown(scores[user], fit, readout.word_groups, readout.k, rule)
            plain = fit + rule.card_prior  # the same fit without the centring
            changed += shown != choose_shown(scores[user], plain, readout.word_groups, readout.k, rule)
        assert changed > 0


def test_the_served_rows_score_the_picks_a_chat_turn_shows(tiny_build: Path) -> None:
    """The report's served LLM row equals the hits of the chat engine's picks, recomputed turn by turn."""
    from face_app.dialogue import ConversationState
    from training.config import load_config
    from training.served import workdir_engine

    report = json.loads((tiny_build / "report.json").read_text())
    data = SplitData.load(tiny_build / "data")
    engine = workdir_engine(load_config(TINY), tiny_build, data)
    ids = data.items["item_id"].astype(str).tolist()
    targets = data.targets("test")
    hits, shown = [], set()
    for user in np.flatnonzero(targets >= 0):
        state = ConversationState()
        state.add_history([ids[i] for i in data.history(int(user), "test")])
        recs = engine.recommend(state, "llm", n=10)
        assert len(recs) == 10 and not {r.item_id for r in recs} & set(state.history)
        hits.append(ids[targets[user]] in {r.item_id for r in recs})
        shown.update(r.item_id for r in recs)
    served = report["runs"]["LLM arm, guided by SASRec (served)"][0]["test"]
    assert served["HR@10"] == np.mean(hits)
    assert len(shown) > 10  # the picks follow each history, not one list for everyone
    assert "## What the chat serves" in (tiny_build / "report.md").read_text()
