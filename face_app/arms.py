"""The two arms that answer the chat behind one interface (`Recommender.rank`), so a study can compare them.

- `GeneratorRecommender` (the tuned LLM, a *generative* arm): the shared prompt template
  (`prompts.recommend_prompt`, with the `<taste>` token for a model tuned with it) and the constrained decoder
  (`ItemGenerator.recommend`): its picks are the generator's own top-N in its own order (its log-probabilities
  weighed with the history's intent prior inside the search), and whatever the engine excludes is never
  reached by a beam.
- `EmbeddingRecommender` (LightGCN+FACE): the session's fold-in embedding against every item (popularity for
  an empty history); the engine orders its pool (`face_app.picking`).

`bundle_arms` builds both from a loaded bundle (the LLM on a background thread for the served app: `LoadingArm`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from face_app.catalog import Catalog
from face_app.prompts import item_title, recommend_prompt

# The prompt carries the newest items of a long (persona) history.
PROMPT_HISTORY = 20
log = logging.getLogger("face_app")
# Histories whose LightGCN scores an `EmbeddingRecommender` remembers (`EmbeddingRecommender.scores`).
SCORED_HISTORIES = 256
# What the cards and the replies call each arm.
ARM_NAMES = {"llm": "LLM arm", "lightgcn": "LightGCN arm"}


class ArmUnavailable(RuntimeError):
    """An arm that cannot serve: unknown, or its model failed to load (and nothing may stand in for it)."""


class Readout(Protocol):
    """What the engine uses of `face_app.descriptors.Descriptors` (FACE read-out)."""

    item_ids: list[str]
    item_embeddings: torch.Tensor

    def for_item(self, item_id: str) -> list[str]: ...
    def fold_in(self, item_ids: Sequence[str]) -> torch.Tensor: ...
    def describe_history(self, item_ids: Sequence[str]) -> list[str]: ...


class Recommender(Protocol):
    """One arm of the app: ranks catalog items for a session.

    generative: the arm's order is final (filters are passed to it as exclusions); otherwise the engine
    orders its pool by CF closeness and filters it afterwards."""

    name: str
    generative: bool

    def rank(self, history: Sequence[str], user_descriptors: Sequence[str], request: str | None,
             exclude: set[str], n: int, bonus: dict[str, float] | None = None) -> list[tuple[str, float]]:
        """Up to `n` (item_id, score) pairs, best first, none of them in `exclude`. bonus: item id -> a log prior
        a generative arm weighs its own scores with inside its search (`face_app.picking.Intent`); the engine
        applies it to a non-generative arm's pool itself."""
        ...


@dataclass
class EmbeddingRecommender:
    """LightGCN+FACE: the session's fold-in embedding against every item; popularity for an empty history."""

    readout: Readout
    popularity: np.ndarray
    name: str = "lightgcn"
    generative: bool = False

    def __post_init__(self) -> None:
        # A turn scores its history for the pool, the match of each pick and the backfill, and a follow-up that
        # keeps the history scores it again: remembered per history (read-only arrays, 13 kB each for ML-100k).
        self._scored = functools.lru_cache(maxsize=SCORED_HISTORIES)(self._score)

    def scores(self, history: Sequence[str]) -> np.ndarray:
        """float [n_items] in the read-out's item order (read-only: remembered for later turns)."""
        return self._scored(tuple(history))

    def _score(self, history: tuple[str, ...]) -> np.ndarray:
        if not history:
            scores = np.log1p(self.popularity.astype(np.float64))
        else:
            with torch.no_grad():
                scores = (self.readout.item_embeddings @ self.readout.fold_in(list(history))).double().numpy()
        scores.setflags(write=False)
        return scores

    def rank(self, history, user_descriptors, request, exclude, n, bonus=None):
        scores = self.scores(history)
        order = np.argsort(-scores, kind="stable")
        ids = self.readout.item_ids
        out = []
        for row in order:
            if ids[row] not in exclude:
                out.append((ids[row], float(scores[row])))
                if len(out) == n:
                    break
        return out


