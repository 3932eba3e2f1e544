"""Stage `tune` on a hand-made catalog: task data, response-only loss, the taste token and distillation, resume,
the valid curve and best checkpoint, save -> load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from face_app.decoder import GENERATOR_FILE, GeneratorSpec, ItemGenerator
from face_app.index import ItemIndex
from face_app.prompts import TASTE_TOKEN, recommend_prompt
from face_app.sequential import SASRec
from training import tasks, tune
from training.config import Config, SASRecConfig, TuneConfig
from training.data import SplitData
from training.workdir import EARLIER_SECONDS

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


SASREC = SASRecConfig(dim=16, layers=1, heads=1, max_len=10, dropout=0.0)


def tiny_config(**overrides) -> Config:
    settings = dict(base_model="tiny-random", tasks=TASKS, max_history=5, batch_size=4, max_steps=6,
                    warmup_steps=2, checkpoint_every=2, log_every=2, lr=5e-3, threads=1, precision="fp32")
    config = Config(tune=TuneConfig(**{**settings, **overrides}))
    config.cf.sasrec = SASREC
    return config


def workdir_with_data(root: Path) -> Path:
    """A workdir as the data, cf (a random SASRec standing for the trained one) and index stages leave it."""
    data = small_data()
    data.save(root / "data")
    small_index(data).save(root / "index" / "item_index.json")
    torch.manual_seed(0)
    teacher = SASRec(0, data.n_items, SASREC)
    (root / "cf" / "SASRec" / "seed0").mkdir(parents=True)
    save_file(teacher.state_dict(), root / "cf" / "SASRec" / "seed0" / "model.safetensors")
    (root / "cf" / "SASRec" / "seed0" / "run.json").write_text('{"seed": 0}')  # a finished run
    return root


def tuning_parts(root: Path, config: Config) -> tuple:
    """(data, index, catalog, teacher, model, tokenizer) of a tune on `workdir_with_data(root)`, as the stage
    prepares them."""
    workdir = workdir_with_data(root)
    data = SplitData.load(workdir / "data")
    index = ItemIndex.load(workdir / "index" / "item_index.json")
    catalog = tasks.Catalog(data, index)
    teacher = tune.load_teacher(workdir, config, data.n_items)
    model, tokenizer, _ = tune.prepare_model(config.tune, index, catalog, teacher)
    return data, index, catalog, teacher, model, tokenizer


def test_the_teacher_must_be_the_configs_own_sasrec_run(tmp_path: Path) -> None:
    """A RecBole-style run loads into the project's style without an error (the same weight names): the tune refuses
    a teacher whose run was trained with other cf.sasrec settings, and takes the config's own."""
    from training.cf import run_key

    config = tiny_config()
    workdir = workdir_with_data(tmp_path)
    data = SplitData.load(workdir / "data")
    run_json = workdir / "cf" / "SASRec" / "seed0" / "run.json"
    key = run_key("SASRec", config)
    run_json.write_text(json.dumps({"seed": 0, "key": key}))
    assert isinstance(tune.load_teacher(workdir, config, data.n_items), SASRec)

    recbole = {**key, "model": {**key["model"], "style": "recbole"}}
    run_json.write_text(json.dumps({"seed": 0, "key": recbole}))
    with pytest.raises(ValueError, match="style"):
        tune.load_teacher(workdir, config, data.n_items)


def test_task_data_uses_the_shared_templates() -> None:
    data = small_data()
    catalog = tasks.Catalog(data, small_index(data))
    examples = tasks.build_examples(data, catalog, tiny_config().tune)
    assert set(examples) == set(TASKS)
    assert examples == tasks.build_examples(data, catalog, tiny_config().tune)  # deterministic
    first = examples["next"][0]
    assert first.prompt.startswith("History: <a_") and first.prompt.endswith("\nNext:")
    assert first.prompt.split("History: ")[1].count("<a_") <= 5  # max_history
    assert first.response == catalog.tokens[data.train[first.user][first.at]]  # the example knows its window
    assert first.prompt.endswith(catalog.tokens[data.train[first.user][first.at - 1]] + "\nNext:")
    assert all("\nRequest: " in e.prompt for e in examples["followup"])
    assert all(e.prompt.startswith("User: ") for e in examples["descriptors"])
    pairs = {(e.prompt, e.response) for e in examples["index_to_title"]} | {
        (f"Title of {e.response}?", e.prompt[len("Index of "):-1]) for e in examples["title_to_index"]}
    assert pairs <= {(f"Title of {catalog.tokens[i]}?", catalog.titles[i]) for i in range(24)}
    assert "Film 23" in catalog.titles and "Film 0 (1980)" in catalog.titles  # unknown year: title only
    assert all(e.prompt.startswith("History: none\nRequest: ") and e.user is None for e in examples["intention"])
    windows = sum(len(t) - 1 for t in data.train)
    assert len(examples["next"]) == round(0.5 * windows) and len(examples["index_to_title"]) == 12


