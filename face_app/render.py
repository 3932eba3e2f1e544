"""HTML of the chat's pieces: recommendation cards, descriptor chips, the history list, and chat text that stays
text. Everything from the dataset or the visitor is HTML-escaped; a chat message's text is also made
markdown-inert (`chat_text`), so what a visitor types is shown as typed and never becomes a link, an image or
markup. `picks_row` is the same pick as plain data, for code.
"""

from __future__ import annotations

import html
import math
from typing import Any

from face_app.arms import ARM_NAMES
from face_app.dialogue import ConversationState
from face_app.engine import Engine, Recommendation

HISTORY_SHOWN = 12
# What each arm's own score is (behind the card's disclosure).
SCORE_MEANING = {"llm": "the index's log-probability in the guided search",
                 "lightgcn": "closeness in LightGCN's embedding space"}



def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# A chat message is rendered as markdown (GFM, autolinks, $$ LaTeX) around its HTML: plain text goes in with its
# HTML characters and every markdown syntax character as character references, which render as the same
# characters but never as a link, an image, emphasis, a list, a heading or a formula.
_CHAT_TEXT = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;", ord("'"): "&#x27;",
              **{ord(ch): f"&#{ord(ch)};" for ch in "\\`*_{}[]()#+-.!|~:$@="}}


def chat_text(value: object) -> str:
    """Plain text (the visitor's or the app's) as a chat message: HTML-escaped and markdown-inert."""
    return str(value).translate(_CHAT_TEXT)


def chips(words: list[str]) -> str:
    if not words:
        return "<span class='fa-muted'>Your descriptors appear once your history has a title.</span>"
    return "".join(f"<span class='fa-chip'>{esc(w)}</span>" for w in words)


def match_text(rec: Recommendation) -> str:
    """A pick's match as a person reads it, "taste match 94%" (or "match with X 94%" for "more like X"): closer
    to the taste than 94% of the films the visitor could be shown (`Engine.matches`); "" without one."""
    if rec.match is None:
        return ""
    percent = math.floor(100 * rec.match)
    return f"match with {rec.match_to} {percent}%" if rec.match_to else f"taste match {percent}%"


MATCH_HELP = ("closer to your taste than this share of the films you have not seen, by LightGCN's embedding, "
              "the same rule for both arms")


def card(rec: Recommendation, show_descriptors: bool = True) -> str:
    """One recommendation as HTML: title, year and genres on one line; its match and the arm that picked it; the
    descriptors and the reason; the item index and the arm's own score behind a disclosure."""
    meta = " · ".join(esc(x) for x in [rec.year or "", ", ".join(rec.genres)] if x)
    match = match_text(rec)
    about = " · ".join(x for x in [f"<span title='{esc(MATCH_HELP)}'>{esc(match)}</span>" if match else "",
                                   f"picked by the {esc(ARM_NAMES.get(rec.source, rec.source))}"] if x)
    lines = [f"<div class='fa-card'><div class='fa-title'>{rec.rank}. {esc(rec.title)} "
             f"<span class='fa-meta'>{meta}</span></div>", f"<div class='fa-about'>{about}</div>"]
    if show_descriptors:
        lines.append("<div class='fa-words'>" + chips(rec.descriptors) + "</div>")
        lines.append(f"<div class='fa-reason'>{esc(rec.reason)}</div>")
    how = [f"<code>{esc(rec.tokens)}</code>"] if rec.tokens else []
    how.append(f"the {esc(ARM_NAMES.get(rec.source, rec.source))}'s own score {rec.score:.3f} "
               f"({esc(SCORE_MEANING.get(rec.source, 'its ranking score'))})")
    lines.append(f"<details class='fa-how'><summary>how the model wrote this</summary>{' · '.join(how)}</details>")
    lines.append("</div>")
    return "".join(lines)


def history_html(engine: Engine, state: ConversationState, show_descriptors: bool = True) -> str:
    if not state.history:
        return "<span class='fa-muted'>Nothing yet: name a few movies, search a title, or pick a persona.</span>"
    shown = state.history[-HISTORY_SHOWN:]
    rows = []
    for item_id in reversed(shown):
        item = engine.catalog.item(item_id)
        words = f" <span class='fa-muted'>{esc(', '.join(engine.item_descriptors(item_id)))}</span>" \
            if show_descriptors else ""
        liked = " ♥" if item_id in state.liked else ""
        rows.append(f"<li>{esc(item.label)}{liked}{words}</li>")
    more = len(state.history) - len(shown)
    tail = f"<div class='fa-muted'>and {more} earlier</div>" if more > 0 else ""
    return f"<ul class='fa-history'>{''.join(rows)}</ul>{tail}"


def picks_row(rec: Recommendation) -> dict[str, Any]:
    """One pick as plain data (no HTML): what a program reads instead of the card."""
    return {"item_id": rec.item_id, "title": rec.title, "year": rec.year, "rank": rec.rank, "source": rec.source,
            "tokens": rec.tokens, "descriptors": list(rec.descriptors), "genres": list(rec.genres),
            "score": rec.score, "reason": rec.reason, "match": rec.match, "match_text": match_text(rec)}
