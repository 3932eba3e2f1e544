"""Do the descriptor words a visitor reads describe the film (or the user)? Judged blind, scored by one command.

    python -m bench.descriptor_fit --bundle assets/ml-100k        # score a bundle: bench/descriptor-fit.json
    python -m bench.descriptor_fit draw --bundle assets/ml-100k --blind DIR   # once: the sample and the first sheet
    python -m bench.descriptor_fit pending --bundle DIR --blind DIR           # a bundle's words not yet judged
    python -m bench.descriptor_fit merge --judged FILE [FILE ...] --round TAG # the readers' marks into the sheet

The judged sheet, `bench/descriptor-judgments.json`, holds the rule (written before any word was judged), the seed,
the sample (80 films, half among the 200 most-rated, and 30 dataset users, drawn with that seed), and one mark per
(entity, word): `fit`, `no` or `unsuitable`, with the round it was judged in. It holds ids and words only: the
titles a reader needs come from the dataset at run time (MovieLens terms forbid committing them).

A reader judges from a *blind* file (`draw`, `pending`): per entity its title, year and genres (for a user: the ten
films they rated highest and their main genres), and a shuffled list of words in which the words a bundle shows
are mixed with as many random words of that bundle's vocabulary. Nothing in the file says which is which; the
sheet records which random words were mixed in, so that the random words' fit share is the floor a score is read
against. Words a later read-out shows that were never judged are judged the same way (`pending`, then `merge` with
a round other than `initial`), and the sheet keeps the round of every mark, so a score says how many of its marks
were judged later.

`score` reports, per kind: the fit share of the shown words, the entities with at least 4 fitting words, the
unsuitable count, the same for the random words, and the agreement of the automatic proxy
(`face_app.descriptors.Display.fit`, the display rule's genre proxy, through
`training.vocabulary.ProxyFit`) with the marks (ROC AUC of fit against no). A score with unjudged shown words
lists them and stops, unless `--allow-unjudged` (for iterating: then the unjudged words count as missing, and the
output says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SHEET = Path(__file__).with_name("descriptor-judgments.json")
OUT = Path(__file__).with_name("descriptor-fit.json")
LABELS = ("fit", "no", "unsuitable")
FITTING_WORDS = 4  # "films with at least 4 fitting words" (issue 23)
RULE = """\
Judge each word on its own, for the one film (or user) it is listed under, from what you know of the film.
- fit: the word describes the film's content, setting, characters, mood, themes, era or audience (for a user: the
  kind of films they rate highest, their main genres, or the people and themes of those films). A genre word fits
  a film of that genre. A word that would fit almost any film ("movie", "life", "story", "character") is `no`.