def test_taste_prompts_carry_the_token_on_history_tasks_only(face_app_cache) -> None:
    from face_app import llm

    data = small_data()
    catalog = tasks.Catalog(data, small_index(data))
    examples = tasks.build_examples(data, catalog, tiny_config(taste=True).tune)
    for task in tasks.HISTORY_TASKS:
        assert all(e.prompt.startswith(f"Taste: {TASTE_TOKEN}\n") for e in examples[task])
    for task in ("index_to_title", "title_to_index", "intention"):
        assert not any(TASTE_TOKEN in e.prompt for e in examples[task])
    # at the answer: the prompt is the plain one, and the token is the last input position
    tokenizer = llm.load_tokenizer(llm.TINY_RANDOM)
    tokenizer.add_tokens([TASTE_TOKEN])
    answer = tasks.build_examples(data, catalog, tiny_config(taste="answer").tune)
    first = answer["next"][0]
    assert TASTE_TOKEN not in first.prompt and first.taste_at_answer
    row = tasks.encode(tokenizer, [first], 256)[0]
    last_prompt_position = row.labels.index(next(label for label in row.labels if label != -100)) - 1
    assert row.ids[last_prompt_position] == tokenizer.convert_tokens_to_ids(TASTE_TOKEN)
    with pytest.raises(ValueError, match="taste"):  # refused when the config is made, before any task data
        tiny_config(taste="middle")


def test_response_loss_matches_the_full_loss_on_response_tokens(face_app_cache) -> None:
    from face_app import llm

    data = small_data()
    index = small_index(data)
    model, tokenizer = llm.load_base(llm.TINY_RANDOM)
    token_ids = llm.add_index_tokens(model, tokenizer, index.vocabulary())
    examples = [tasks.Example("History: none\nNext:", index.text("101")), tasks.Example("Index of Film 2?", "Film")]
    rows = tasks.encode(tokenizer, examples, 256)
    left = tasks.collate(rows, tokenizer.pad_token_id)
    objective = tune.Objective(data.train, torch.tensor(index.codes), torch.tensor(token_ids).view(3, 8),
                               len(tokenizer), teacher=None, distill=0.0, temperature=1.0)
    with torch.no_grad():
        fast, parts = objective(tune.TunedLM(model, None, None), rows, tokenizer.pad_token_id)
        per_row = [model(input_ids=torch.tensor([r.ids]), labels=torch.tensor([r.labels])) for r in rows]
    counts = [sum(label != -100 for label in r.labels[1:]) for r in rows]
    expected = sum(out.loss * n for out, n in zip(per_row, counts, strict=True)) / sum(counts)
    assert float(fast) == pytest.approx(float(expected), rel=1e-4)
    assert (left["labels"][:, -1] != -100).all()  # responses end every left-padded row
    assert set(parts) == {"level_1", "level_2", "level_3", "text"}  # the index levels, and EOS / title tokens


