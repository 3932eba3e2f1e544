"""The LLM's task data (LC-Rec's tasks), every template from `face_app.prompts`, shared with serving.

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

With `taste`, a history example also carries the `<taste>` token (the whole history as SASRec sees it,
`face_app.decoder.TastePrompt`): in the prompt (`prompt`) or as the last input position (`answer`). Each
history example remembers its (user, position) so the loop can compute that state and the teacher's
distribution for distillation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from face_app import llm, prompts
from face_app.index import ItemIndex
from training.config import TuneConfig
from training.data import SplitData

TASKS = ("next", "followup", "descriptors", "index_to_title", "title_to_index", "intention")
HISTORY_TASKS = ("next", "followup", "descriptors")


@dataclass(frozen=True)
class Example:
    """One training example. user/at: for a history task, the target is `train[user][at]` and the
    history is `train[user][:at]`; None for an item task."""

    prompt: str
    response: str
    user: int | None = None
    at: int | None = None
    taste_at_answer: bool = False


def taste_place(config: TuneConfig) -> str | None:
    """Where a history example carries `<taste>`: `prompt`, `answer`, or None (`tune.taste` false or `none`)."""
    value = config.taste
    if value in (False, None, "none"):
        return None
    if value is True:
        return "prompt"
    if value not in prompts.TASTE_PLACES:
        raise ValueError(f"tune.taste must be none, {' or '.join(prompts.TASTE_PLACES)} (or a boolean), not {value!r}")
    return value


@dataclass(frozen=True)
class Encoded:
    """An example as token ids: the chat-formatted prompt then the response and EOS; labels -100 on the prompt."""

    ids: list[int]
    labels: list[int]
    user: int | None = None
    at: int | None = None


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


def windows(data: SplitData) -> list[tuple[int, int]]:
    """Every (user, position) of the training sequences whose item has a history: each item after the first."""
    return [(user, t) for user, sequence in enumerate(data.train) for t in range(1, len(sequence))]


def build_examples(
    data: SplitData, catalog: Catalog, config: TuneConfig, user_words: dict[str, list[str]] | None = None
) -> dict[str, list[Example]]:
    """The task datasets, per task name (deterministic given `config.seed`)."""
    rng = random.Random(config.seed)
    unknown = set(config.tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tune task(s) {sorted(unknown)}; known: {TASKS}")
    all_windows = windows(data)
    user_ids = data.users["user_id"].astype(str).tolist()

    def sample(fraction: float) -> list[tuple[int, np.ndarray, int, int]]:
        count = min(len(all_windows), round(fraction * len(all_windows)))
        chosen = [all_windows[i] for i in sorted(rng.sample(range(len(all_windows)), count))]
        return [(user, data.train[user][max(0, t - config.max_history) : t], int(data.train[user][t]), t)
                for user, t in chosen]

    def passes(weight: float) -> list[int]:
        whole, part = int(weight), weight - int(weight)
        items = list(range(data.n_items)) * whole
        return items + rng.sample(range(data.n_items), round(part * data.n_items))

    place = taste_place(config)

    def history_prompt(history: np.ndarray, **kwargs: object) -> str:
        return catalog.history_prompt(history, config.titles_in_history, taste=place == "prompt", **kwargs)

    def history_example(prompt: str, target: int, user: int, t: int) -> Example:
        return Example(prompt, catalog.tokens[target], user, t, taste_at_answer=place == "answer")

    examples: dict[str, list[Example]] = {}
    for task, weight in config.tasks.items():
        rows: list[Example] = []
        if task == "next":
            for user, history, target, t in sample(weight):
                rows.append(history_example(history_prompt(history), target, user, t))
        elif task == "followup":
            for user, history, target, t in sample(weight):
                request = catalog.intention(rng, target, int(history[-1]))
                rows.append(history_example(history_prompt(history, request=request), target, user, t))
        elif task == "descriptors":
            for user, history, target, t in sample(weight):
                words = (user_words or {}).get(user_ids[user]) or prompts.history_words(
                    [catalog.genres[i] for i in history]
                )
                rows.append(history_example(history_prompt(history, user_descriptors=words), target, user, t))
        elif task == "index_to_title":
            rows = [Example(prompts.index_to_title_prompt(catalog.tokens[i]), catalog.titles[i])
                    for i in passes(weight)]
        elif task == "title_to_index":
            rows = [Example(prompts.title_to_index_prompt(catalog.titles[i]), catalog.tokens[i])
                    for i in passes(weight)]
        elif task == "intention":
            previous = previous_items(data)
            for i in passes(weight):
                before = rng.choice(previous[i]) if previous[i] and rng.random() < 0.5 else None
                request = catalog.intention(rng, i, before)
                rows.append(Example(prompts.recommend_prompt([], request=request), catalog.tokens[i]))
        examples[task] = rows
    return examples


def previous_items(data: SplitData) -> list[list[int]]:
    """Per item, the items some user watched just before it (training sequences)."""
    before: list[list[int]] = [[] for _ in range(data.n_items)]
    for sequence in data.train:
        for a, b in zip(sequence[:-1], sequence[1:], strict=True):
            before[int(b)].append(int(a))
    return before


def encode(tokenizer, examples: list[Example], max_length: int) -> list[Encoded]:
    """Token ids and labels per example; loss on the response (and EOS) only.

    Prompts are short by construction (at most `max_history` items); an example over `max_length` tokens
    is cut from the left.
    """
    out = []
    eos = tokenizer.eos_token
    for example in examples:
        text = prompts.chat_text(tokenizer, example.prompt, example.taste_at_answer)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(example.response + eos, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[-max_length:]
        labels = ([-100] * len(prompt_ids) + response_ids)[-max_length:]
        out.append(Encoded(ids, labels, example.user, example.at))
    return out


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids / attention_mask / position_ids / labels (-100 on padding).

    Left padding puts every response at the end of its row, so the model computes logits
    only for the last positions (`response_loss`), not for the whole prompt.
    """
    width = max(len(row.ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, row in enumerate(rows):
        input_ids[n, width - len(row.ids) :] = torch.tensor(row.ids)
        labels[n, width - len(row.labels) :] = torch.tensor(row.labels)
        mask[n, width - len(row.ids) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "labels": labels}
