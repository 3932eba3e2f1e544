"""Every prompt template of the LLM recommender, shared by training (task data) and serving (each chat turn).

Prompts are short on purpose: on CPU the tuning cost grows with the prompt length,
and an index token is one token, so a history of 20 items of 3 levels costs 60 tokens.

The serving side builds each turn with `recommend_prompt`; the generator wraps it with
`chat_text` (the tokenizer's chat template with a one-line system message) and the
model answers with an item's index tokens. Training uses the same two functions for
its recommendation tasks, and the small alignment templates below (LC-Rec's
index <-> title and intention -> item tasks).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the chat app reads prompts without importing transformers
    from transformers import PreTrainedTokenizerBase

SYSTEM = "You recommend movies by their index."
# A position whose embedding is replaced by the visitor's history as a collaborative model sees it
# (`face_app.decoder.TastePrompt`); added to the tokenizer as a whole token, like the index tokens. It stands
# either in the prompt (a `Taste: <taste>` line) or at the answer: the last input position, right after the
# chat template's generation prompt, where the first index token is predicted.
TASTE_TOKEN = "<taste>"
TASTE_PLACES = ("prompt", "answer")

# Genre -> a word a person might ask for ("something scary"); MovieLens genres.
MOOD_WORDS = {
    "Action": "exciting",
    "Adventure": "adventurous",
    "Animation": "animated",
    "Children's": "family-friendly",
    "Comedy": "funny",
    "Crime": "gritty",
    "Documentary": "factual",
    "Drama": "serious",
    "Fantasy": "magical",
    "Film-Noir": "dark",
    "Horror": "scary",
    "Musical": "musical",
    "Mystery": "mysterious",
    "Romance": "romantic",
    "Sci-Fi": "futuristic",
    "Thriller": "tense",
    "War": "harrowing",
    "Western": "rugged",
}


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: str, taste_at_answer: bool = False) -> str:
    """The model input for one user turn: chat template, system line, generation prompt (and the `<taste>`
    token after it, for a model that reads the history there)."""
    before, after = _chat_wrapper(tokenizer.chat_template, tokenizer)
    return before + prompt + after + (TASTE_TOKEN if taste_at_answer else "")


_WRAPPERS: dict[str | None, tuple[str, str]] = {}


def _chat_wrapper(template: str | None, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The text around the user's prompt, rendered once per chat template (rendering costs ~1 ms a call)."""
    if template not in _WRAPPERS:
        if template is None:
            _WRAPPERS[template] = (f"{SYSTEM}\n", "\n")
        else:
            marker = "\x00PROMPT\x00"
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": marker}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            before, after = text.split(marker)
            _WRAPPERS[template] = (before, after)
    return _WRAPPERS[template]


def item_title(title: str, year: int | None = None) -> str:
    """`Toy Story (1995)`; the year is left out when unknown."""
    return f"{title} ({year})" if year else title


def recommend_prompt(
    history: Sequence[str],
    titles: Sequence[str] | None = None,
    user_descriptors: Sequence[str] | None = None,
    request: str | None = None,
    taste: bool = False,
) -> str:
    """The recommendation prompt of one turn.

    history: index-token strings of the history items, oldest first (may be empty).
    titles: the same items' titles, to show next to their indices (None: indices only).
    user_descriptors: words describing the user (FACE descriptors), or None.
    request: the user's free text on a follow-up turn, None on the first.
    taste: a `Taste: <taste>` line, for a model that reads the history as a collaborative soft token.
    """
    if titles is not None and len(titles) != len(history):
        raise ValueError(f"{len(history)} history items but {len(titles)} titles")
    lines = []
    if taste:
        lines.append("Taste: " + TASTE_TOKEN)
    if user_descriptors:
        lines.append("User: " + ", ".join(user_descriptors))
    if titles is None:
        shown = "".join(history)  # index tokens delimit themselves (every item starts with an <a_*>)
    else:
        shown = "; ".join(f"{tokens} {title}" for tokens, title in zip(history, titles, strict=True))
    lines.append("History: " + (shown or "none"))
    if request:
        lines.append("Request: " + request.strip())
    lines.append("Next:")
    return "\n".join(lines)


def index_to_title_prompt(item_tokens: str) -> str:
    """Index -> title task: the response is `item_title(...)`."""
    return f"Title of {item_tokens}?"


def title_to_index_prompt(title: str) -> str:
    """Title -> index task: the response is the item's index tokens."""
    return f"Index of {title}?"


def decade(year: int) -> str:
    """1994 -> `the 1990s`."""
    return f"the {year // 10 * 10}s"


def intention(
    rng: random.Random,
    genres: Sequence[str],
    year: int | None,
    descriptors: Sequence[str] = (),
    like_title: str | None = None,
) -> str:
    """A request a person could make for an item, synthesised from its metadata.

    One of: a genre (and decade), a mood word from a genre, the item's descriptors, or
    "something like <title>" of a related item (`like_title`). Deterministic given `rng`.
    """
    options = []
    if genres:
        genre = rng.choice(list(genres))
        options.append(f"a {genre.lower()} movie" + (f" from {decade(year)}" if year else ""))
        options.append(f"something {MOOD_WORDS.get(genre, genre.lower())}")
    if year:
        options.append(f"a movie from {decade(year)}")
    if descriptors:
        options.append("something " + ", ".join(list(descriptors)[:3]))
    if like_title:
        options.append(f"something like {like_title}")
    if not options:
        return "something good"
    return rng.choice(options)


def history_words(genre_lists: Sequence[Sequence[str]], k: int = 3) -> list[str]:
    """Words for a user from their history's most frequent genres (when no FACE descriptors exist)."""
    counts: dict[str, int] = {}
    for genres in genre_lists:
        for genre in genres:
            counts[genre] = counts.get(genre, 0) + 1
    top = sorted(counts, key=lambda g: (-counts[g], g))[:k]
    return [MOOD_WORDS.get(g, g.lower()) for g in top]
