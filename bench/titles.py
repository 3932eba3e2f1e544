"""Title understanding in chat, on a corpus generated from the catalog: does a misspelt or loosely written
title add the intended film, ask about it, or add something else?

    python -m bench.titles --bundle assets/ml-100k --out bench/titles.json

The corpus (`make_corpus`, seeded) holds chat messages naming films, written as people write them: the main
title (without the alternative title in parentheses), then, by chance, a nickname derived by rule where it
names that film alone (the part before or after a colon, initial plus number: "Terminator 2", "Empire
Strikes Back", "T2"), the leading article dropped, lower case, a year after it, and typos at a realistic rate
(a swapped pair of letters, a dropped letter, a doubled letter; never the first letter or a digit). Every
mention differs from the catalog's title in at least one way. Films are drawn uniformly from the catalog
(one id per film), one or two per message, sometimes one named twice; the negatives are chat messages that
name no film, put together from phrases of the app's own vocabulary.

Every message goes through `face_app.dialogue.parse`, the chat's own reading. Measured:
- precision: share of the films added that are the intended ones (target at least 0.99);
- recall: share of the intended films found, added or asked about with the intended film among the choices
  (target at least 0.95); added: the share added directly;
- negatives_nothing_added: share of the negatives that add no film; negatives_nothing_asked: that ask nothing;
- ms_per_message: mean wall time of `parse` per message.
No title is written to the output file (MovieLens titles are not redistributed), only the numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face_app.catalog import Catalog, Item, normalise
from face_app.dialogue import parse

TARGETS = {"precision": 0.99, "recall": 0.95}
MENTIONS = 300
NEGATIVES = 100
_PAREN = re.compile(r"\s*\([^)]*\)")
_ARTICLE = re.compile(r"^(The|A|An) ", re.IGNORECASE)
ONE_FILM = ("I loved {}", "{} was great", "i really liked {}", "have you seen {}?", "My favourite film is {}", "{}",
            "I watched {} last week", "{} is one of my favourites", "what about {}", "loved {}!")
TWO_FILMS = ("I liked {} and {}", "{} and {} are my favourites", "loved {}, also {}", "I watched {} and then {}",
             "{} and {}")
TWICE = ("I loved {0}, really, {0} is the best", "{0} {0} {0}", "{0}! did I say {0}?")
NEGATIVE_OPENERS = ("can you recommend", "I want", "show me", "give me", "I'm in the mood for", "what should I watch,",
                    "any ideas for", "recommend", "hmm, maybe", "surprise me with")
NEGATIVE_OBJECTS = ("something darker", "a comedy", "a funny one from the 90s", "something for a rainy evening",
                    "something my parents would enjoy", "a thriller with a twist", "something lighter",
                    "an old black and white one", "a romantic one for tonight", "a scary one",
                    "more like the second one",
                    "something from the 80s", "anything but horror", "a drama", "an animated one for the kids",
                    "something short", "a western", "more please", "a crime story", "something new")
NEGATIVE_TAILS = ("", " please", " tonight", " for the weekend", ", thanks", "?", " again")


@dataclass
class Case:
    """One message of the corpus: its text, the item ids it names (none for a negative), how each was written."""

    text: str
    intended: tuple[str, ...]
    ways: tuple[str, ...] = ()


def nicknames(title: str) -> list[str]:
    """Short names a film goes by, derived by rule from its title: before and after a colon (and after " - "
    in what follows it), initial plus number for a two-word numbered title."""
    head, colon, tail = title.partition(":")
    names = [head.strip(), tail.strip(), tail.rsplit(" - ", 1)[-1].strip()] if colon else []
    words = head.split()
    if len(words) == 2 and words[1].isdigit():
        names.append(words[0][0].upper() + words[1])
    return [n for n in dict.fromkeys(names) if n and n != title]


def _unique_nicknames(catalog: Catalog, films: Sequence[Item]) -> dict[str, list[str]]:
    """Per item id, its nicknames that no other film's title or nickname shares (normalised)."""
    owners: dict[str, set[str]] = {}
    named: dict[str, list[str]] = {}
    for item in films:
        main = _PAREN.sub("", item.title).strip()
        named[item.item_id] = nicknames(main)
        for name in [main, *named[item.item_id]]:
            owners.setdefault(normalise(name), set()).add(item.item_id)
    words: dict[str, set[str]] = {}
    for item in films:
        for word in normalise(_PAREN.sub("", item.title)).split():
            words.setdefault(word, set()).add(item.item_id)

    def names_it(name: str, item_id: str) -> bool:
        key = normalise(name)
        # One word that other titles use too ("White") names no film.
        return owners[key] == {item_id} and len(key) >= 2 and (" " in key or words.get(key, set()) <= {item_id})

    return {i: [n for n in names if names_it(n, i)] for i, names in named.items()}


def _typo(text: str, rng: random.Random) -> str:
    """One typo at a letter other than the first: a swapped pair of letters, a dropped or a doubled letter."""
    spots = [i for i in range(1, len(text)) if text[i].isalpha()]
    if not spots:
        return text
    i = rng.choice(spots)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap" and i + 1 < len(text) and text[i + 1].isalpha() and text[i + 1] != text[i]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind == "drop" and sum(c.isalpha() for c in text) > 3:
        return text[:i] + text[i + 1:]
    return text[:i] + text[i] + text[i:]


