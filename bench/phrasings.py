"""How well the chat reads what people write: feelings per title, moods, occasions and negations.

    python -m bench.phrasings --bundle assets/ml-100k        # bench/phrasings-result.json, and the misses
    python -m bench.phrasings --set bench/phrasings-heldout.json --out bench/phrasings-heldout-result.json

The phrasing set, `bench/phrasings.json`, was written before the parser read feelings per title or the mood table
(issue 25): each message with its intended reading (the titles it names and the feeling of each, the genres asked
for and left out, the mood). This parses every message with `face_app.dialogue.parse` on the bundle's catalog and
reports:

- **titles with their feeling:** precision and recall of (message, title, feeling) triples; a title found with the
  wrong feeling is both a false positive and a miss;
- **requests:** precision and recall of (message, field, value) triples over the genres asked for, the genres left
  out and the mood;
- per kind of message (mixed feelings, one feeling, moods, negations, both), and every miss by message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SET = Path(__file__).with_name("phrasings.json")
OUT = Path(__file__).with_name("phrasings-result.json")


def reading(request: Any) -> dict[str, Any]:
    """What the parser made of one message, in the set's terms."""
    return {"titles": dict(request.feelings), "genres": list(request.genres), "no_genres": list(request.no_genres),
            "mood": request.mood}


def triples(kind: str, read: dict[str, Any]) -> set[tuple[str, str]]:
    if kind == "titles":
        return {(item_id, feeling) for item_id, feeling in read["titles"].items()}
    out = {("genre", g) for g in read["genres"]} | {("no_genre", g) for g in read["no_genres"]}
    return out | ({("mood", read["mood"])} if read["mood"] else set())


def precision_recall(found: int, expected: int, right: int) -> dict[str, float | int]:
    return {"precision": right / found if found else 1.0, "recall": right / expected if expected else 1.0,
            "found": found, "expected": expected, "right": right}


def score(messages: list[dict[str, Any]], parse_one) -> dict[str, Any]:
    """Precision and recall of titles-with-feelings and of requests, overall and per kind, and the misses."""
    counts: dict[str, dict[str, list[int]]] = {}
    misses = []
    for message in messages:
        got = reading(parse_one(message["text"]))
        for part in ("titles", "requests"):
            want, have = triples(part, message), triples(part, got)
            for key in ("all", message["kind"]):
                tally = counts.setdefault(part, {}).setdefault(key, [0, 0, 0])
                tally[0] += len(have)
                tally[1] += len(want)
                tally[2] += len(have & want)
            if want != have:
                misses.append({"text": message["text"], "part": part, "missing": sorted(want - have),
                               "wrong": sorted(have - want)})
    return {part: {key: precision_recall(*tally) for key, tally in by_kind.items()}
            for part, by_kind in counts.items()} | {"misses": misses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phrasings", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--set", type=Path, default=SET, help="the phrasing set (bench/phrasings-heldout.json: 40 "
                        "messages a helper wrote from the rule alone, never having read the parser)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from face_app.bundle import Bundle
    from face_app.catalog import Catalog
    from face_app.datasets import load_dataset
    from face_app.dialogue import parse

    bundle = Bundle.load(args.bundle)
    dataset = load_dataset(bundle.dataset["source"], paths=bundle.dataset.get("paths"))
    catalog, _ = Catalog.from_dataset(dataset, list(bundle.descriptors.item_ids))
    phrasings = json.loads(args.set.read_text())
    result = score(phrasings["messages"], lambda text: parse(text, catalog))
    result["command"] = "python -m bench.phrasings " + " ".join(sys.argv[1:] if argv is None else argv)
    result["messages"] = len(phrasings["messages"])
    result["set"] = str(args.set)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for part in ("titles", "requests"):
        for key, row in result[part].items():
            print(f"{part:8} {key:9} precision {row['precision']:.3f} recall {row['recall']:.3f} "
                  f"({row['right']} of {row['found']} found, {row['expected']} expected)")
    for miss in result["misses"]:
        print(f"miss [{miss['part']}] {miss['text']!r}: missing {miss['missing']}, wrong {miss['wrong']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