def test_distillation_targets_are_the_teachers_mass_per_code_under_the_target_prefix() -> None:
    data = small_data()
    index = small_index(data)
    torch.manual_seed(0)
    teacher = SASRec(0, data.n_items, SASREC).eval()
    codes = torch.tensor(index.codes)
    objective = tune.Objective(data.train, codes, torch.arange(3 * 8).view(3, 8) + 100, 200, teacher, 1.0, 1.0)
    row = tasks.Encoded([1], [1], user=2, at=4)
    history = data.train[2][:4]
    soft = objective.soft_targets([row], objective.states([row]))
    p = teacher.score(torch.zeros(1), [history])[0].softmax(-1)
    p[torch.as_tensor(history)] = 0.0  # the user's earlier items are never a target
    gold = codes[int(data.train[2][4])]
    expected_first = torch.zeros(8).index_add_(0, codes[:, 0], p)
    assert torch.allclose(soft[0][0], expected_first / expected_first.sum(), atol=1e-6)
    under = p * (codes[:, 0] == gold[0]) * (codes[:, 1] == gold[1])
    expected_last = torch.zeros(8).index_add_(0, codes[:, 2], under)
    assert torch.allclose(soft[2][0], expected_last / expected_last.sum(), atol=1e-6)
    assert all(torch.allclose(s.sum(-1), torch.ones(1)) for s in soft)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 tune computes the same fp32 targets
        under_autocast = objective.soft_targets([row], objective.states([row]))
    assert all(torch.equal(a, b) for a, b in zip(soft, under_autocast, strict=True))


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
    history = {name: [h["step"] for h in spec[name]["training"]["loss_history"]] for name in spec}
    assert history["resumed"] == history["straight"]
    assert spec["resumed"]["training"]["train_seconds"] > 0
    # and the stage's recorded time counts the interrupted run's training
    assert json.loads((interrupted / "tune" / EARLIER_SECONDS).read_text())["seconds"] > 0
    assert not (straight / "tune" / EARLIER_SECONDS).exists()


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path: Path, face_app_cache, capsys) -> None:
    workdir = workdir_with_data(tmp_path)
    tune.run(tiny_config(), workdir, stop_after=2)
    tune.run(tiny_config(lr=1e-3, max_steps=2), workdir)
    out = capsys.readouterr().out
    assert "starting over" in out and "resuming" not in out


@pytest.mark.parametrize("place", ["prompt", "answer"])
def test_a_tuned_taste_model_reloads_with_identical_recommendations(tmp_path: Path, face_app_cache, place) -> None:
    config = tiny_config(max_steps=4, taste=place, distill=1.0, keep_layers=1, eval_every=2, eval_users=4)
    workdir = workdir_with_data(tmp_path)
    tune.run(config, workdir)
    spec = GeneratorSpec.load(workdir / "tune" / "model")
    assert spec.taste == place and spec.keep_layers == 1
    assert [v["step"] for v in spec.training["valid_curve"]] == [2, 4]
    best = spec.training["best"]
    assert best["NDCG@10"] == max(v["NDCG@10"] for v in spec.training["valid_curve"])
    assert {"level_1", "level_2", "level_3", "distill"} <= set(spec.training["loss_history"][-1])
    assert (workdir / "tune" / "curves.png").stat().st_size > 0
    loaded = ItemGenerator.load(workdir / "tune" / "model")
    assert loaded.taste is not None and len(loaded.model.get_decoder().layers) == 1
    index = loaded.index
    history = ["100", "105", "101"]
    assert loaded.taste_in_prompt == (place == "prompt")
    prompt = recommend_prompt([index.text(i) for i in history], taste=loaded.taste_in_prompt)
    found = loaded.recommend(prompt, k=5, exclude=history, history=history)
    reference = loaded.recommend_with_generate(prompt, k=5, exclude=history, history=history)
    assert [i for i, _ in found] == [i for i, _ in reference]
    assert not set(history) & {i for i, _ in found}
    other = loaded.recommend(prompt, k=5, exclude=history, history=["110", "111"])
    assert [s for _, s in other] != pytest.approx([s for _, s in found])  # the taste token is read
    if place == "prompt":
        with pytest.raises(ValueError, match="taste"):
            loaded.recommend(prompt, k=5)  # a taste prompt without a history to fill it