- no: it does not describe this film (or this user's taste), or it is too vague to tell one film from another.
- unsuitable: it should never be shown on a film card to the public: sexual, crude, a slur, or a sensitive topic
  (illness, death, abortion, drugs, sexuality, race) that this film is not about.
Words are in random order; some come from the film's description and some are random. Judge each as if alone."""


# --- The sample and the blind files ------------------------------------------------------------------------------


def load_sheet(path: Path = SHEET) -> dict[str, Any]:
    return json.loads(path.read_text())


def save_sheet(sheet: dict[str, Any], path: Path = SHEET) -> None:
    path.write_text(json.dumps(sheet, indent=1, sort_keys=False) + "\n")


def draw_sample(popularity: np.ndarray, user_ids: Sequence[str], item_ids: Sequence[str], seed: int,
                films: int = 80, users: int = 30, top: int = 200) -> dict[str, list[str]]:
    """Half the films among the `top` most-rated (by training interactions), half from the rest, and `users`
    dataset users, drawn with `seed`; ids in draw order."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-popularity, kind="stable")
    head = rng.choice(order[:top], size=films // 2, replace=False)
    tail = rng.choice(order[top:], size=films - films // 2, replace=False)
    chosen_users = rng.choice(len(user_ids), size=users, replace=False)
    return {"items": [item_ids[i] for i in [*head, *tail]], "users": [user_ids[u] for u in chosen_users]}


class Context:
    """What a reader is shown of each sampled entity, and what a bundle shows of it.

    Built from a bundle (its read-out and catalog) and the dataset's raw ratings (a user's highest-rated films)."""

    def __init__(self, bundle_dir: Path, readout_dir: Path | None = None) -> None:
        from face_app.bundle import Bundle
        from face_app.datasets import load_dataset
        from face_app.descriptors import Descriptors

        self.bundle = Bundle.load(bundle_dir)
        self.readout = self.bundle.descriptors if readout_dir is None else Descriptors.load(readout_dir)
        self.source = str(bundle_dir / "readout" if readout_dir is None else readout_dir)
        source = self.bundle.manifest.get("dataset", {}).get("source") or self.bundle.manifest["config"]["data"][
            "source"]
        self.dataset = load_dataset(source, paths=self.bundle.manifest["config"]["data"].get("paths"))
        items = self.dataset.items.set_index("item_id")
        self.titles = {i: f"{row.title} ({row.year})" if not _missing(row.year) else str(row.title)
                       for i, row in items.iterrows()}
        self.genres = {i: list(row.genres) for i, row in items.iterrows()}
        self.ratings = self.dataset.interactions

    def proxy(self, kind: str, entity: str, words: Sequence[str]) -> list[float]:
        """The automatic fit proxy of each word for the entity (`training.vocabulary.ProxyFit`, the display rule's
        genre proxy); the encoder loads on first use."""
        if not words:
            return []
        if not hasattr(self, "_fit"):
            from training.vocabulary import ProxyFit

            display = self.readout.display
            self._fit = ProxyFit.for_dataset(self.dataset, self.bundle.manifest["config"]["data"],
                                             name_weight=0.0 if display is None else display.name_weight)
        return self._fit.scores(kind, entity, words)

    def popularity(self) -> np.ndarray:
        counts = self.ratings["item_id"].value_counts()
        return np.array([counts.get(i, 0) for i in self.readout.item_ids], dtype=float)

    def shown(self, kind: str, entity: str) -> list[str]:
        """The words the app shows for a catalog film's card or a dataset user's chips."""
        return self.readout.for_item(entity) if kind == "items" else self.readout.for_user(entity)

    def about(self, kind: str, entity: str) -> dict[str, Any]:
        """What a reader may know of the entity: a film's title and genres; a user's ten highest-rated films and
        their main genres (by share of their ratings)."""
        if kind == "items":
            return {"film": self.titles[entity], "genres": self.genres[entity]}
        rows = self.ratings[self.ratings["user_id"] == entity].sort_values(["rating", "timestamp"],
                                                                           ascending=[False, False])
        genres = Counter(g for i in rows["item_id"] for g in self.genres[i])
        return {"highest_rated_films": [self.titles[i] for i in rows["item_id"].head(10)],
                "main_genres": [g for g, _ in genres.most_common(4)], "films_rated": len(rows)}


def _missing(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return value is None or str(value) in ("<NA>", "")


def random_words(vocabulary: Sequence[str], exclude: set[str], count: int, rng: np.random.Generator) -> list[str]:
    pool = [w for w in vocabulary if w not in exclude]
    return [pool[i] for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False)]


def blind_batches(context: Context, sheet: dict[str, Any], rng: np.random.Generator, only_unjudged: bool,
                  others: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[str]]]]:
    """Per sampled entity: its shown words (only those not yet judged for it, when `only_unjudged`) mixed with as
    many random vocabulary words (not shown, not judged for it), shuffled. `others`: more read-outs (levers) whose
    shown words join the context's, each word once, so one round judges them all. Returns (entries, random words
    drawn)."""
    entries, drawn = [], {"items": {}, "users": {}}
    for kind in ("items", "users"):
        judged = sheet["judgments"][kind]
        for entity in sheet["sample"][kind]:
            seen = set(judged.get(entity, {}))
            every = list(dict.fromkeys([*context.shown(kind, entity), *(
                w for other in others
                for w in (other.for_item(entity) if kind == "items" else other.for_user(entity)))]))
            shown = [w for w in every if not (only_unjudged and w in seen)]
            if not shown:
                continue
            extra = random_words(context.readout.words, seen | set(every), len(shown), rng)
            words = [*shown, *extra]
            rng.shuffle(words)
            drawn[kind][entity] = extra
            entries.append({"kind": kind[:-1], "id": entity, **context.about(kind, entity), "words": words})
    return entries, drawn


def write_blind(entries: list[dict[str, Any]], directory: Path, per_file: int, round_tag: str) -> list[Path]:
    """Blind files of `per_file` entities each, for readers (they hold titles: keep them out of the repo)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(entries), per_file):
        path = directory / f"{round_tag}-{start // per_file:02d}.json"
        path.write_text(json.dumps({"rule": RULE, "labels": list(LABELS), "entities": entries[start:start + per_file]},
                                   indent=1))
        paths.append(path)
    return paths


