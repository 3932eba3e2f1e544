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
