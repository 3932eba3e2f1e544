"""A small invented catalog (not MovieLens) and a FACE-style read-out over it, for engine and UI tests.

Two taste clusters in a 4-d CF space: dark films (crime, thriller, horror) and light ones (comedy,
animation, musical), with a few dramas between. The read-out answers the same calls as
`face_app.descriptors.Descriptors`: descriptors per item, fold-in as the mean of the history's
embeddings, and user descriptors as the words closest to that mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

# item_id, title (dataset form), year, genres, CF embedding, descriptors
ROWS = [
    ("1", "Glass Harbor", 1994, ["Crime", "Thriller"], [1.0, 0.1, 0.0, 0.0], ["noir", "heist", "rain"]),
    ("2", "Night Ferry, The", 1996, ["Thriller", "Mystery"], [0.9, 0.2, 0.1, 0.0], ["noir", "fog", "rain"]),
    ("3", "Cellar Door", 1987, ["Horror"], [0.8, 0.0, 0.3, 0.0], ["ghost", "fog", "scream"]),
    ("4", "Iron Verdict", 1992, ["Crime", "Drama"], [0.85, 0.15, 0.0, 0.2], ["court", "heist", "noir"]),
    ("5", "Paper Moon Parade", 1995, ["Comedy", "Musical"], [0.0, 1.0, 0.0, 0.1], ["song", "sunny", "dance"]),
    ("6", "Kite Club", 1997, ["Animation", "Children's"], [0.1, 0.9, 0.0, 0.0], ["cartoon", "sunny", "kids"]),
    ("7", "Lemonade Summer", 1983, ["Comedy", "Romance"], [0.0, 0.8, 0.2, 0.1], ["sunny", "kiss", "beach"]),
    ("8", "Winter Orchard", 1990, ["Drama"], [0.3, 0.3, 0.0, 1.0], ["farm", "snow", "family"]),
    ("9", "Harbor Lights Again", 1999, ["Drama", "Romance"], [0.2, 0.5, 0.0, 0.8], ["kiss", "snow", "rain"]),
    ("10", "Dust Road", 1975, ["Western", "War"], [0.6, 0.0, 0.0, 0.6], ["desert", "horse", "gun"]),
    ("11", "Sprocket and Bolt", 1998, ["Animation", "Comedy", "Sci-Fi"], [0.0, 0.85, 0.4, 0.0],
     ["robot", "cartoon", "sunny"]),
    ("12", "Last Train to Marrow", 1993, ["Thriller", "Crime"], [0.95, 0.05, 0.0, 0.1], ["train", "heist", "noir"]),
]


def items_frame(rows: Sequence[tuple] = tuple(ROWS)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "year": pd.array([r[2] for r in rows], dtype="Int64"),
            "genres": [r[3] for r in rows],
        }
    )


class SmallReadout:
    """The `Descriptors` calls the engine uses, over the rows above (or other rows of that form)."""

    def __init__(self, rows: Sequence[tuple] = tuple(ROWS)) -> None:
        self.item_ids = [r[0] for r in rows]
        self.item_embeddings = torch.tensor([r[4] for r in rows], dtype=torch.float32)
        self._words = {r[0]: list(r[5]) for r in rows}
        self.k = 3

    def for_item(self, item_id: str) -> list[str]:
        return self._words[item_id]

    def fold_in(self, item_ids: Sequence[str]) -> torch.Tensor:
        rows = [self.item_ids.index(i) for i in item_ids]
        return self.item_embeddings[rows].mean(dim=0)

    def describe_history(self, item_ids: Sequence[str]) -> list[str]:
        user = self.fold_in(item_ids)
        nearest = torch.argsort(self.item_embeddings @ user, descending=True)[:2].tolist()
        words = [w for row in nearest for w in self._words[self.item_ids[row]]]
        return list(dict.fromkeys(words))[: self.k]