def test_an_index_row_and_its_output_logit_train_through_the_tied_head(tmp_path: Path, face_app_cache) -> None:
    config = tiny_config(taste=True)
    data, index, catalog, teacher, model, tokenizer = tuning_parts(tmp_path, config)
    row_id = tokenizer.convert_tokens_to_ids("<a_0>")
    probe = torch.tensor([[tokenizer.convert_tokens_to_ids("<b_1>")]])

    def row_and_logit() -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            row = model.llm.get_input_embeddings()(torch.tensor([row_id]))[0].clone()
            return row, float(model.llm(input_ids=probe).logits[0, -1, row_id])

    before = row_and_logit()
    examples = [e for rows in tasks.build_examples(data, catalog, config.tune).values() for e in rows]
    encoded = tasks.encode(tokenizer, [e for e in examples if e.response.startswith("<a_0>")], 256)
    tuning = tune.Tuning(model, tokenizer, index, data, encoded, config.tune, teacher, tmp_path / "tune")
    tuning.config = dataclasses.replace(config.tune, max_steps=1, warmup_steps=1)
    tuning.run()
    after = row_and_logit()
    assert not torch.allclose(before[0], after[0])  # the input row moved
    assert before[1] != after[1]  # and the output logit with it (tied head)


def test_a_tune_warm_starts_from_a_tuned_model_with_the_same_index(tmp_path: Path, face_app_cache) -> None:
    config = tiny_config(max_steps=2, taste=True)
    first = workdir_with_data(tmp_path / "first")
    tune.run(config, first)
    warm = dataclasses.replace(config.tune, init_from=str(first / "tune" / "model"))
    data = SplitData.load(first / "data")
    index = ItemIndex.load(first / "index" / "item_index.json")
    catalog = tasks.Catalog(data, index)
    teacher = tune.load_teacher(first, config, data.n_items)
    model, tokenizer, _ = tune.prepare_model(warm, index, catalog, teacher)
    started = ItemGenerator(model.llm.merge_and_unload(), tokenizer, index, taste=model.taste)
    saved = ItemGenerator.load(first / "tune" / "model")
    history = ["100", "103"]
    prompt = recommend_prompt([index.text(i) for i in history], taste=True)
    expected = saved.recommend(prompt, k=5, exclude=history, history=history)
    found = started.recommend(prompt, k=5, exclude=history, history=history)
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-4)
    shuffled = ItemIndex(index.item_ids, index.codes[1:] + index.codes[:1], index.codebook_size)
    with pytest.raises(ValueError, match="another item index"):
        tune.prepare_model(warm, shuffled, tasks.Catalog(data, shuffled), teacher)


@pytest.mark.parametrize("titles", [False, True])
def test_the_eval_stage_prompts_the_tuned_llm_exactly_as_the_chat_arm_does(titles: bool) -> None:
    from face_app.arms import GeneratorRecommender
    from training.tune import LLMRecommender

    data = small_data()
    index = small_index(data)

    class Recorder:  # a generator that remembers its prompts and exclusions, and proposes two fixed items
        taste_in_prompt = False

        def __init__(self) -> None:
            self.index, self.asked = index, []

        def recommend(self, prompt, k, exclude, beams, history, bonus=None):
            self.asked.append((prompt, set(exclude), bonus))
            return [(i, -1.0 - n) for n, i in enumerate(["122", "123"]) if i not in exclude][:k]

    evaluated = LLMRecommender(Recorder(), data, max_history=3, titles=titles, beams=10)
    users = torch.arange(data.n_users)
    histories = [data.history(u, "test") for u in range(data.n_users)]
    scores = evaluated.score(users, histories)
    ids = data.items["item_id"].tolist()
    catalog = tasks.Catalog(data, index)
    titled = (lambda i: catalog.titles[catalog.ids.index(i)]) if titles else None
    served = GeneratorRecommender(Recorder(), index.text, titled, history=3, beams=10, user_descriptors=False)
    for history in histories:
        seen = [ids[i] for i in history]
        served.rank(seen, [], None, set(seen), 10)
    assert [a[0] for a in evaluated.arm.generator.asked] == [a[0] for a in served.generator.asked]
    pairs = zip(evaluated.arm.generator.asked, served.generator.asked, strict=True)
    assert all(a[1] == b[1] and a[2] is None for a, b in pairs)
    assert ("Film" in evaluated.arm.generator.asked[0][0]) == titles
    row = 0
    expected = [i for i in ["122", "123"] if ids.index(i) not in set(histories[row].tolist())]
    assert [ids[int(c)] for c in torch.argsort(-scores[row])[: len(expected)]] == expected
