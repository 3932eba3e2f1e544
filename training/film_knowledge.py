"""What a language model reads in a film's title, year and genres: a score per vocabulary word and film.

The display rule (`face_app.descriptors.Display`) chooses a card's words among the read-out's candidates by a fit
proxy built from the genres. Genres alone cannot tell "espionage" for The Secret Agent from "espionage" for Big
Night, both dramas. The base LLM the product already ships (SmolLM2-135M-Instruct, `face_app.llm.load_base`) can:
asked to continue

    Here are keywords describing the movie {title} ({year}), a {genres} film:

its next-token distribution over the codebook words (each is one token of SmolLM2's vocabulary with a leading
space, `face_app.descriptors.load_codebook`) says which words it expects for that film; the few genre and era
words it reads in several pieces ("thriller") score 0. The score of a word is its
log-probability twice centred: once on its mean over the vocabulary for this film (how likely against the other
words) and once on the same prompt with no film in it (pointwise mutual information, so that "movie", "summary" and
"plot", which the model expects after any such prompt, gain nothing).

One forward pass per film (about 0.2 s for 135M parameters on one CPU core; 1,682 films in 6 minutes), cached in
the face-app cache by the prompts' and words' sha256. The read-out's words still come from the CF embedding: this
score only reorders the candidates the concepts chose, like the genre proxy. A card's words are precomputed at
build time, so serving never runs this model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from face_app import sources
from face_app.llm import load_base, quiet_transformers

PROMPT = "Here are keywords describing the movie {title}, a {genres} film:"
BLANK = "Here are keywords describing the movie X, a film:"


def film_prompt(title: str, year: object, genres: Sequence[str]) -> str:
    """The prompt of one film: its title with the year when known, and its genres in lower case."""
    named = title if pd.isna(year) else f"{title} ({int(year)})"
    return PROMPT.format(title=named, genres=", ".join(g.lower() for g in genres) or "feature")


def word_tokens(tokenizer, words: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 [V]: each word's first token with a leading space; bool [V]: the word is that one token (every
    codebook word is; the genre and era words of `training.vocabulary.domain_words` are several)."""
    pieces = [tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
    return (torch.tensor([p[0] for p in pieces], dtype=torch.long),
            torch.tensor([len(p) == 1 for p in pieces], dtype=torch.bool))


def film_word_scores(items: pd.DataFrame, words: Sequence[str], base: str | Path = "smollm2",
                     cache: Path | None = None) -> torch.Tensor:
    """[I, V] the score of every word for every film of `items` (columns title, year, genres), module docstring."""
    prompts = [film_prompt(row.title, row.year, list(row.genres)) for row in items.itertuples()]
    digest = hashlib.sha256("\n".join([str(base), *prompts, "--", *words]).encode()).hexdigest()[:24]
    path = (cache or sources.cache_dir()) / "film-words" / f"{digest}.safetensors"
    if path.exists():
        return load_file(path)["scores"]
    with quiet_transformers():
        model, tokenizer = load_base(base)
    model.eval()
    tokens, whole = word_tokens(tokenizer, words)

    def next_token(prompt: str) -> torch.Tensor:
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            return model(**encoded).logits[0, -1].float().log_softmax(-1)[tokens]

    blank = next_token(BLANK)
    rows = []
    for prompt in prompts:
        logprob = next_token(prompt)
        rows.append((logprob - logprob.mean()) + (logprob - blank))
    # A word of several tokens has no next-token probability of its own (its first piece, " thr", is not
    # "thriller"): it gains and loses nothing by this term.
    scores = torch.stack(rows) * whole if rows else torch.zeros(0, len(words))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"scores": scores.contiguous()}, path)
    return scores


def plain_title(title: str) -> str:
    """A title as it is said: MovieLens's "Firm, The" -> "The Firm"; an alternate title in brackets stays."""
    match = re.match(r"^(.*?), (The|A|An|Les|La|Le|Il|El|Das|Der|Die)(\s*\(.*\))?$", title.strip())
    return f"{match.group(2)} {match.group(1)}{match.group(3) or ''}" if match else title.strip()


def title_word_scores(items: pd.DataFrame, word_vectors: torch.Tensor, text) -> torch.Tensor:
    """[I, V] how close each word comes to each film's own title (MiniLM sentence embeddings, `text` a
    `training.profiles.TextEncoder`; word_vectors [V, D] normalised), centred per word on its mean over the
    catalog's titles, so that a word close to every title gains nothing and "poetry" gains for Dead Poets Society.
    A title is what the data holds of a film beyond its genres and year; this reads it, as the LLM term reads
    what the base model knows of it."""
    titles = [plain_title(str(t)) for t in items["title"]]
    encoded = torch.nn.functional.normalize(text.cached_encode(titles).float(), dim=-1)
    similarity = encoded @ word_vectors.float().T
    return similarity - similarity.mean(dim=0, keepdim=True)
