"""Which codebook words FACE may use as descriptors, and how informative the chosen words are.

The full codebook (`face_app.descriptors.load_codebook`, ~13k whole words shared by MiniLM and SmolLM2) holds
every readable English word: reporting verbs ("confirms", "warns"), administrative nouns ("certification"),
and several spellings and inflections of one word ("humour", "humor"; "comedy", "comedies"). `describing_words`
restricts it by rule, in three steps:

1. One word per normal form (`normal_form`: the lemma, from lemminflect's English lexicon, in American
   spelling): "humour" and "humor", "comedy" and "comedies", "theatre" and "theaters" become one codebook row,
   the form the encoder's vocabulary lists first (WordPiece ids run roughly by corpus frequency).
2. Parts of speech that describe films, people and moods: a word stays when the lexicon knows it as a noun or
   an adjective, or does not know it at all and it has 4 letters or more (genre and foreign words: "noir",
   "thriller"); words the lexicon knows only as verbs or adverbs go ("confirms", "predict", "respectively"),
   and so do unknown 3-letter strings ("apr", "ibn").
3. Words of the domain: each word's relevance is the mean of its `RELEVANCE_NEIGHBOURS` highest cosines (MiniLM
   sentence embeddings) to the catalog's item and user profiles; the `share` most relevant stay
   ("certification" and "diagnostic" rank in the last fifth of the ML-100k vocabulary).

Why lemminflect rather than a hand list: it is a maintained lexicon with its data inside the wheel (no download
at run time), and its part-of-speech table is what tells "warns" from "war".

`word_report` measures the chosen words per kind (items, users): distinct words, the most common words with
the share of entities they describe and their best lift over the entity groups of at least `MIN_GROUP`
members (genres for items, gender, age band and occupation for users), the common words that tell nothing (on
more than `COMMON_SHARE` of the entities with a best lift under `MIN_LIFT`), and the mean leave-one-out lift of
an entity's words for its own groups against random words of the same vocabulary. `faithfulness`: does an
entity's descriptor text retrieve its own profile among all profiles of its kind, against random words?
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lemminflect
import numpy as np
import torch

from training.profiles import TextEncoder

RELEVANCE_NEIGHBOURS = 50
# A word on more than COMMON_SHARE of the entities of its kind must have a lift of at least MIN_LIFT on some group.
COMMON_SHARE = 0.05
MIN_LIFT = 1.5
MIN_GROUP = 20
DESCRIBING_POS = ("NOUN", "ADJ", "PROPN")
UNKNOWN_MIN_LETTERS = 4
# British -> American spelling, at the end of a lemma: humour -> humor, theatre -> theater, catalogue -> catalog,
# realise -> realize, analyse -> analyze, defence -> defense. At least three letters must precede the ending, so
# "tour", "hour" and "rise" are left alone.
SPELLING = [(re.compile(r"^(\w{3,})our$"), r"\1or"), (re.compile(r"^(\w{3,})tre$"), r"\1ter"),
            (re.compile(r"^(\w{3,})ogue$"), r"\1og"), (re.compile(r"^(\w{3,})ise$"), r"\1ize"),
            (re.compile(r"^(\w{3,})yse$"), r"\1yze"), (re.compile(r"^(\w{3,})ence$"), r"\1ense")]
# The same endings before a suffix the lemma keeps (favourite, colourful, organisation).
SPELLING_INSIDE = [(re.compile(r"^(\w{3,})our(ite|ites|ful|able|less)$"), r"\1or\2"),
                   (re.compile(r"^(\w{3,})is(ation|ations)$"), r"\1iz\2")]


def american(word: str) -> str:
    for pattern, replacement in SPELLING_INSIDE + SPELLING:
        if pattern.match(word):
            return pattern.sub(replacement, word)
    return word


def lemma(word: str) -> str:
    """The word's lemma, a noun's or an adjective's before a verb's ("kids" -> "kid", "comedies" -> "comedy")."""
    lemmas = lemminflect.getAllLemmas(word)
    for pos in (*DESCRIBING_POS, "VERB", "ADV"):
        if pos in lemmas:
            return lemmas[pos][0]
    return word


def normal_form(word: str) -> str:
    """One form for a word's spellings and inflections: the lemma in American spelling."""
    return american(lemma(word))


def describing(word: str) -> bool:
    """A noun or an adjective by the lexicon, not a verb or an adverb alone; a word it does not know needs
    `UNKNOWN_MIN_LETTERS` letters (shorter unknown strings are abbreviations and fragments: "apr", "ibn", "sid")."""
    lemmas = lemminflect.getAllLemmas(word)
    if not lemmas:
        return len(word) >= UNKNOWN_MIN_LETTERS
    return any(pos in lemmas for pos in DESCRIBING_POS)


