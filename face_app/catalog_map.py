"""The catalog map: every item at its 2-D position (`map.json` of the bundle), coloured by main genre, with the
visitor's history and the latest picks drawn on top. Drawn in the browser by `gr.ScatterPlot`: the static layer
is built once (`catalog_points`) and a turn sends rows, never a re-rendered image.
"""

from __future__ import annotations

import pandas as pd

from face_app.dialogue import ConversationState
from face_app.engine import Engine

MAP_GENRES = 8
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
HISTORY_GROUP, PICKS_GROUP, OTHER_GROUP = "your history", "picks", "other"


def catalog_points(engine: Engine, item_map: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The static layer of the map, built once: one row per mapped item (x, y, title, group = main genre)."""
    top = engine.catalog.genres[:MAP_GENRES]
    rows = []
    for item_id, (x, y) in item_map.items():
        if item_id in engine.catalog:
            item = engine.catalog.item(item_id)
            group = next((g for g in item.genres if g in top), OTHER_GROUP)
            rows.append((float(x), float(y), item.label, group))
    return pd.DataFrame(rows, columns=["x", "y", "title", "group"])


def map_colours(engine: Engine) -> dict[str, str]:
    """Group -> colour: the top genres muted, the visitor's history black, the picks red."""
    colours = dict(zip(engine.catalog.genres[:MAP_GENRES], PALETTE, strict=False))
    return {**colours, OTHER_GROUP: "#d0ccc8", HISTORY_GROUP: "#111111", PICKS_GROUP: "#dc143c"}


def catalog_map(engine: Engine, points: pd.DataFrame, item_map: dict[str, tuple[float, float]],
                state: ConversationState) -> pd.DataFrame | None:
    """The map's data for one visitor: the catalog layer, then their history and the last picks on top.

    Drawn in the browser (gr.ScatterPlot): a turn sends rows, not a re-rendered image (a matplotlib PNG cost
    about 0.57 s of a served turn)."""
    if points.empty:
        return None

    def layer(item_ids: list[str], group: str) -> pd.DataFrame:
        mapped = [i for i in item_ids if i in item_map and i in engine.catalog]
        return pd.DataFrame([(*map(float, item_map[i]), engine.catalog.item(i).label, group) for i in mapped],
                            columns=points.columns)

    overlays = [layer(state.history[-50:], HISTORY_GROUP), layer(list(state.last), PICKS_GROUP)]
    return pd.concat([points, *[o for o in overlays if not o.empty]], ignore_index=True)
