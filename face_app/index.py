"""Item indices (LC-Rec): every item is a short code, one token per level, and a prefix trie of the valid codes.

An item's code `(12, 3, 40)` is written as the token strings `<a_12><b_3><c_40>` (level
letters a, b, c, ...). The codes come from an RQ-VAE (`training/rqvae.py`); this module
only holds them: `ItemIndex` maps item id <-> code <-> tokens and saves as JSON, and
`PrefixTrie` is the trie over the token-id sequences of the valid codes that the
constrained decoder walks.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def code_token(level: int, code: int) -> str:
    """The token string of `code` at `level`: (0, 12) -> `<a_12>`."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


@dataclass
class ItemIndex:
    """Item id <-> code tuple <-> index-token strings.

    item_ids: dataset item ids (strings), in catalog order.
    codes: one code tuple per item, all of length `levels`, all distinct.
    codebook_size: codes per level (every level the same size).
    meta: what built it (report numbers, embedding kind); saved alongside.
    """

    item_ids: list[str]
    codes: list[tuple[int, ...]]
    codebook_size: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.codes):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.codes)} codes")
        self.item_ids = [str(i) for i in self.item_ids]
        self.codes = [tuple(int(c) for c in code) for code in self.codes]
        self._by_item = {item: n for n, item in enumerate(self.item_ids)}
        self._by_code = {code: item for item, code in zip(self.item_ids, self.codes, strict=True)}

    @property
    def levels(self) -> int:
        return len(self.codes[0]) if self.codes else 0

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._by_item

    def code(self, item_id: str) -> tuple[int, ...]:
        return self.codes[self._by_item[str(item_id)]]

    def tokens(self, item_id: str) -> list[str]:
        """`["<a_12>", "<b_3>", "<c_40>"]` for one item."""
        return [code_token(level, c) for level, c in enumerate(self.code(item_id))]

    def text(self, item_id: str) -> str:
        """`"<a_12><b_3><c_40>"`: the item as the LLM reads and writes it."""
        return "".join(self.tokens(item_id))

    def item_for_code(self, code: Sequence[int]) -> str | None:
        return self._by_code.get(tuple(code))

    def vocabulary(self) -> list[str]:
        """Every index token a code of this shape can use, level by level (what the tokenizer gets)."""
        return [code_token(level, c) for level in range(self.levels) for c in range(self.codebook_size)]

    def collisions(self) -> int:
        """Items whose code another item already has (0 for a usable index)."""
        return len(self.codes) - len(set(self.codes))

    def code_usage(self) -> list[float]:
        """Per level, the fraction of the codebook that some item uses."""
        return [len({code[level] for code in self.codes}) / self.codebook_size for level in range(self.levels)]

    def save(self, path: Path) -> None:
        """Write JSON: `{"codebook_size", "levels", "items": {item_id: [codes]}, "meta"}`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "codebook_size": self.codebook_size,
            "levels": self.levels,
            "items": {item: list(code) for item, code in zip(self.item_ids, self.codes, strict=True)},
            "meta": self.meta,
        }
        path.write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> ItemIndex:
        payload = json.loads(Path(path).read_text())
        items = payload["items"]
        return cls(list(items), [tuple(c) for c in items.values()], payload["codebook_size"], payload.get("meta", {}))


class PrefixTrie:
    """Trie over the token-id sequences of valid items.

    Built from `{item_id: token ids}`. `children(prefix)` lists the ids that continue a
    valid code, `leaf(prefix)` is the item a complete code names. With `exclude`, a
    child is dropped when every item below it is excluded, so a beam never walks into
    a subtree that can only end in an item the request must not see.
    """

    def __init__(self, sequences: dict[str, Sequence[int]]) -> None:
        self._children: dict[tuple[int, ...], list[int]] = {}
        self._leaves: dict[tuple[int, ...], str] = {}
        self._items: dict[str, tuple[int, ...]] = {}
        self._count: dict[tuple[int, ...], int] = {}  # items below each prefix
        for item, ids in sequences.items():
            path = tuple(int(i) for i in ids)
            if path in self._leaves:
                raise ValueError(f"items {self._leaves[path]!r} and {item!r} share the token sequence {path}")
            self._leaves[path] = item
            self._items[item] = path
            for depth in range(len(path) + 1):
                prefix = path[:depth]
                self._count[prefix] = self._count.get(prefix, 0) + 1
                if depth < len(path):
                    children = self._children.setdefault(prefix, [])
                    if path[depth] not in children:
                        children.append(path[depth])
        self.depth = max((len(p) for p in self._leaves), default=0)
        # Per depth, every prefix of that length and, per item (in `_items` order), the row of its own prefix
        # there: `best_below` and `excluded_counts` reduce over items with numpy instead of walking every path.
        self._order = list(self._items)
        self._row = {item: row for row, item in enumerate(self._order)}
        self._prefixes: list[list[tuple[int, ...]]] = []
        self._node: list[np.ndarray] = []
        for depth in range(self.depth + 1):
            nodes: dict[tuple[int, ...], int] = {}
            rows = [nodes.setdefault(self._items[item][:depth], len(nodes)) if len(self._items[item]) >= depth
                    else -1 for item in self._order]
            self._prefixes.append(list(nodes))
            self._node.append(np.array(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._leaves)

    def leaf(self, prefix: Sequence[int]) -> str | None:
        """The item whose full token sequence is `prefix`, else None."""
        return self._leaves.get(tuple(prefix))

    def path(self, item_id: str) -> tuple[int, ...]:
        return self._items[item_id]

    def excluded_counts(self, exclude: Iterable[str]) -> dict[tuple[int, ...], int]:
        """Per prefix, how many items below it are in `exclude` (items not in the trie are ignored; prefixes with
        none are left out)."""
        rows = np.array(sorted({self._row[item] for item in exclude if item in self._row}), dtype=np.int64)
        counts: dict[tuple[int, ...], int] = {}
        if not len(rows):
            return counts
        for prefixes, node in zip(self._prefixes, self._node, strict=True):
            below = node[rows]
            found, many = np.unique(below[below >= 0], return_counts=True)
            counts.update((prefixes[n], c) for n, c in zip(found.tolist(), many.tolist(), strict=True))
        return counts

    def best_below(self, bonus: dict[str, float]) -> dict[tuple[int, ...], float]:
        """Per prefix, the highest `bonus` among the items below it (items without a bonus count as 0), so that
        a search adding it to a beam's score never undervalues a prefix that leads to a well-matched item."""
        values = np.fromiter((bonus.get(item, 0.0) for item in self._order), dtype=np.float64, count=len(self._order))
        best: dict[tuple[int, ...], float] = {}
        for prefixes, node in zip(self._prefixes, self._node, strict=True):
            top = np.full(len(prefixes), -np.inf)
            kept = node >= 0
            np.maximum.at(top, node[kept], values[kept])
            best.update(zip(prefixes, top.tolist(), strict=True))
        return best

    def children(self, prefix: Sequence[int], excluded: dict[tuple[int, ...], int] | None = None) -> list[int]:
        """Token ids that extend `prefix` towards at least one valid, non-excluded item."""
        prefix = tuple(prefix)
        out = self._children.get(prefix, [])
        if not excluded:
            return list(out)
        return [c for c in out if self._count[(*prefix, c)] > excluded.get((*prefix, c), 0)]

    def items(self) -> Collection[str]:
        return self._items.keys()