@dataclass
class GeneratorRecommender:
    """The tuned LLM: the shared prompt, generated under the prefix trie, excluded items never generated.

    generator: an `ItemGenerator` (face_app.decoder); tokens: item id -> its index tokens;
    titles: item id -> the title as the model was tuned on it (`prompts.item_title` of the dataset's title),
    or None when it was tuned on index tokens alone; history: the newest items the prompt carries (as tuned).
    beams: beam width (None: the generator's default), widened to the picks asked when more are asked (9
    beams for the chat's 5 picks: 96.6% of the top-5 of 10 beams, `bench/beams.json`; 8 beams
    agreed on 92.4%, below the 95% bar; 10 for "show me 10", 15 for "show me 15"). max_pool: at most this
    many items are generated per turn (the most a turn may ask for, `face_app.engine.MAX_PICKS`); the engine
    backfills from the CF ranking only when filters leave the search fewer valid items.
    user_descriptors: whether the prompt carries the user's FACE descriptors (only for a model tuned with
    them; otherwise the prompt is the plain history form the model was tuned and evaluated on).
    """

    generator: Any
    tokens: Callable[[str], str]
    titles: Callable[[str], str] | None = None
    history: int = PROMPT_HISTORY
    beams: int | None = 9
    max_pool: int = 20
    user_descriptors: bool = True
    name: str = "llm"
    generative: bool = True

    def prompt(self, history: Sequence[str], user_descriptors: Sequence[str], request: str | None) -> str:
        recent = list(history)[-self.history:] if self.history else []
        titles = [self.titles(i) for i in recent] if self.titles else None
        words = list(user_descriptors) if self.user_descriptors else []
        taste = bool(getattr(self.generator, "taste_in_prompt", False)) and bool(history)
        return recommend_prompt([self.tokens(i) for i in recent], titles, words or None, request, taste=taste)

    def rank(self, history, user_descriptors, request, exclude, n, bonus=None):
        prompt = self.prompt(history, user_descriptors, request)
        return self.generator.recommend(prompt, k=min(n, self.max_pool), exclude=exclude, beams=self.beams,
                                        history=list(history), bonus=bonus)


class LoadingArm:
    """An arm whose model loads on a background thread: the app serves its page meanwhile, and the first call
    that needs the model waits for it (a failed load raises there, and is logged when it happens).

    name / generative: known before the model is; `arm`: the loaded recommender (blocks until it is)."""

    def __init__(self, name: str, generative: bool, load: Callable[[], Recommender]) -> None:
        self.name, self.generative = name, generative
        self._started = time.perf_counter()
        self._future = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"load-{name}").submit(load)
        self._future.add_done_callback(self._report)

    def _report(self, future: Future) -> None:
        seconds = time.perf_counter() - self._started
        if future.exception() is not None:
            log.error(f"the {self.name} arm failed to load after {seconds:.1f} s: {future.exception()}")
        else:
            log.info(f"the {self.name} arm is loaded ({seconds:.1f} s after the start of its load)")

    @property
    def arm(self) -> Recommender:
        return self._future.result()

    def ready(self) -> bool:
        """Loaded and usable now (False while it loads, and for good once its load failed)."""
        return self._future.done() and self._future.exception() is None

    def failed(self) -> bool:
        return self._future.done() and self._future.exception() is not None

    def rank(self, history, user_descriptors, request, exclude, n, bonus=None):
        return self.arm.rank(history, user_descriptors, request, exclude, n, bonus)

    def __getattr__(self, attribute: str) -> Any:  # the loaded arm's other attributes (its generator, ...)
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.arm, attribute)


def generator_arm(generator: Any, spec: Any, catalog: Catalog, tokens: Callable[[str], str]) -> GeneratorRecommender:
    """The LLM arm of a loaded generator, prompted as its `GeneratorSpec` says it was tuned (titles in the history,
    its length, the visitor's words only for a model tuned on them)."""
    titles = (lambda i: item_title(catalog.raw_title(i), catalog.item(i).year)) if spec.titles_in_history else None
    return GeneratorRecommender(generator, tokens, titles, history=spec.max_history,
                                user_descriptors=spec.prompts_user_words)


def bundle_arms(bundle: Any, catalog: Catalog, *, load_llm: bool = True, background: bool = False,
                precision: str = "fp32") -> dict[str, Recommender]:
    """The arms of a loaded `face_app.bundle.Bundle`: LightGCN+FACE always, the LLM when the bundle has a tuned
    model (`load_llm=False` skips loading it), prompted as the generator spec says it was tuned.

    background: load the LLM on a background thread (`LoadingArm`) and batch its searches across concurrent
    turns (`ItemGenerator.batched`): what the served app does, so that its page is up while transformers and the
    model load, and turns that reach the LLM at the same moment share one batched search. precision: the LLM's
    matrix products, `fp32` or `bf16` (`ItemGenerator.use_precision`)."""
    arms: dict[str, Recommender] = {"lightgcn": EmbeddingRecommender(bundle.descriptors, catalog.popularity)}
    if load_llm and bundle.has_generator:

        def load() -> GeneratorRecommender:
            generator = bundle.generator().use_precision(precision)
            if background:
                generator.batched()
            return generator_arm(generator, bundle.generator_spec, catalog, bundle.tokens)

        arms["llm"] = LoadingArm("llm", True, load) if background else load()
    return arms