def written(item: Item, nicks: list[str], rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """How a visitor might write `item`: (text, what was changed)."""
    text, ways = _PAREN.sub("", item.title).strip(), []
    if nicks and rng.random() < 0.25:
        text = rng.choice(nicks)
        ways.append("nickname")
    if _ARTICLE.match(text) and rng.random() < 0.5:
        text = _ARTICLE.sub("", text)
        ways.append("no article")
    if rng.random() < 0.5:
        text = text.lower()
        ways.append("lower case")
    letters = sum(c.isalpha() for c in text)
    typos = sum(rng.random() < 0.04 for _ in range(letters))
    if not ways and typos == 0:
        typos = 1  # every mention differs from the catalog's title
    for _ in range(min(typos, 2)):
        text = _typo(text, rng)
    if typos:
        ways.append("typo" if typos == 1 else "typos")
    if item.year and rng.random() < 0.2:
        text += rng.choice((f" {item.year}", f" ({item.year})"))
        ways.append("year")
    return text, tuple(ways)


def make_corpus(catalog: Catalog, mentions: int = MENTIONS, negatives: int = NEGATIVES, seed: int = 0) -> list[Case]:
    """At least `mentions` film mentions in messages, then `negatives` messages that name none (see the module
    docstring). Deterministic in `seed`."""
    rng = random.Random(seed)
    films = [catalog.item(i) for i in catalog.ids if all(catalog.position[t] > catalog.position[i]
                                                           for t in catalog.twins(i))]
    nicks = _unique_nicknames(catalog, films)
    cases: list[Case] = []
    named = 0
    while named < mentions:
        roll = rng.random()
        if roll < 0.1:
            item = rng.choice(films)
            text, ways = written(item, nicks[item.item_id], rng)
            cases.append(Case(rng.choice(TWICE).format(text), (item.item_id,), (*ways, "repeated")))
            named += 1
        else:
            pair = rng.sample(films, 2 if roll < 0.4 else 1)
            forms = [written(item, nicks[item.item_id], rng) for item in pair]
            template = rng.choice(TWO_FILMS if len(pair) == 2 else ONE_FILM)
            cases.append(Case(template.format(*(t for t, _ in forms)), tuple(i.item_id for i in pair),
                              tuple(w for _, ways in forms for w in ways)))
            named += len(pair)
    seen: set[str] = set()
    while len(seen) < negatives:
        text = f"{rng.choice(NEGATIVE_OPENERS)} {rng.choice(NEGATIVE_OBJECTS)}{rng.choice(NEGATIVE_TAILS)}"
        if text not in seen:
            seen.add(text)
            cases.append(Case(text, ()))
    return cases


def evaluate(catalog: Catalog, cases: Sequence[Case]) -> dict[str, Any]:
    """The corpus read by `parse`: precision, recall, added, the negatives' shares, time per message, and
    the failing cases (`errors`, which name titles: printed, never written to a file)."""
    added = right = intended = found = direct = 0
    negatives = clean = quiet = 0
    errors: list[str] = []
    start = time.perf_counter()
    for case in cases:
        request = parse(case.text, catalog)
        # Another id of the same film (ML-100k lists a few twice) is that film.
        request.titles = [next((i for i in case.intended if t in (i, *catalog.twins(i))), t) for t in request.titles]
        for mention in request.unsure:
            object.__setattr__(mention, "choices", tuple(
                next((i for i in case.intended if c in (i, *catalog.twins(i))), c) for c in mention.choices))
        asked = {i for m in request.unsure for i in m.choices}
        if not case.intended:
            negatives += 1
            clean += not request.titles
            quiet += not request.unsure
            if request.titles:
                errors.append(f"negative added {request.titles}: {case.text!r}")
            continue
        added += len(request.titles)
        right += sum(t in case.intended for t in request.titles)
        for item_id in case.intended:
            intended += 1
            direct += item_id in request.titles
            found += item_id in request.titles or item_id in asked
        wrong = [t for t in request.titles if t not in case.intended]
        missed = [i for i in case.intended if i not in request.titles and i not in asked]
        if wrong or missed:
            errors.append(f"{case.text!r} ({', '.join(case.ways)}): added wrongly "
                          f"{[catalog.item(t).label for t in wrong]}, missed {[catalog.item(i).label for i in missed]}")
    seconds = time.perf_counter() - start
    return {
        "messages": len(cases), "mentions": intended, "negatives": negatives,
        "precision": round(right / added, 4) if added else 1.0,
        "recall": round(found / intended, 4) if intended else 1.0,
        "added": round(direct / intended, 4) if intended else 1.0,
        "negatives_nothing_added": round(clean / negatives, 4) if negatives else 1.0,
        "negatives_nothing_asked": round(quiet / negatives, 4) if negatives else 1.0,
        "ms_per_message": round(1000 * seconds / max(len(cases), 1), 2),
        "errors": errors,
    }


def bundle_catalog(bundle_dir: Path) -> Catalog:
    """The catalog the app serves for a bundle (its items, from the dataset through the pinned sources)."""
    from face_app.bundle import Bundle
    from face_app.datasets import load_dataset

    bundle = Bundle.load(bundle_dir)
    dataset = load_dataset(bundle.dataset["source"], paths=bundle.dataset.get("paths"))
    return Catalog.from_dataset(dataset, list(bundle.descriptors.item_ids))[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Title understanding on a corpus generated from the catalog.")
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON")
    parser.add_argument("--mentions", type=int, default=MENTIONS)
    parser.add_argument("--negatives", type=int, default=NEGATIVES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--errors", type=int, default=0, help="print this many failing cases (they name titles)")
    args = parser.parse_args(argv)
    catalog = bundle_catalog(args.bundle)
    result = evaluate(catalog, make_corpus(catalog, args.mentions, args.negatives, args.seed))
    errors = result.pop("errors")
    result = {"bundle": args.bundle.name, "catalog_items": len(catalog), "seed": args.seed, **result,
              "targets": TARGETS, "met": {k: result[k] >= v for k, v in TARGETS.items()}}
    for line in errors[: args.errors]:
        print(line, file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