def one_per_form(words: Sequence[str]) -> list[int]:
    """Indices of the first word of each normal form (`words` in the encoder's vocabulary order)."""
    seen: set[str] = set()
    kept = []
    for i, word in enumerate(words):
        form = normal_form(word)
        if form not in seen:
            seen.add(form)
            kept.append(i)
    return kept


def relevance(word_embeddings: torch.Tensor, profiles: torch.Tensor, neighbours: int = RELEVANCE_NEIGHBOURS,
              chunk: int = 2048) -> torch.Tensor:
    """float [V]: each word's mean cosine to its `neighbours` closest profiles (both normalised, [V, D], [N, D])."""
    top = min(neighbours, len(profiles))
    return torch.cat([(word_embeddings[s : s + chunk] @ profiles.T).topk(top, dim=1).values.mean(1)
                      for s in range(0, len(word_embeddings), chunk)])


def describing_words(words: Sequence[str], word_embeddings: torch.Tensor, profiles: torch.Tensor,
                     share: float) -> list[int]:
    """Indices into `words` of the descriptor vocabulary (the module docstring's three steps), in `words` order.

    word_embeddings: [V, D] sentence embeddings of the words alone; profiles: [N, D] of every entity's profile."""
    merged = [i for i in one_per_form(words) if describing(words[i])]
    if share >= 1.0 or not merged:
        return merged
    scores = relevance(word_embeddings[merged], profiles)
    keep = max(1, round(share * len(merged)))
    chosen = set(scores.topk(keep).indices.tolist())
    return [index for position, index in enumerate(merged) if position in chosen]


# Sentences a word that fits any film is close to (the display proxy's floor, face_app.descriptors.Display).
GENERIC_ANCHORS = ("a film", "a story", "a character", "a scene")


def genre_anchors(genres: Sequence[str]) -> list[str]:
    """The sentence each genre is read as: "a {genre} film" ("a film-noir film", "a children's film")."""
    return [f"a {genre.lower()} film" for genre in genres]


def genre_names(genres: Sequence[str]) -> list[str]:
    """Each genre's name as words: "Children's" -> "children", "Film-Noir" -> "film noir", "Sci-Fi" -> "sci fi"."""
    return [genre.lower().replace("'s", "").replace("-", " ") for genre in genres]


# Decades as words, the era a card may name ("sixties"); only those MiniLM reads as one token join the vocabulary.
ERA_WORDS = ("twenties", "thirties", "forties", "fifties", "sixties", "seventies", "eighties", "nineties")


