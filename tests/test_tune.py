"""Stage `tune` on a hand-made catalog: task data, response-only loss, resume, save -> load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from face_app.decoder import GENERATOR_FILE, ItemGenerator
from face_app.index import ItemIndex
from face_app.prompts import recommend_prompt
from training import tune
from training.config import Config, TuneConfig
from training.data import SplitData
from training.report import EARLIER_SECONDS

GENRES = ["Comedy", "Drama", "Horror", "Romance"]
TASKS = {"next": 0.5, "followup": 0.2, "descriptors": 0.2, "index_to_title": 0.5, "title_to_index": 0.5,
         "intention": 0.5}


def small_data() -> SplitData:
    items = pd.DataFrame({
        "item_idx": np.arange(24),
        "item_id": [str(100 + i) for i in range(24)],
        "title": [f"Film {i}" for i in range(24)],
        "year": pd.array([1980 + i for i in range(23)] + [None], dtype="Int64"),
        "genres": [[GENRES[i % 4]] + ([GENRES[(i + 1) % 4]] if i % 3 == 0 else []) for i in range(24)],
        "description": [""] * 24,
    })
    users = pd.DataFrame({"user_idx": np.arange(8), "user_id": [str(u) for u in range(8)]})
    rng = np.random.default_rng(0)
    sequences = [rng.permutation(24)[: 8 + u] for u in range(8)]
    return SplitData(items=items, users=users, train=[s[:-2] for s in sequences],
                     valid=np.array([s[-2] for s in sequences]), test=np.array([s[-1] for s in sequences]))


def small_index(data: SplitData) -> ItemIndex:
    codes = [(i // 8, (i // 2) % 4, i % 2) for i in range(24)]
    return ItemIndex(data.items["item_id"].tolist(), codes, codebook_size=8)


def tiny_config(**overrides) -> Config:
    settings = dict(base_model="tiny-random", tasks=TASKS, max_history=5, batch_size=4, max_steps=6,
                    warmup_steps=2, checkpoint_every=2, log_every=2, lr=5e-3, threads=1)
    return Config(tune=TuneConfig(**{**settings, **overrides}))


def workdir_with_data(root: Path) -> Path:
    data = small_data()
    data.save(root / "data")
    small_index(data).save(root / "index" / "item_index.json")
    return root


def test_task_data_uses_the_shared_templates() -> None:
    data = small_data()
    catalog = tune.Catalog(data, small_index(data))
    examples = tune.build_examples(data, catalog, tiny_config().tune)
    assert set(examples) == set(TASKS)
    assert examples == tune.build_examples(data, catalog, tiny_config().tune)  # deterministic
    prompt, response = examples["next"][0]
    assert prompt.startswith("History: <a_") and prompt.endswith("\nNext:")
    assert prompt.split("History: ")[1].count("<a_") <= 5  # max_history
    assert response in catalog.tokens
    assert all("\nRequest: " in p for p, _ in examples["followup"])
    assert all(p.startswith("User: ") for p, _ in examples["descriptors"])
    pairs = set(examples["index_to_title"]) | {(f"Title of {r}?", p[len("Index of "):-1])
                                               for p, r in examples["title_to_index"]}
    assert pairs <= {(f"Title of {catalog.tokens[i]}?", catalog.titles[i]) for i in range(24)}
    assert "Film 23" in catalog.titles and "Film 0 (1980)" in catalog.titles  # unknown year: title only
    assert all(p.startswith("History: none\nRequest: ") for p, _ in examples["intention"])
    windows = sum(len(t) - 1 for t in data.train)
    assert len(examples["next"]) == round(0.5 * windows) and len(examples["index_to_title"]) == 12


def test_response_loss_matches_the_full_loss_on_response_tokens(face_app_cache) -> None:
    from face_app import llm

    model, tokenizer = llm.load_base(llm.TINY_RANDOM)
    rows = tune.encode(tokenizer, [("History: none\nNext:", "Film 1 (1981)"), ("Index of Film 2?", "Film")], 256)
    left = tune.collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        fast = tune.response_loss(model, left)
        per_row = [model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])) for ids, labels in rows]
    counts = [sum(label != -100 for label in labels[1:]) for _, labels in rows]
    expected = sum(out.loss * n for out, n in zip(per_row, counts, strict=True)) / sum(counts)
    assert float(fast) == pytest.approx(float(expected), rel=1e-4)
    assert (left["labels"][:, -1] != -100).all()  # responses end every left-padded row


def test_interrupted_tuning_resumes_to_the_same_weights(tmp_path: Path, face_app_cache) -> None:
    config = tiny_config()
    straight = workdir_with_data(tmp_path / "straight")
    tune.run(config, straight)
    interrupted = workdir_with_data(tmp_path / "interrupted")
    tune.run(config, interrupted, stop_after=3)
    checkpoint = interrupted / "tune" / "checkpoint"
    assert (checkpoint / "state.json").read_text().startswith('{"step": 2')
    tune.run(config, interrupted)
    expected = load_file(straight / "tune" / "model" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(interrupted / "tune" / "model" / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == resumed.keys() and any("trainable_tokens" in k for k in expected)
    for key, value in expected.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
    # the resumed run's record covers the whole run, not just the steps after the resume
    spec = {name: json.loads((run / "tune" / "model" / GENERATOR_FILE).read_text()) for name, run in
            (("straight", straight), ("resumed", interrupted))}
    assert [h["step"] for h in spec["resumed"]["loss_history"]] == [h["step"] for h in spec["straight"]["loss_history"]]
    assert spec["resumed"]["train_seconds"] > 0
    # and the stage's recorded time counts the interrupted run's training
    assert json.loads((interrupted / "tune" / EARLIER_SECONDS).read_text())["seconds"] > 0
    assert not (straight / "tune" / EARLIER_SECONDS).exists()


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path: Path, face_app_cache, capsys) -> None:
    workdir = workdir_with_data(tmp_path)
    tune.run(tiny_config(), workdir, stop_after=2)
    tune.run(tiny_config(lr=1e-3, max_steps=2), workdir)
    out = capsys.readouterr().out
    assert "starting over" in out and "resuming" not in out


def test_a_tuned_model_reloads_with_identical_recommendations(tmp_path: Path, face_app_cache) -> None:
    config = tiny_config(max_steps=4)
    data = small_data()
    index = small_index(data)
    catalog = tune.Catalog(data, index)
    model, tokenizer, base_state = tune.prepare_model(config.tune, index, catalog)
    examples = [e for rows in tune.build_examples(data, catalog, config.tune).values() for e in rows]
    history, _ = tune.train(model, tune.encode(tokenizer, examples, 256), tokenizer.pad_token_id, config.tune,
                         tmp_path / "checkpoint")
    assert [h["step"] for h in history] == [2, 4]
    tune.save_generator(tmp_path / "model", model, tokenizer, index, config.tune, base_state, {})
    in_memory = ItemGenerator(model.merge_and_unload(), tokenizer, index)
    loaded = ItemGenerator.load(tmp_path / "model")
    prompt = recommend_prompt([index.text("100"), index.text("101")])
    expected = in_memory.recommend(prompt, k=10, exclude=["100"])
    found = loaded.recommend(prompt, k=10, exclude=["100"])
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-4)
