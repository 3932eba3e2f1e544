"""What FACE aligns descriptors with: each entity's text profile, and the frozen MiniLM that embeds it.

Profiles come from the data: an item's title, year and genres (and description where the source has one); a
user's demographics and the genres and titles of their training history. `TextEncoder` is the frozen
all-MiniLM-L6-v2 as sentence-transformers runs it, with a second entry point from token-embedding space so
that gradients reach FACE's concept vectors.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from face_app import sources
from face_app.descriptors import minilm_path
from training.data import SplitData


def item_profiles(items: pd.DataFrame) -> list[str]:
    """One line per item: title, year, genres (and the description where the source has one)."""
    profiles = []
    for row in items.itertuples():
        year = f" ({row.year})" if not pd.isna(row.year) else ""
        genres = f" Genres: {', '.join(row.genres)}." if len(row.genres) else ""
        description = f" {row.description[:200]}" if row.description else ""
        profiles.append(f"{row.title}{year}.{genres}{description}")
    return profiles


def user_profiles(data: SplitData, titles_per_user: int = 8, genres_per_user: int = 4) -> list[str]:
    """One line per user: demographics, most-watched genres and most recent titles of the training history."""
    users = data.users
    titles, genres = data.items["title"].tolist(), data.items["genres"].tolist()
    profiles = []
    for user in range(data.n_users):
        row = users.iloc[user]
        who = []
        if "age" in users and not pd.isna(row["age"]):
            who.append(f"{row['age']}-year-old")
        if "gender" in users and isinstance(row["gender"], str):
            who.append({"M": "man", "F": "woman"}.get(row["gender"], row["gender"]))
        else:
            who.append("person")
        if "occupation" in users and isinstance(row["occupation"], str) and row["occupation"] not in ("none", "other"):
            who.append(f"working as {row['occupation']}")
        history = data.train[user]
        counts = Counter(g for item in history for g in genres[item])
        liked = ", ".join(g for g, _ in counts.most_common(genres_per_user))
        recent = "; ".join(titles[item] for item in history[::-1][:titles_per_user])
        profiles.append(f"A {' '.join(who)}. Likes {liked or 'anything'}. Watched: {recent}.")
    return profiles


def co_watched(data: SplitData, top: int = 3) -> list[list[int]]:
    """Per item, the `top` items most often in the same training histories, by cosine of their user sets
    (c_ij / sqrt(n_i n_j), so that the most popular films do not top every list); ties by item index."""
    users, items = data.train_pairs()
    x = torch.zeros(data.n_users, data.n_items)
    x[users, items] = 1.0
    counts = x.sum(0)
    co = (x.T @ x) / (counts[:, None] * counts[None, :]).clamp_min(1.0).sqrt()
    co.fill_diagonal_(-1.0)
    order = np.lexsort((np.arange(data.n_items)[None, :].repeat(data.n_items, 0), -co.numpy()), axis=1)
    return [[int(j) for j in row[:top] if counts[j] > 0] if counts[i] > 0 else [] for i, row in enumerate(order)]


def user_groups(users: Any) -> list[list[str]]:
    """Each user's demographic groups: gender, age band, occupation (what the dataset has of them)."""
    out = []
    for row in users.itertuples():
        groups = []
        gender = getattr(row, "gender", None)
        if isinstance(gender, str):
            groups.append(f"gender {gender}")
        age = getattr(row, "age", None)
        if age is not None and not (isinstance(age, float) and np.isnan(age)):
            band = "under 25" if age < 25 else "25-34" if age < 35 else "35-49" if age < 50 else "50 and over"
            groups.append(f"age {band}")
        occupation = getattr(row, "occupation", None)
        if isinstance(occupation, str) and occupation not in ("none", "other"):
            groups.append(f"occupation {occupation}")
        out.append(groups)
    return out


def audience(data: SplitData, min_share: float = 0.6) -> list[str]:
    """Per item, its audience in words where the training data says something: the gender share when it is at
    least `min_share` one way, and the age band and occupation of its raters with the highest lift (at least
    1.5) over all users (an empty string for an item nobody rated). Men are most raters of most films in
    MovieLens, so only a share of women at least `min_share`, or 1.5 times theirs among all users, is said."""
    groups = user_groups(data.users)
    everyone = Counter(g for gs in groups for g in gs)
    raters: list[list[int]] = [[] for _ in range(data.n_items)]
    for user, history in enumerate(data.train):
        for item in history:
            raters[item].append(user)
    out = []
    for users in raters:
        if not users:
            out.append("")
            continue
        mine = Counter(g for u in users for g in groups[u])
        words = []
        women = mine.get("gender F", 0) / len(users)
        if women >= min_share or women >= 1.5 * everyone.get("gender F", 0) / data.n_users:
            words.append("many women" if women < min_share else "mostly women")
        for prefix in ("age ", "occupation "):
            lifts = {g: (mine[g] / len(users)) / (everyone[g] / data.n_users) for g in mine
                     if g.startswith(prefix) and mine[g] >= 3}
            if lifts and max(lifts.values()) >= 1.5:
                best = max(lifts, key=lambda g: (lifts[g], g))
                words.append(best[len(prefix):] + ("" if prefix == "occupation " else " year olds"))
        out.append(", ".join(words))
    return out