def era_word(year: Any) -> str | None:
    """The word of a year's decade in this century (1965 -> "sixties"); None for no year or one outside 1920-1999."""
    try:
        decade = int(year) // 10 * 10
    except (TypeError, ValueError):
        return None
    return ERA_WORDS[(decade - 1920) // 10] if 1920 <= decade <= 1990 else None


def domain_words(genres: Sequence[str], codebook: Sequence[str], encoder_vocab: dict[str, int]) -> list[str]:
    """The genre and era words the codebook lacks because SmolLM2 reads them in several pieces (" thr" "iller",
    " no" "ir", " sevent" "ies"): the words of the genres' names (`genre_names`) of 4 letters or more but "film"
    ("film noir" -> "noir"; "sci fi" gives none) and `ERA_WORDS`,
    kept when MiniLM reads the word as one token (the codebook's vectors are MiniLM token rows) and it is not in
    `codebook` already. The rule asks for genres and eras; these are the ones a single-token codebook cannot
    spell ("thriller" for the 251 thrillers of ML-100k)."""
    have = set(codebook)
    named = [word for name in genre_names(genres) for word in name.split() if len(word) >= 4 and word != "film"]
    candidates = named + list(ERA_WORDS)
    return [word for word in dict.fromkeys(candidates) if word not in have and word in encoder_vocab]


def film_words(words: Sequence[str], word_embeddings: torch.Tensor, anchors: torch.Tensor, share: float) -> list[int]:
    """Indices into `words` of the `film` vocabulary, in `words` order: `describing`'s first two steps, then the
    `share` of words that come closest to one of the catalog's genres compared with the others (their highest
    cosine to a `genre_anchors` sentence less their mean cosine to all of them, anchors [G, D] normalised). Raw
    closeness to every profile, `describing`'s third step, keeps words that fit any film ("definitive", "film") or
    none ("laptop"); this keeps the words of the moods, themes, settings and characters that films of one genre
    share more than others ("cowboy", "spaceship", "ghost", "detective")."""
    merged = [i for i in one_per_form(words) if describing(words[i])]
    if share >= 1.0 or not merged:
        return merged
    similarity = word_embeddings[merged] @ anchors.T
    scores = similarity.max(dim=1).values - similarity.mean(dim=1)
    chosen = set(scores.topk(max(1, round(share * len(merged)))).indices.tolist())
    return [index for position, index in enumerate(merged) if position in chosen]


# --- How informative the chosen words are ------------------------------------------------------------------------


@dataclass
class Counts:
    """Co-occurrence counts of one kind of entity: n entities, entities per group, carriers per word (an entity
    counts once per word), and entities per (word, group)."""

    n: int
    group_sizes: Counter
    carriers: Counter
    joint: Counter

    @classmethod
    def of(cls, entity_words: Sequence[Sequence[str]], groups: Sequence[Sequence[str]]) -> Counts:
        pairs = list(zip(entity_words, groups, strict=True))
        return cls(len(pairs), Counter(g for _, gs in pairs for g in set(gs)),
                   Counter(w for ws, _ in pairs for w in set(ws)),
                   Counter((w, g) for ws, gs in pairs for w in set(ws) for g in set(gs)))

    def lifts(self, min_group: int = MIN_GROUP) -> dict[str, dict[str, float]]:
        """word -> group -> lift, P(group | entity carries word) / P(group), for groups of at least `min_group`
        entities (in a smaller group a handful of carriers makes any word look telling)."""
        sizes = {g: size for g, size in self.group_sizes.items() if size >= min_group}
        return {w: {g: (self.joint[w, g] / count) / (size / self.n) for g, size in sizes.items()}
                for w, count in self.carriers.items()}


def lifts(entity_words: Sequence[Sequence[str]], groups: Sequence[Sequence[str]],
          min_group: int = MIN_GROUP) -> dict[str, dict[str, float]]:
    """`Counts.lifts` of the entities' words and groups."""
    return Counts.of(entity_words, groups).lifts(min_group)


def own_group_lift(entity_words: Sequence[Sequence[str]], groups: Sequence[Sequence[str]]) -> float:
    """Mean leave-one-out lift of an entity's words for its own groups.

    For entity e and each of its words w carried by at least one other entity: the share of the other carriers
    of w in each of e's groups (of two entities or more), over that group's share of all other entities,
    averaged over e's groups. Random words score about 1; words that say what an entity is score more."""
    c = Counts.of(entity_words, groups)
    values = []
    for ws, gs in zip(entity_words, groups, strict=True):
        own = [g for g in set(gs) if c.group_sizes[g] > 1]
        for w in set(ws):
            others = c.carriers[w] - 1
            if own and others > 0:
                values.append(np.mean([((c.joint[w, g] - 1) / others) / ((c.group_sizes[g] - 1) / (c.n - 1))
                                       for g in own]))
    return float(np.mean(values)) if values else float("nan")


def word_report(entity_words: Sequence[Sequence[str]], groups: Sequence[Sequence[str]], vocabulary: Sequence[str],
                k: int, top: int = 10, seed: int = 0, min_group: int = MIN_GROUP) -> dict[str, Any]:
    """The word measures of one kind of entity (see the module docstring)."""
    c = Counts.of(entity_words, groups)
    table = c.lifts(min_group)

    def best(word: str) -> tuple[str, float]:
        return max(table[word].items(), key=lambda pair: pair[1], default=("", 0.0))

    common = sorted(c.carriers, key=lambda w: (-c.carriers[w], w))
    rng = np.random.default_rng(seed)
    random_words = [[vocabulary[i] for i in rng.choice(len(vocabulary), size=min(k, len(vocabulary)), replace=False)]
                    for _ in range(c.n)]
    uninformative = [w for w in common if c.carriers[w] / c.n > COMMON_SHARE and best(w)[1] < MIN_LIFT]
    return {
        "entities": c.n,
        "distinct_words": len(c.carriers),
        "most_common": [{"word": w, "share": c.carriers[w] / c.n, "best_group": best(w)[0], "lift": best(w)[1]}
                        for w in common[:top]],
        "common_uninformative": [{"word": w, "share": c.carriers[w] / c.n, "lift": best(w)[1]}
                                 for w in uninformative],
        "own_group_lift": own_group_lift(entity_words, groups),
        "random_own_group_lift": own_group_lift(random_words, groups),
    }


# --- Faithfulness: do the words retrieve their entity's profile? ---------------------------------------------


def retrieval_metrics(queries: torch.Tensor, profiles: torch.Tensor) -> dict[str, float]:
    """Query i should retrieve profile i: hit@10 and MRR of its rank among all profiles.

    queries, profiles: [N, D] normalised embeddings. Ties count against the query.
    """
    similarity = queries @ profiles.T
    own = similarity.diagonal()[:, None]
    rank = (similarity >= own).sum(dim=1) - 1  # 0-based; ties with others rank the own profile lower
    return {"hit@10": float((rank < 10).float().mean()), "mrr": float((1.0 / (rank + 1).float()).mean())}


def faithfulness(
    text: TextEncoder, described: dict[str, list[list[str]]], profiles: dict[str, torch.Tensor],
    words: list[str], k: int, seed: int = 0, random_draws: int = 20,
) -> dict[str, Any]:
    """Does each entity's descriptor text retrieve its own profile among all profiles of its kind?

    described: {"items": words per item, "users": words per user}; profiles: the same
    kinds' profile embeddings. The baseline gives every entity as many distinct random vocabulary words as it
    shows (at most k: a display rule shows fewer than k, and more words retrieve more, random or not),
    averaged over `random_draws` draws: one draw's hit@10 on 943 users is about ten hits (the third display's users
    read 10.7x against 5 draws of 8 words and 7.1x against this baseline, `python -m bench.readout_levers
    --rescore --levers third-display-title1`). Metrics are averaged over all entities of both
    kinds (and given per kind).
    """
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"k": k, "per_kind": {}, "random_draws": random_draws}
    totals = {"hit@10": 0.0, "mrr": 0.0, "random_hit@10": 0.0, "random_mrr": 0.0}
    count = 0
    for kind, entity_words in described.items():
        real = retrieval_metrics(text.encode_texts([" ".join(w) for w in entity_words]), profiles[kind])
        draws = []
        for _ in range(random_draws):
            random_words = [
                [words[i] for i in torch.randperm(len(words), generator=generator)[:min(k, len(w))].tolist()]
                for w in entity_words
            ]
            draws.append(retrieval_metrics(text.encode_texts([" ".join(w) for w in random_words]), profiles[kind]))
        chance = {name: float(np.mean([d[name] for d in draws])) for name in ("hit@10", "mrr")}
        kind_metrics = {**real, "random_hit@10": chance["hit@10"], "random_mrr": chance["mrr"]}
        kind_metrics["n"] = len(entity_words)
        out["per_kind"][kind] = kind_metrics
        for name in totals:
            totals[name] += kind_metrics[name] * len(entity_words)
        count += len(entity_words)
    out.update({name: value / count for name, value in totals.items()})
    out["distinct_words"] = len({w for entity_words in described.values() for ws in entity_words for w in ws})
    return out


