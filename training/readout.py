"""FACE's read-out trained for words, with the CF model frozen (the face stage's `mode: readout`).

The ablation (docs/face.md) showed that FACE's losses do not improve LightGCN here, so the read-out can be trained
for the words alone without touching the ranking:

    frozen LightGCN embedding e  -> ConceptProjection -> K concepts -> quantizer over the vocabulary (STE)
                                 -> decoder reconstructs e;  [CLS] z_1..z_K [SEP] through frozen MiniLM
                                 -> InfoNCE with the entity's rich profile (training/profiles.py)

Loss = vq_weight * commitment + recons_weight * reconstruction + align_weight * InfoNCE, over `epochs` passes of
all users and items (no valid early stopping: the CF scores cannot change). The projection starts from the ridge
regression of each entity's profile keywords (`training.face.keyword_targets`).

`build_display_readout` writes what the app shows: per item and dataset user the words `face_app.descriptors.Display`
chooses among each concept's nearest words, with two rules of training/suitability.py (unsuitable words are not in
the vocabulary; sensitive-topic words only on films whose own data names them, never on users) and the items'
exposure cap: a word that is not a genre word may sit on films carrying at most `exposure_cap` of all training
interactions (hub words counted by what visitors see, not by how many films carry them), and on at most
`film_share_cap` of the films (so that a word does not pile up on the many films few people rate: "anime" sat on
15% of the films under the exposure cap alone).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from face_app.descriptors import Descriptors, Display, choose_shown, hub_penalty, stem_groups
from training.cf import LightGCN
from training.config import CARD_FEATURES, Config, FACEConfig
from training.data import SplitData
from training.face import FACE, descriptor_vocabulary, info_nce, keyword_targets, publish
from training.film_knowledge import film_word_scores, title_word_scores
from training.loop import seed_everything
from training.profiles import (
    TextEncoder,
    genre_prior,
    item_genres,
    item_profiles,
    rich_item_profiles,
    user_profiles,
)
from training.suitability import named_in, seed_words, sensitive_topics, supported
from training.vocabulary import GENERIC_ANCHORS, era_word, genre_anchors, genre_names, normal_form
from training.workdir import MODEL_FILE, Workdir


def history_profiles(data: SplitData, item_profiles: torch.Tensor) -> torch.Tensor:
    """[U, D]: each user's normalised mean training-item profile (the alignment target of a user's words)."""
    rows = [item_profiles[torch.from_numpy(np.array(h, dtype=np.int64))].mean(0) if len(h) else item_profiles.mean(0)
            for h in data.train]
    return F.normalize(torch.stack(rows), dim=-1)


def train_readout(user_final: torch.Tensor, item_final: torch.Tensor, text: TextEncoder, codebook: torch.Tensor,
                  word_embeddings: torch.Tensor, groups: torch.Tensor | None,
                  profiles: tuple[torch.Tensor, torch.Tensor], data: SplitData, settings: FACEConfig,
                  seed: int) -> tuple[FACE, list[dict[str, float]]]:
    """Fit FACE's projection and decoder on frozen CF embeddings (module docstring). profiles: (users [U, D], items
    [I, D]) normalised alignment targets. Returns the module in eval mode and a per-epoch loss log."""
    generator = seed_everything(seed)
    entities = torch.cat([user_final, item_final]).detach()
    targets = torch.cat(profiles)
    face = FACE(entities.shape[1], settings.k, codebook, groups)
    if settings.centre:
        face.projection.centre.copy_(item_final.mean(0))
    if settings.warm_start:
        centred = entities - face.projection.centre
        face.warm_start(entities, keyword_targets(centred, word_embeddings, profiles[0], profiles[1], data.train,
                                                  settings.k, face.word_groups))
    optimizer = torch.optim.Adam([p for p in face.parameters() if p.requires_grad], lr=settings.lr)
    log = []
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(len(entities), generator=generator)
        totals = {"commitment": 0.0, "reconstruction": 0.0, "alignment": 0.0}
        steps = 0
        for begin in range(0, len(order), settings.entities_per_step):
            batch = order[begin : begin + settings.entities_per_step]
            z, _, commitment, reconstruction = face(entities[batch])
            aligned = batch[: settings.align_entities]
            alignment = info_nce(text.encode_word_vectors(z[: len(aligned)]), targets[aligned], settings.temperature)
            loss = (settings.vq_weight * commitment + settings.recons_weight * reconstruction
                    + settings.align_weight * alignment)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for name, value in zip(totals, (commitment, reconstruction, alignment), strict=True):
                totals[name] += float(value.detach())
            steps += 1
        log.append({"epoch": epoch, **{k: v / max(steps, 1) for k, v in totals.items()},
                    "seconds": time.perf_counter() - start})
        print(f"[face] read-out epoch {epoch}: " + ", ".join(f"{k} {v / max(steps, 1):.4f}" for k, v in totals.items()))
    return face.eval(), log


def genre_words(words: Sequence[str], genres: Sequence[str]) -> torch.Tensor:
    """bool [V]: the vocabulary words that name one of the dataset's genres (their normal forms: "comedy",
    "thriller", "war", "western"; "Children's" -> "child", "Film-Noir" -> "noir")."""
    parts = [part for genre in genres for part in genre.lower().replace("'s", "").replace("-", " ").split()]
    forms = {normal_form(part) for part in parts}
    return torch.tensor([normal_form(w) in forms for w in words])


def genre_word_matrix(words: Sequence[str], genres: Sequence[str]) -> torch.Tensor:
    """bool [G, V]: word v names genre g (its normal form is one of the genre's name's: `genre_words` per genre)."""
    return torch.stack([genre_words(words, [genre]) for genre in genres])


def foreign_genre_words(table: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    """bool [I, V]: the genre words (`genre_word_matrix`, named [G, V]) that name none of each film's genres (table
    [I, G]): "comedy" for The English Patient. In the training sheet (bench/display-training.json) such a word fit its
    film 2 times in 21; a genre word of the film's own genres 109 in 109."""
    own = (table.float() @ named.float()) > 0
    return named.any(dim=0)[None] & ~own


