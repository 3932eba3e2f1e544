"""What the chat says about its picks: one-line reasons grounded in descriptors, explanations, headlines.

A reason quotes the words an item shares with the visitor's descriptors, with the item it is "more like", or
with the closest item of the history; only `telling` words are quoted: the rarest across the catalog, never
one that describes half of it. A reply starts with one sentence saying how the message was read (`sentence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from face_app.catalog import Catalog, Item
from face_app.dialogue import DARK_GENRES, LIGHT_GENRES, ConversationState, Question
from face_app.picking import Closeness

# Descriptor words quoted in a one-line reason.
REASON_WORDS = 3
# The history items a reason or an explanation compares a pick with (the newest).
COMPARED_HISTORY = 20


class Wording:
    """catalog: titles and metadata; readout: the FACE read-out (`for_item`, `item_ids`); closeness: the CF space."""

    def __init__(self, catalog: Catalog, readout: Any, closeness: Closeness) -> None:
        self.catalog, self.readout, self.closeness = catalog, readout, closeness
        # How many items each word describes: a reason names the rarest shared words.
        self.word_items: dict[str, int] = {}
        for item_id in readout.item_ids:
            for word in set(readout.for_item(item_id)):
                self.word_items[word] = self.word_items.get(word, 0) + 1

    def telling(self, words: Sequence[str], limit: int = REASON_WORDS) -> list[str]:
        """The `limit` rarest of `words` across the catalog, leaving out words that describe half of it."""
        half = len(self.readout.item_ids) / 2
        kept = [w for w in dict.fromkeys(words) if self.word_items.get(w, 0) <= half]
        return sorted(kept, key=lambda w: self.word_items.get(w, 0))[:limit]

    def _closest_history(self, state: ConversationState, item_id: str) -> str | None:
        return self.closeness.closest(state.history[-COMPARED_HISTORY:], item_id)

    def reason(self, state: ConversationState, item: Item, words: list[str], anchor: str | None,
               user_words: list[str]) -> str:
        """One line, grounded in descriptors (and in the constraint the item satisfies)."""
        if anchor:
            shared = self.telling([w for w in words if w in set(self.readout.for_item(anchor))])
            label = self.catalog.item(anchor).title
            why = (f"shares {quote(shared)} with {label}" if shared
                   else f"close to {label} in taste (similarity {self.closeness.similarity(anchor, item.item_id):.2f})")
        else:
            shared = self.telling([w for w in words if w in set(user_words)])
            closest = self._closest_history(state, item.item_id)
            if shared:
                why = f"matches your {quote(shared)}"
            elif closest:
                common = self.telling([w for w in words if w in set(self.readout.for_item(closest))])
                title = self.catalog.item(closest).title
                why = f"like {title}" + (f" (both {quote(common)})" if common else "")
            else:
                told = self.telling(words, 2)
                why = f"popular; described as {quote(told)}" if told else "popular with viewers"
        c = state.constraints
        extra = [g for g in item.genres if g in set(c.genres)]
        if c.mood:
            extra += [g for g in item.genres if g in (DARK_GENRES if c.mood == "darker" else LIGHT_GENRES)]
        if c.years and item.year:
            extra.append(str(item.year))
        line = why[0].upper() + why[1:]
        return line + (f" · {', '.join(dict.fromkeys(extra))}" if extra else "")

    def explain(self, state: ConversationState, target: str, user_words: list[str]) -> str:
        """Why `target` was picked: its words, the visitor's, the closest film of the history, the request."""
        item = self.catalog.item(target)
        words = list(self.readout.for_item(target))
        shared = self.telling([w for w in words if w in set(user_words)])
        parts = [f"{item.label} is described by {quote(words)}."]
        if user_words:
            parts.append(f"Your history reads as {quote(user_words)}" +
                         (f"; you share {quote(shared)}." if shared else "."))
        closest = self._closest_history(state, target)
        if closest:
            common = self.telling([w for w in words if w in set(self.readout.for_item(closest))])
            parts.append(f"Closest in your history: {self.catalog.item(closest).label} (similarity "
                         f"{self.closeness.similarity(closest, target):.2f}"
                         + (f", both {quote(common)})." if common else ")."))
        if state.constraints.describe():
            parts.append(f"It also fits your request: {state.constraints.describe()}.")
        return " ".join(parts)

    def headline(self, state: ConversationState, count: int, anchor: str | None, leaning: str = "",
                 asked: int | None = None) -> str:
        """"Here are 5 picks (more like X; from the 1990s; leaning to Horror films of the 1980s, as in your
        history):"; "Only 2 new films fit (...):" when fewer than the `asked` picks are left. leaning: what the
        history's intent prior favoured (`picking.Intent.leaning`), named so that the visitor sees what was
        inferred."""
        if not count:
            return "I found nothing new that fits; try another decade or genre, or say \"start over\"."
        bits = []
        if anchor:
            bits.append(f"more like {self.catalog.item(anchor).title}")
        if state.constraints.describe():
            bits.append(state.constraints.describe())
        if leaning:
            source = self.catalog.item(anchor).title if anchor else "your history"
            bits.append(f"leaning to {leaning}, as in {source}")
        if asked is not None and count < asked:
            start = f"Only {count} new film{'s' * (count != 1)} fit{'s' * (count == 1)}"
        else:
            start = "Here is 1 pick" if count == 1 else f"Here are {count} picks"
        return start + (f" ({'; '.join(bits)})" if bits else "") + ":"

    def ask(self, question: Question) -> str:
        """"Did you mean Star Wars (1977) or Star Kid (1997)?", and how to answer."""
        labels = [self.catalog.item(i).label for i in question.choices]
        if len(labels) == 1:
            return f"Did you mean {labels[0]}? (you wrote “{question.written}”: say “yes” or “no”)"
        options = ", ".join(labels[:-1]) + f" or {labels[-1]}"
        return f"Did you mean {options}? (you wrote “{question.written}”: say “the first”, a title, or “neither”)"


def sentence(parts: list[str]) -> list[str]:
    """How the turn read the request, as the reply's first sentence (none when nothing was read)."""
    if not parts:
        return []
    if parts[0].startswith("Taking ‘"):
        return [parts[0] + ("; " + ", ".join(parts[1:]) if parts[1:] else "") + "."]
    return ["Taking this as: " + ", ".join(parts) + "."]


def quote(words: Sequence[str]) -> str:
    return ", ".join(f"‘{w}’" for w in words)