def merge(sheet: dict[str, Any], judged: dict[str, Any], round_tag: str) -> int:
    """Add a reader's marks ({"judgments": [{"kind", "id", "word", "label"}]}) to the sheet; a mark already in
    the sheet is never changed. Returns the number of marks added."""
    added = 0
    for mark in judged["judgments"]:
        kind, label = mark["kind"] + "s", mark["label"]
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r} for {mark}; labels are {LABELS}")
        entity = sheet["judgments"][kind].setdefault(str(mark["id"]), {})
        if mark["word"] not in entity:
            entity[mark["word"]] = {"label": label, "round": round_tag, "reader": judged.get("reader", "?")}
            added += 1
    return added


# --- Scoring -----------------------------------------------------------------------------------------------------


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a fitting word's proxy > a non-fitting word's), ties half (the Mann-Whitney U over n_pos n_neg)."""
    if not positive or not negative:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def share(marks: list[str], label: str) -> float | None:
    return sum(m == label for m in marks) / len(marks) if marks else None


def score(context: Context, sheet: dict[str, Any], allow_unjudged: bool = False) -> dict[str, Any]:
    """The judged measures of a bundle's shown words (module docstring)."""
    out: dict[str, Any] = {"bundle": context.bundle.name, "readout": context.source,
                           "vocabulary_words": len(context.readout.words),
                           "sheet_seed": sheet["seed"], "per_kind": {}, "unjudged": {}}
    for kind in ("items", "users"):
        judged = sheet["judgments"][kind]
        shown_marks, random_marks, rounds, per_entity, unjudged = [], [], Counter(), [], {}
        proxy_fit, proxy_no = [], []
        for entity in sheet["sample"][kind]:
            marks = judged.get(entity, {})
            words = context.shown(kind, entity)
            missing = [w for w in words if w not in marks]
            if missing:
                unjudged[entity] = missing
            labels = [marks[w]["label"] for w in words if w in marks]
            rounds.update(marks[w]["round"] for w in words if w in marks)
            shown_marks += labels
            per_entity.append({"id": entity, "shown": len(words), "fit": labels.count("fit")})
            random_marks += [marks[w]["label"] for w in sheet["random"][kind].get(entity, []) if w in marks]
            fit_scores = context.proxy(kind, entity, list(marks))
            for word, value in zip(marks, fit_scores, strict=True):
                if marks[word]["label"] == "fit":
                    proxy_fit.append(value)
                elif marks[word]["label"] == "no":
                    proxy_no.append(value)
        shown_counts = [e["shown"] for e in per_entity]
        out["per_kind"][kind] = {
            "entities": len(per_entity),
            "shown_words": len(shown_marks),
            "shown_fit": share(shown_marks, "fit"),
            "shown_unsuitable": sum(m == "unsuitable" for m in shown_marks),
            f"entities_with_{FITTING_WORDS}_fitting": sum(e["fit"] >= FITTING_WORDS for e in per_entity)
            / max(len(per_entity), 1),
            "entities_with_no_fitting": sum(e["fit"] == 0 for e in per_entity),
            # the sample lists its films in draw order, the half among the most-rated first (`draw_sample`)
            **({f"short_of_{FITTING_WORDS}_most_rated_half": sum(e["fit"] < FITTING_WORDS
                                                                 for e in per_entity[: len(per_entity) // 2]),
                f"short_of_{FITTING_WORDS}_other_half": sum(e["fit"] < FITTING_WORDS
                                                            for e in per_entity[len(per_entity) // 2:])}
               if kind == "items" else {}),
            "shown_per_entity": {"min": min(shown_counts, default=0), "mean": float(np.mean(shown_counts or [0])),
                                 "at_least_5": sum(c >= 5 for c in shown_counts) / max(len(shown_counts), 1)},
            "random_words": len(random_marks),
            "random_fit": share(random_marks, "fit"),
            "random_unsuitable": sum(m == "unsuitable" for m in random_marks),
            "marks_by_round": dict(rounds),
            "proxy_auc_fit_vs_no": roc_auc(proxy_fit, proxy_no),
            "proxy_pairs": {"fit": len(proxy_fit), "no": len(proxy_no)},
        }
        if unjudged:
            out["unjudged"][kind] = unjudged
    out["complete"] = not out["unjudged"]
    if out["unjudged"] and not allow_unjudged:
        count = sum(len(w) for kind in out["unjudged"].values() for w in kind.values())
        raise SystemExit(f"{count} shown words of {context.bundle.name} were never judged; judge them first "
                         "(`python -m bench.descriptor_fit pending ...`), or pass --allow-unjudged to iterate:\n"
                         + json.dumps(out["unjudged"], indent=1))
    return out


def summary(result: dict[str, Any]) -> str:
    lines = []
    for kind, r in result["per_kind"].items():
        fit = "n/a" if r["shown_fit"] is None else f"{r['shown_fit']:.3f}"
        rnd = "n/a" if r["random_fit"] is None else f"{r['random_fit']:.3f}"
        auc = "n/a" if r["proxy_auc_fit_vs_no"] is None else f"{r['proxy_auc_fit_vs_no']:.3f}"
        lines.append(f"{kind}: shown fit {fit} of {r['shown_words']} words (random {rnd} of {r['random_words']}); "
                     f"{r[f'entities_with_{FITTING_WORDS}_fitting']:.0%} with >= {FITTING_WORDS} fitting, "
                     f"{r['entities_with_no_fitting']} with none"
                     + (f" (short of {FITTING_WORDS}: {r[f'short_of_{FITTING_WORDS}_most_rated_half']} of the "
                        f"most-rated half, {r[f'short_of_{FITTING_WORDS}_other_half']} of the other)"
                        if f"short_of_{FITTING_WORDS}_most_rated_half" in r else "")
                     + f"; unsuitable {r['shown_unsuitable']} "
                     f"(random {r['random_unsuitable']}); proxy AUC {auc}; marks by round {r['marks_by_round']}")
    if result["unjudged"]:
        lines.append(f"NOT COMPLETE: unjudged shown words {result['unjudged']}")
    return "\n".join(lines)


# --- Command line ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("draw", "pending", "merge", "score") else "score"
    parser = argparse.ArgumentParser(prog=f"python -m bench.descriptor_fit {command}")
    parser.add_argument("--sheet", type=Path, default=SHEET)
    if command in ("draw", "pending", "score"):
        parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
        parser.add_argument("--readout", type=Path, nargs="+" if command == "pending" else None,
                            help="score this read-out (a workdir's face/readout) instead of the bundle's (its dataset "
                                 "still comes from the bundle); `pending` takes several and draws one round for the "
                                 "words of them all")
    if command in ("draw", "pending"):
        parser.add_argument("--blind", type=Path, required=True, help="folder for the readers' blind files")
        parser.add_argument("--per-file", type=int, default=20)
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--round", default="initial" if command == "draw" else None, required=command != "draw")
    if command == "merge":
        parser.add_argument("--judged", type=Path, nargs="+", required=True)
        parser.add_argument("--round", required=True)
    if command == "score":
        parser.add_argument("--out", type=Path, default=OUT)
        parser.add_argument("--allow-unjudged", action="store_true")
    args = parser.parse_args(argv)

    if command == "merge":
        sheet = load_sheet(args.sheet)
        added = sum(merge(sheet, json.loads(path.read_text()), args.round) for path in args.judged)
        save_sheet(sheet, args.sheet)
        print(f"added {added} marks of round {args.round!r} to {args.sheet}")
        return 0
    readouts = args.readout if isinstance(args.readout, list) else [args.readout]
    context = Context(args.bundle, readouts[0])
    from face_app.descriptors import Descriptors

    others = [Descriptors.load(path) for path in readouts[1:]]
    if command == "draw":
        if args.sheet.exists():
            raise SystemExit(f"{args.sheet} exists: the sample is drawn once (use `pending` for new words)")
        sample = draw_sample(context.popularity(), context.readout.user_ids, context.readout.item_ids, args.seed)
        sheet = {"rule": RULE, "seed": args.seed, "drawn_from": context.bundle.name,
                 "sample_rule": "80 films, 40 among the 200 most-rated and 40 from the rest, and 30 dataset users, "
                                "drawn with numpy's default_rng(seed) (draw_sample)",
                 "sample": sample, "random": {"items": {}, "users": {}}, "judgments": {"items": {}, "users": {}}}
    else:
        sheet = load_sheet(args.sheet)
    if command in ("draw", "pending"):
        rng = np.random.default_rng([args.seed, len(json.dumps(sheet["judgments"]))])
        entries, drawn = blind_batches(context, sheet, rng, only_unjudged=command == "pending", others=others)
        for kind, per_entity in drawn.items():
            for entity, words in per_entity.items():
                sheet["random"][kind].setdefault(entity, []).extend(words)
        save_sheet(sheet, args.sheet)
        paths = write_blind(entries, args.blind, args.per_file, args.round)
        print(f"{len(entries)} entities to judge in {len(paths)} blind files under {args.blind}; the sheet "
              f"{args.sheet} records the sample and the random words")
        return 0
    result = score(context, sheet, args.allow_unjudged)
    result["command"] = "python -m bench.descriptor_fit " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
