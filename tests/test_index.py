"""ItemIndex (item <-> code <-> tokens, JSON) and PrefixTrie (valid token-id paths, exclusions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from face_app.index import ItemIndex, PrefixTrie, code_token


def small_index() -> ItemIndex:
    return ItemIndex(["10", "11", "12", "13"], [(0, 1, 2), (0, 1, 3), (0, 2, 0), (3, 0, 0)], codebook_size=4)


def test_item_tokens_are_one_letter_per_level() -> None:
    index = small_index()
    assert index.tokens("11") == ["<a_0>", "<b_1>", "<c_3>"]
    assert index.text("13") == "<a_3><b_0><c_0>"
    assert index.item_for_code((0, 2, 0)) == "12" and index.item_for_code((1, 1, 1)) is None
    assert code_token(2, 7) == "<c_7>"
    assert len(index.vocabulary()) == 3 * 4 and index.vocabulary()[4] == "<b_0>"


def test_index_round_trips_through_json(tmp_path: Path) -> None:
    index = small_index()
    index.meta["recon_loss"] = 0.5
    index.save(tmp_path / "index" / "item_index.json")
    loaded = ItemIndex.load(tmp_path / "index" / "item_index.json")
    assert loaded.item_ids == index.item_ids and loaded.codes == index.codes
    assert loaded.codebook_size == 4 and loaded.levels == 3 and loaded.meta == {"recon_loss": 0.5}


def test_collisions_and_code_usage_are_counted() -> None:
    assert small_index().collisions() == 0
    assert small_index().code_usage() == [2 / 4, 3 / 4, 3 / 4]
    clash = ItemIndex(["a", "b", "c"], [(1, 1), (1, 1), (0, 1)], codebook_size=2)
    assert clash.collisions() == 1


def test_trie_lists_children_and_leaves() -> None:
    trie = PrefixTrie({"x": [5, 7, 9], "y": [5, 7, 8], "z": [5, 6, 9], "w": [4, 6, 9]})
    assert sorted(trie.children([])) == [4, 5]
    assert sorted(trie.children([5])) == [6, 7]
    assert sorted(trie.children([5, 7])) == [8, 9]
    assert trie.children([5, 7, 9]) == [] and trie.children([3]) == []
    assert trie.leaf([5, 7, 9]) == "x" and trie.leaf([5, 7]) is None
    assert len(trie) == 4 and trie.depth == 3


def test_trie_prunes_subtrees_whose_items_are_all_excluded() -> None:
    trie = PrefixTrie({"x": [5, 7, 9], "y": [5, 7, 8], "z": [5, 6, 9], "w": [4, 6, 9]})
    excluded = trie.excluded_counts(["x", "y", "not-an-item"])
    assert trie.children([5], excluded) == [6]
    assert sorted(trie.children([], excluded)) == [4, 5]
    excluded = trie.excluded_counts(["x", "y", "z"])
    assert trie.children([], excluded) == [4]


def test_trie_refuses_two_items_on_one_path() -> None:
    with pytest.raises(ValueError, match="share the token sequence"):
        PrefixTrie({"x": [1, 2], "y": [1, 2]})


def test_the_best_bonus_below_each_prefix() -> None:
    trie = PrefixTrie({"x": [5, 7, 9], "y": [5, 7, 8], "z": [5, 6, 9], "w": [4, 6, 9]})
    best = trie.best_below({"x": -2.0, "y": -1.0, "z": -3.0})  # w has none: 0
    assert best[(5, 7)] == -1.0 and best[(5, 6)] == -3.0 and best[(5,)] == -1.0
    assert best[(4,)] == 0.0 and best[()] == 0.0 and best[(5, 7, 9)] == -2.0


def test_best_below_and_excluded_counts_match_a_walk_over_every_path() -> None:
    """The numpy reductions give what walking each item's path gives, on a trie with paths of two lengths (an
    index with a collision level) and a bonus that leaves some items out."""
    rng = np.random.default_rng(3)
    paths: dict[str, tuple[int, ...]] = {}
    while len(paths) < 300:
        path = tuple(int(c) for c in rng.integers(0, 6, size=int(rng.choice([3, 4]))))
        if path not in paths.values() and not any(p[:len(path)] == path or path[:len(p)] == p for p in paths.values()):
            paths[f"i{len(paths)}"] = path
    trie = PrefixTrie(paths)
    bonus = {item: float(rng.normal()) for item in list(paths)[::3]}
    walked: dict[tuple[int, ...], float] = {}
    for item, path in paths.items():
        for depth in range(len(path) + 1):
            walked[path[:depth]] = max(walked.get(path[:depth], -np.inf), bonus.get(item, 0.0))
    assert trie.best_below(bonus) == walked
    exclude = [*list(paths)[::7], "not-an-item"]
    counted: dict[tuple[int, ...], int] = {}
    for item in set(exclude) & set(paths):
        for depth in range(len(paths[item]) + 1):
            counted[paths[item][:depth]] = counted.get(paths[item][:depth], 0) + 1
    assert trie.excluded_counts(exclude) == counted
    assert trie.excluded_counts([]) == {}
