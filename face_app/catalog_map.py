"""The catalog map: every item at its 2-D position (`map.json` of the bundle), coloured by main genre, with the
visitor's history and the latest picks drawn on top. Drawn in the browser by Vega-Lite (`map_chart`, an Altair
chart in a `gr.Plot`): the static layer is built once (`catalog_points`) and a turn sends rows and a chart spec,
never a re-rendered image.

Why Altair rather than `gr.ScatterPlot`: Gradio's own scatter plot draws every point as a hollow circle of one
size, with axis numbers and a legend cut at its title, so the visitor's few films vanished among 1,682 others
(issue 25). A layered Vega-Lite chart draws the history and the picks filled, outlined and on top, with no axes
(the map's two dimensions mean nothing alone) and a whole legend; Gradio renders it in the browser as it did its
own plot.
"""

from __future__ import annotations

import altair as alt
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


# How each layer is drawn: the catalog small and muted, the visitor's history filled black with a white outline, the
# picks as larger crimson diamonds outlined in black, drawn last (on top).
# Pixels: as wide as the side column on a phone (390 px); Vega-Lite's "container" width drew it 1 px wide there.
MAP_WIDTH = 330
MAP_CAPTION = ("Each dot is a film, placed by what the LightGCN model learnt from ratings (films rated by the same "
               "people sit together) and coloured by its main genre. Black: your history. Red diamonds: the latest "
               "picks. Hover a point for its title.")


def map_chart(rows: pd.DataFrame | None, colours: dict[str, str]) -> alt.LayerChart | None:
    """The map for one visitor's rows (`catalog_map`): the catalog, then the history, then the picks on top."""
    if rows is None or rows.empty:
        return None
    groups = list(colours)
    colour = alt.Color("group:N", title=None, scale=alt.Scale(domain=groups, range=[colours[g] for g in groups]),
                       legend=alt.Legend(orient="bottom", columns=3, labelLimit=0, symbolStrokeWidth=0))
    base = alt.Chart(rows).encode(x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None), color=colour,
                                  tooltip=[alt.Tooltip("title:N", title="film"), alt.Tooltip("group:N", title="")])
    mine = alt.FieldOneOfPredicate(field="group", oneOf=[HISTORY_GROUP, PICKS_GROUP])
    catalog = base.transform_filter(~mine).mark_circle(size=16, opacity=0.5)
    history = base.transform_filter(alt.datum.group == HISTORY_GROUP).mark_point(
        shape="circle", filled=True, size=110, opacity=1, stroke="white", strokeWidth=1.5)
    picks = base.transform_filter(alt.datum.group == PICKS_GROUP).mark_point(
        shape="diamond", filled=True, size=170, opacity=1, stroke="black", strokeWidth=1.2)
    return alt.layer(catalog, history, picks).properties(width=MAP_WIDTH, height=300).configure_view(
        strokeWidth=0)