# --- The automatic fit proxy -------------------------------------------------------------------------------------


class ProxyFit:
    """The display rule's fit proxy (`face_app.descriptors.Display.fit`: closeness to the entity's genres, centred
    over all genres) for any words and the entities of a dataset: what bench.descriptor_fit compares with the
    readers' marks."""

    def __init__(self, text: TextEncoder, display: Any, genres: dict[str, dict[str, torch.Tensor]]) -> None:
        self.text, self.display, self.genres = text, display, genres

    @classmethod
    def for_dataset(cls, dataset: Any, data_config: dict[str, Any], user_genres: int = 4,
                    name_weight: float = 0.0) -> ProxyFit:
        from face_app.descriptors import Display
        from training.config import DataConfig
        from training.data import split_dataset
        from training.profiles import genre_prior, item_genres

        data = split_dataset(dataset, DataConfig(**data_config))
        text = TextEncoder()
        names, table = item_genres(data)
        display = Display(candidates=0, min_words=0, min_fit=0.0, user_genres=user_genres,
                          word_vectors=torch.zeros(0, 1), genre_vectors=text.encode_texts(genre_anchors(names)),
                          generic_vectors=text.encode_texts(list(GENERIC_ANCHORS)),
                          name_vectors=text.encode_texts(genre_names(names)), name_weight=name_weight,
                          item_genres=table, genre_prior=genre_prior(data, table), user_hidden=torch.zeros(0))
        genres = {"items": dict(zip(data.items["item_id"].astype(str), table, strict=True)),
                  "users": {str(u): display.history_genres(h.tolist())
                            for u, h in zip(data.users["user_id"], data.train, strict=True)}}
        return cls(text, display, genres)

    def scores(self, kind: str, entity: str, words: Sequence[str]) -> list[float]:
        self.display.word_vectors = self.text.encode_texts(list(words))
        return self.display.fit(self.genres[kind][str(entity)][None])[0].tolist()