def era_scores(items: pd.DataFrame, words: Sequence[str]) -> torch.Tensor:
    """[I, V]: 1 for the word of each film's decade (`training.vocabulary.ERA_WORDS`: 1965 -> "sixties") where the
    vocabulary has it, else 0; a film without a year has none."""
    index = {word: i for i, word in enumerate(words)}
    scores = torch.zeros(len(items), len(words))
    for row, year in enumerate(items["year"].tolist()):
        word = era_word(year)
        if word in index:
            scores[row, index[word]] = 1.0
    return scores


def word_prior_vector(words: Sequence[str], path: str | Path) -> torch.Tensor:
    """[V]: each word's prior log-odds of fitting a card it is a candidate of, learned from judged marks on other
    films (`bench.display_learn`: the file's `word_prior`, and `word_default` for a word it never saw judged)."""
    learned = json.loads(Path(path).read_text())
    prior, default = learned["word_prior"], float(learned["word_default"])
    return torch.tensor([float(prior.get(word, default)) for word in words])


def card_word_prior(words: Sequence[str], settings: FACEConfig) -> torch.Tensor | None:
    """The `word` term's prior (`word_prior_vector` of `display_card_word_prior`), or None when none is set."""
    return word_prior_vector(words, settings.display_card_word_prior) if settings.display_card_word_prior else None


def item_neighbours(item_final: torch.Tensor, count: int) -> torch.Tensor | None:
    """int64 [I, count]: each film's nearest films by cosine in the CF item space, itself left out (None for 0)."""
    if not count:
        return None
    unit = F.normalize(item_final.float(), dim=-1)
    return (unit @ unit.T).fill_diagonal_(float("-inf")).topk(count, dim=1).indices