def rich_item_profiles(data: SplitData, co_titles: int = 3) -> list[str]:
    """One line per item, from the data alone: title, year and genres, its decade, the titles most often watched
    with it (`co_watched`) and its audience (`audience`)."""
    titles = data.items["title"].tolist()
    neighbours, crowd = co_watched(data, co_titles), audience(data)
    profiles = []
    for i, row in enumerate(data.items.itertuples()):
        parts = [f"{row.title}" + (f" ({row.year})" if not pd.isna(row.year) else "") + "."]
        if len(row.genres):
            parts.append(f"Genres: {', '.join(g.lower() for g in row.genres)}."
                         + (f" A film of the {int(row.year) // 10 * 10}s." if not pd.isna(row.year) else ""))
        if neighbours[i]:
            parts.append("Often watched with " + "; ".join(titles[j] for j in neighbours[i]) + ".")
        if crowd[i]:
            parts.append(f"Audience: {crowd[i]}.")
        if row.description:
            parts.append(row.description[:200])
        profiles.append(" ".join(parts))
    return profiles


def item_genres(data: SplitData) -> tuple[list[str], torch.Tensor]:
    """The catalog's genres (sorted) and bool [I, G], which item has which."""
    genres = sorted({g for gs in data.items["genres"] for g in gs})
    where = {g: i for i, g in enumerate(genres)}
    table = torch.zeros(data.n_items, len(genres), dtype=torch.bool)
    for item, gs in enumerate(data.items["genres"]):
        for g in gs:
            table[item, where[g]] = True
    return genres, table


def genre_prior(data: SplitData, table: torch.Tensor) -> torch.Tensor:
    """[G]: each genre's share of the genre labels of all training interactions (an item counts once per
    interaction and genre)."""
    counts = torch.as_tensor(data.item_counts(), dtype=torch.float32) @ table.float()
    return counts / counts.sum().clamp_min(1.0)


# --- Text encoder (frozen MiniLM) ---------------------------------------------------------------


class TextEncoder:
    """The frozen all-MiniLM-L6-v2: sentence embeddings of texts, and of word-vector sequences.

    `encode_texts` is sentence-transformers' encode (mean pooling, L2-normalised).
    `encode_word_vectors` runs [CLS] v_1 .. v_K [SEP] through the same network from
    token-embedding space, so the gradient reaches the vectors; for codebook rows it
    equals `encode_texts(" ".join(words))` (every codebook word is one WordPiece token).
    """

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer  # heavy: loaded only when encoding

        self.model = SentenceTransformer(str(minilm_path()), device="cpu")
        self.model.eval()
        self.bert = self.model[0].auto_model
        self.bert.requires_grad_(False)
        self.tokenizer = self.model.tokenizer
        self.word_embeddings = self.bert.get_input_embeddings().weight.detach()

    def word_vectors(self, words: Sequence[str]) -> torch.Tensor:
        """Frozen token-embedding rows of single-token words: [V, D]."""
        ids = self.tokenizer.convert_tokens_to_ids(list(words))
        return self.word_embeddings[torch.tensor(ids)].clone()

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(
                list(texts), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True
            ).cpu()

    def encode_word_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors: [B, K, D] in token-embedding space -> [B, D] normalised sentence embeddings."""
        special = self.word_embeddings[[self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]]
        batch = len(vectors)
        sequence = torch.cat([special[0].expand(batch, 1, -1), vectors, special[1].expand(batch, 1, -1)], dim=1)
        hidden = self.bert(inputs_embeds=sequence).last_hidden_state
        return F.normalize(hidden.mean(dim=1), dim=-1)

    def cached_encode(self, texts: Sequence[str]) -> torch.Tensor:
        """encode_texts, cached in the face-app cache by the texts' sha256 (profiles are re-encoded rarely)."""
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
        path = sources.cache_dir() / "profile-embeddings" / f"minilm-{digest}.safetensors"
        if path.exists():
            return load_file(path)["embeddings"]
        embeddings = self.encode_texts(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": embeddings.contiguous()}, path)
        return embeddings
