"""The eval stage's served rows: each arm of the chat as a turn runs it (`face_app.ranking`), not the model alone.

For every user with a target, a session holds their whole history; `Engine.plan` makes the turn's plan with
n = 10 and no request, and the arm's `pick(plan)` gives the ten picks a visitor would see (the LLM arm with the
intent prior and the beams the chat uses, the LightGCN arm with its closeness order, both with the chat's
defaults in `face_app.picking`). The picks are scored by the report's protocol (a target outside them counts
as never ranked), on valid and test, beside the model rows. The engine is built from the workdir's stages
(the dataset, the face stage's read-out, the index and the tuned model) exactly as `Engine.from_bundle` builds it
from the exported bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from face_app.arms import EmbeddingRecommender, Recommender, generator_arm
from face_app.catalog import Catalog
from face_app.datasets import load_dataset
from face_app.decoder import GENERATOR_FILE, GeneratorSpec, ItemGenerator
from face_app.descriptors import Descriptors
from face_app.dialogue import ConversationState
from face_app.engine import Engine
from training.config import Config, torch_threads
from training.data import SplitData
from training.metrics import TrainedRun
from training.workdir import Workdir

TOP = 10


class ServedArm:
    """`score` for the eval stage: the arm's ten picks for each history, scored 10 down to 1, -inf elsewhere."""

    def __init__(self, engine: Engine, arm: str, data: SplitData, threads: int | None = None) -> None:
        self.engine, self.arm, self.threads = engine, arm, threads
        self.ids = data.items["item_id"].astype(str).tolist()
        self.position = {item: n for n, item in enumerate(self.ids)}

    def picks(self, history: list[str]) -> list[str]:
        state = ConversationState()
        state.add_history(history)
        plan = self.engine.plan(state, n=TOP)
        return [p.item_id for p in self.engine.picker(self.arm).pick(plan)]

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        scores = torch.full((len(users), len(self.ids)), float("-inf"))
        with torch_threads(self.threads):
            for row, history in enumerate(histories):
                for rank, item in enumerate(self.picks([self.ids[i] for i in history])):
                    scores[row, self.position[item]] = float(TOP - rank)
        return scores


def workdir_engine(config: Config, workdir: Path, data: SplitData, load_llm: bool = True) -> Engine:
    """The chat's engine on a workdir's stages (module docstring): both arms when the tune stage has finished."""
    paths = Workdir(workdir)
    readout = Descriptors.load(paths.readout)
    dataset = load_dataset(config.data.source, paths=config.data.paths)
    catalog, _ = Catalog.from_dataset(dataset, list(readout.item_ids))
    arms: dict[str, Recommender] = {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)}
    if load_llm and (paths.tune_model / GENERATOR_FILE).exists():
        generator = ItemGenerator.load(paths.tune_model)
        arms["llm"] = generator_arm(generator, GeneratorSpec.load(paths.tune_model), catalog, generator.index.text)
    return Engine(catalog, readout, arms, tokens=lambda item_id: "", default="llm" if "llm" in arms else "lightgcn",
                  n=TOP)


def trained_models(config: Config, workdir: Path, data: SplitData) -> Iterator[TrainedRun]:
    """The eval stage's view: one row per arm of the chat ("LLM arm, guided by SASRec (served)" at the chat's guide
    weight, "LightGCN arm (served)"), when the face stage has written its read-out."""
    if not (Workdir(workdir).readout / "readout.json").exists():
        return
    engine = workdir_engine(config, workdir, data)
    llm = "LLM arm, guided by SASRec (served)" if engine.guide_llm else "LLM arm (served)"
    for arm, name in (("llm", llm), ("lightgcn", "LightGCN arm (served)")):
        if arm in engine.recommenders:
            yield TrainedRun(name, config.tune.seed if arm == "llm" else config.cf.seeds[0],
                             ServedArm(engine, arm, data, config.tune.threads), {}, splits=("valid", "test"))