def card_features(display: Display, table: torch.Tensor, item_scores: torch.Tensor, neighbours: torch.Tensor | None,
                  film_scores: torch.Tensor | None, title_scores: torch.Tensor | None, era: torch.Tensor,
                  word_prior: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """[I, V] per film and word, each term a card's order can weigh (`CARD_FEATURES`): `genre` and `name`, the
    display's centred closeness to the film's genres' sentences and names (`Display.fit`'s two parts); `lm`, what the
    base LLM reads in the title (`film_word_scores`, 0 when not computed); `title`, MiniLM's closeness to the title
    (`title_word_scores`); `era`, 1 for the film's decade word; `own`, the word's closeness to the nearest of the
    film's concepts (item_scores [I, K, V], -inf where a word is never the film's); `near`, the same over its CF
    neighbours' concepts (neighbours [I, N]; None: `own`); `generic`, the word's closeness to any film ("a film",
    "a story": `Display.generic_vectors`), the same for every film; `word`, the word's prior log-odds of fitting
    (`word_prior_vector`; None: 0), the same for every film."""
    zeros = torch.zeros(table.shape[0], display.word_vectors.shape[0])
    own = item_scores.max(dim=1).values.clamp_min(-1.0)
    near = own if neighbours is None else torch.stack([own[n].max(dim=0).values for n in neighbours])
    generic = (display.word_vectors.float() @ display.generic_vectors.float().T).max(dim=1).values
    has = table.any(dim=-1, keepdim=True)  # a film with no genre has no genre terms, as in `Display.fit`
    return {"genre": torch.where(has, display._closest(display.genre_vectors, table), zeros),
            "name": zeros if display.name_vectors is None else torch.where(
                has, display._closest(display.name_vectors, table), zeros),
            "lm": zeros if film_scores is None else film_scores.float(),
            "title": zeros if title_scores is None else title_scores.float(),
            "era": era, "own": own, "near": near, "generic": generic[None].expand_as(zeros),
            "word": zeros if word_prior is None else word_prior.float()[None].expand_as(zeros)}


def card_order(features: dict[str, torch.Tensor], settings: FACEConfig) -> torch.Tensor:
    """[I, V] the order of a film card's candidates (the display's fit for items): with `display_card_weights`, the
    learned sum (bias plus each feature times its weight: `bench.display_learn`, fit on a judged sheet of films
    outside the scored sample); otherwise the hand-set terms, the genre proxy plus `display_name_weight` times the
    names' term, `display_lm_weight` the LLM's, `display_title_weight` the title's, `display_era_weight` the era's."""
    learned = settings.display_card_weights
    if learned:
        order = torch.full_like(features["genre"], float(learned.get("bias", 0.0)))
        for name in CARD_FEATURES:
            if learned.get(name):
                order = order + learned[name] * features[name]
        return order
    return (features["genre"] + settings.display_name_weight * features["name"]
            + settings.display_lm_weight * features["lm"] + settings.display_title_weight * features["title"]
            + settings.display_era_weight * features["era"])


def build_display_readout(face: FACE, user_final: torch.Tensor, item_final: torch.Tensor, data: SplitData,
                          words: list[str], word_embeddings: torch.Tensor, anchors: torch.Tensor,
                          generic: torch.Tensor, sensitive: Sequence[str | None], settings: FACEConfig,
                          name_vectors: torch.Tensor | None = None, film_scores: torch.Tensor | None = None,
                          title_scores: torch.Tensor | None = None) -> tuple[Descriptors, dict[str, Any]]:
    """The serving read-out with its display rule (module docstring). anchors: [G, D] the genres' sentences
    (`training.vocabulary.genre_anchors` of `item_genres`' genres); generic: [E, D] of `GENERIC_ANCHORS`;
    sensitive: each word's sensitive topic or None; name_vectors: [G, D] of the genres' names
    (`training.vocabulary.genre_names`); film_scores: [I, V] `training.film_knowledge.film_word_scores`, added to
    the items' order times `display_lm_weight`; title_scores: [I, V] `training.film_knowledge.title_word_scores`,
    added times `display_title_weight`. Returns the read-out and the exposure of the shown words."""
    k = settings.k
    with torch.no_grad():
        penalty = None
        if settings.hub_penalty > 0:
            penalty = settings.hub_penalty * torch.stack([
                hub_penalty(face.projection(final).flatten(0, 1), face.codebook, settings.hub_neighbours)
                for final in (item_final, user_final)])
    hidden = torch.tensor([topic is not None for topic in sensitive])
    genres, table = item_genres(data)
    display = Display(candidates=settings.display_candidates, min_words=settings.display_min_words,
                      min_fit=settings.display_min_fit, user_genres=settings.display_user_genres,
                      word_vectors=F.normalize(word_embeddings.float(), dim=-1),
                      genre_vectors=F.normalize(anchors.float(), dim=-1), generic_vectors=generic, item_genres=table,
                      genre_prior=genre_prior(data, table), user_hidden=hidden,
                      closeness_weight=settings.display_closeness,
                      name_vectors=None if name_vectors is None else F.normalize(name_vectors.float(), dim=-1),
                      name_weight=settings.display_name_weight, card_weight=settings.display_card_weight,
                      genre_rule=settings.display_genre_rule, card_recent=settings.display_card_recent)
    degree = torch.as_tensor(data.item_counts(), dtype=torch.float32)
    readout = Descriptors(
        k=k, words=words, item_ids=data.items["item_id"].astype(str).tolist(),
        user_ids=data.users["user_id"].astype(str).tolist(), item_embeddings=item_final.clone(),
        user_embeddings=user_final.clone(), codebook=face.codebook.clone(), word_groups=face.word_groups.clone(),
        projection=face.projection, item_words=torch.zeros(0, k, dtype=torch.long),
        user_words=torch.zeros(0, k, dtype=torch.long), item_weights=degree.clamp_min(1.0).rsqrt(),
        user_norm=float(user_final.norm(dim=1).median()), word_penalty=penalty, display=display)

    # Items, most exposed first, so the exposure cap withholds a hub word from the least-watched films.
    item_display = dataclasses.replace(
        display, candidates=settings.display_item_candidates or display.candidates,
        min_words=settings.display_item_min_words or display.min_words,
        min_fit=display.min_fit if settings.display_item_min_fit is None else settings.display_item_min_fit)
    genre = genre_words(words, genres)
    item_scores = readout.concept_scores(item_final, "items")
    neighbours = item_neighbours(item_final, settings.display_item_neighbours)
    features = card_features(display, table, item_scores, neighbours, film_scores, title_scores,
                             era_scores(data.items, words), card_word_prior(words, settings))
    item_fit = card_order(features, settings)
    foreign = foreign_genre_words(table, genre_word_matrix(words, genres)) if settings.display_item_own_genres \
        else None
    sensitive_rows = [i for i, topic in enumerate(sensitive) if topic is not None]
    pools = []
    for item, row in enumerate(data.items.itertuples()):
        scores = item_scores[item].clone() if neighbours is None else \
            torch.cat([item_scores[item], item_scores[neighbours[item]].flatten(0, 1)])
        scores[:, unsupported(row, words, sensitive_rows)] = float("-inf")
        if foreign is not None:
            scores[:, foreign[item]] = float("-inf")
        pools.append(scores)
    item_words, exposure = read_out_cards(pools, item_fit, readout.word_groups, k, item_display, genre, degree,
                                          settings)
    readout.item_words = item_words

    if settings.display_card_centre and settings.display_card_weight:  # the prior needs the cards just chosen
        display.card_prior = torch.stack([display.history_share(item_words, h.tolist()) for h in data.train]).mean(0)
        display.card_centre = settings.display_card_centre
    user_scores = readout.concept_scores(user_final, "users")
    user_words = torch.full((data.n_users, k), -1, dtype=torch.long)
    for user in range(data.n_users):
        fit = display.history_fit(item_words, data.train[user].tolist())
        shown = choose_shown(user_scores[user], fit, readout.word_groups, k, display)
        user_words[user, : len(shown)] = torch.tensor(shown, dtype=torch.long)
    readout.user_words = user_words
    top = torch.argsort(-exposure)[:15].tolist()
    return readout, {"exposure_top": [{"word": words[w], "exposure": float(exposure[w]), "genre": bool(genre[w])}
                                      for w in top],
                     "shown_per_item": np.bincount((item_words >= 0).sum(1).numpy(), minlength=k + 1).tolist(),
                     "shown_per_user": np.bincount((user_words >= 0).sum(1).numpy(), minlength=k + 1).tolist()}


def unsupported(film: Any, words: Sequence[str], sensitive: Sequence[int]) -> list[int]:
    """The sensitive-topic words (rows of `words` among `sensitive`) a film's card may not show: those its own data
    (title, genres, description; `training.suitability.supported`) does not name. film: a row of the items table
    (`itertuples`)."""
    own = named_in(f"{film.title} {' '.join(film.genres)} {film.description or ''}")
    return [w for w in sensitive if not supported(words[w], own)]


def read_out_cards(pools: Sequence[torch.Tensor], order: torch.Tensor, groups: torch.Tensor, k: int,
                   display: Display, genre: torch.Tensor, degree: torch.Tensor, settings: FACEConfig
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every film card's shown words (int64 [I, k], -1 padded) and each word's exposure (its films' share of all
    ratings, [V]), under hub suppression by exposure: a word that is not a genre word (genre: bool [V]) is withheld
    from a film once the films already showing it hold `settings.exposure_cap` of all ratings, or once it sits on
    `settings.film_share_cap` of the films. Films are read out from the most rated down, so a hub word goes to the
    films most people see. With `settings.display_item_first_words` N, in two rounds: every film takes its first N
    words, then every film goes on to k; the words a film took in the first round stay its own, ahead of the rest.

    pools: per film, [C, V] the concept scores its candidates come from (-inf: never this film's); order: [I, V]
    the card order (`card_order`); degree: [I] each film's ratings."""
    share = degree / degree.sum()
    exposure = torch.zeros(order.shape[1])
    carriers = torch.zeros(order.shape[1], dtype=torch.long)
    most_films = max(1, round(settings.film_share_cap * len(pools)))
    item_words = torch.full((len(pools), k), -1, dtype=torch.long)
    first = settings.display_item_first_words
    rounds = [(min(first, k), dataclasses.replace(display, min_words=min(display.min_words, first))), (k, display)] \
        if 0 < first < k else [(k, display)]
    taken: list[list[int]] = [[] for _ in pools]
    for limit, rule in rounds:
        for item in torch.argsort(-degree, stable=True).tolist():
            cap = float(settings.exposure_cap - share[item])
            had = set(taken[item])

            def over_cap(w: int, cap: float = cap, had: set[int] = had) -> bool:
                return w not in had and not bool(genre[w]) and (
                    float(exposure[w]) > cap or int(carriers[w]) >= most_films)

            shown = choose_shown(pools[item], order[item], groups, limit, rule, over_cap)
            new = [w for w in shown if w not in had]
            exposure[new] += share[item]
            carriers[new] += 1
            taken[item] += new
    for item, shown in enumerate(taken):
        item_words[item, : len(shown)] = torch.tensor(shown, dtype=torch.long)
    return item_words, exposure


def built_card_features(config: Config, workdir: Path) -> tuple[Descriptors, SplitData, dict[str, torch.Tensor],
                                                                  torch.Tensor]:
    """The card features (`card_features`) of a workdir's built read-out, as its face stage computed them (the LLM's
    and the title's terms come from the face-app cache when that build filled it), and bool [I, V] each film's
    candidates: the words among the `display_item_candidates` nearest of its own or its neighbours' concepts that the
    film may show (a sensitive-topic word only where its own data names it). For `bench.display_learn`."""
    paths, settings = Workdir(workdir), config.face
    data = SplitData.load(paths.data)
    readout = Descriptors.load(paths.readout)
    display, words = readout.display, readout.words
    if display is None:
        raise ValueError(f"{paths.readout} has no display rule: build the face stage in readout mode")
    item_final = readout.item_embeddings.float()
    item_scores = readout.concept_scores(item_final, "items")
    neighbours = item_neighbours(item_final, settings.display_item_neighbours)
    film_scores = (film_word_scores(data.items, words, settings.display_lm) if settings.display_lm != "none" else None)
    titles = title_word_scores(data.items, display.word_vectors, TextEncoder())
    features = card_features(display, item_genres(data)[1], item_scores, neighbours, film_scores, titles,
                             era_scores(data.items, words), card_word_prior(words, settings))
    count = min(settings.display_item_candidates or settings.display_candidates, len(words))
    nearest = torch.zeros_like(features["own"], dtype=torch.bool)
    nearest.scatter_(1, item_scores.topk(count, dim=2).indices.flatten(1), True)
    pool = nearest if neighbours is None else nearest | torch.stack([nearest[n].any(dim=0) for n in neighbours])
    if settings.display_item_own_genres:
        genres, table = item_genres(data)
        pool &= ~foreign_genre_words(table, genre_word_matrix(words, genres))
    sensitive = [i for i, hidden in enumerate(display.user_hidden.tolist()) if hidden]
    for item, row in enumerate(data.items.itertuples()):
        pool[item, unsupported(row, words, sensitive)] = False
    return readout, data, features, pool


def run(config: Config, workdir: Path) -> Path:
    """Stage `face` in `mode: readout`: the read-out alone, on the cf stage's LightGCN of the first seed, frozen.
    No LightGCN+FACE model is trained, so the eval stage scores none (it would equal LightGCN). Output as
    `training.face.run`'s (`training.face.publish`), with the display rule's numbers under `readout`."""
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    text = TextEncoder()
    profile_texts = {"users": user_profiles(data), "items": item_profiles(data.items)}
    profiles = {kind: text.cached_encode(texts) for kind, texts in profile_texts.items()}
    settings, seed = config.face, config.cf.seeds[0]
    pretrained_path = paths.cf_run("LightGCN", seed) / MODEL_FILE
    if not pretrained_path.exists():
        raise FileNotFoundError(f"the read-out reads LightGCN: no {pretrained_path}; run the cf stage first")
    lightgcn = LightGCN(data.n_users, data.n_items, config.cf.lightgcn, data.train_pairs())
    lightgcn.load_state_dict(load_file(pretrained_path))
    with torch.no_grad():
        user_final, item_final = (t.detach() for t in lightgcn.eval().user_item_embeddings())
    anchors = text.encode_texts(genre_anchors(item_genres(data)[0]))
    words, word_embeddings = descriptor_vocabulary(text, settings, torch.cat([profiles["users"], profiles["items"]]),
                                                   anchors, item_genres(data)[0])
    if settings.profiles in ("rich", "rich-items"):
        items = text.cached_encode(rich_item_profiles(data))
        targets = (history_profiles(data, items) if settings.profiles == "rich" else profiles["users"], items)
    else:
        targets = (profiles["users"], profiles["items"])
    face, log = train_readout(user_final, item_final, text, text.word_vectors(words), word_embeddings,
                              stem_groups(words) if settings.distinct_stems else None, targets, data, settings, seed)
    sensitive = sensitive_topics(words, word_embeddings, text.encode_texts(seed_words()), seed_words())
    generic = text.encode_texts(list(GENERIC_ANCHORS))
    names = text.encode_texts(genre_names(item_genres(data)[0]))
    film_scores = (film_word_scores(data.items, words, settings.display_lm)
                   if settings.display_lm != "none" and settings.display_lm_weight else None)
    titles = (title_word_scores(data.items, F.normalize(word_embeddings.float(), dim=-1), text)
              if settings.display_title_weight else None)
    readout, shown = build_display_readout(face, user_final, item_final, data, words, word_embeddings, anchors,
                                           generic, sensitive, settings, names, film_scores, titles)
    extra = {"readout": {"seed": seed, "loss_log": log, "sensitive_words": sum(t is not None for t in sensitive),
                         **shown}}
    return publish(readout, paths, data, config, text, profile_texts, profiles, extra)
