"""A film card's word order learned from judged words, on films outside the scored sample (issue 23).

    python -m bench.display_learn draw --workdir runs/ml-100k --blind runs/judging/train   # once: sheet + blind files
    python -m bench.descriptor_fit merge --sheet bench/display-training.json --judged FILE ... --round train-1
    python -m bench.display_learn fit --workdir runs/ml-100k          # bench/display-learned.json: weights, agreement

The hand-set card order (the genre proxy, the genres' names at 1.5, the base LLM's reading of the title at 0.07,
MiniLM's closeness to the title at 1, the decade word at 1) was tuned by reading judged marks of the scored sample
itself. This learns the order instead, from a second judged sheet, `bench/display-training.json`, whose films are
drawn apart from the scored sheet's (bench/descriptor-judgments.json), so the score of a display learned here is
never read on the words it was learned from.

**The training sheet** (`draw`, seed 2027): 80 films, 40 among the 200 most-rated and 40 from the rest, none in the
scored sample. Per film, 24 words: the 12 best candidates of its card by the hand-set order (distinct stems), 6
drawn from its candidates ranked 13 to 60 (what a different order could bring up), and 6 random words of the
vocabulary, shuffled into one list. Readers judge them by the scored sheet's rule (`bench.descriptor_fit.RULE`),
blind: the file does not say which word came from where; the sheet records it.

**The model** (`fit`): a logistic regression (scikit-learn) of "fit" against "no" or "unsuitable" on the card
features of `training.readout.card_features` (genre, name, lm, title, era, own, near, generic), standardised.
Its agreement with the marks is reported as ROC AUC over 5 folds grouped by film (no film's words in both the
folds' training and test parts), beside the hand-set order's AUC on the same marks. The weights, in the features'
own units, are what `face.display_card_weights` takes, and the threshold a card's sixth word and on must reach
(`face.display_item_min_fit`, now a log-odds) is chosen by a rule written in docs/face.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.descriptor_fit import LABELS, RULE, SHEET, load_sheet, save_sheet, write_blind

TRAINING_SHEET = Path(__file__).with_name("display-training.json")
OUT = Path(__file__).with_name("display-learned.json")
TOP, DEEP, DEEP_FROM, DEEP_TO, RANDOM = 12, 6, 12, 60, 6
PRIOR_MARKS = 1.0  # pseudo-marks a word's prior is smoothed with (towards the share of all marks that fit)
LEAST_FIT = 0.65  # the predicted fit share the chosen threshold keeps (docs/face.md, the sixth display's rule)


def hand_set(settings):
    """The face settings with the hand-set card order (`training.readout.card_order` without learned weights), what
    the training sheet was drawn by and what the learned order is compared with, whatever the config ships."""
    return dataclasses.replace(settings, display_card_weights=None)


def ranked_candidates(order: torch.Tensor, pool: torch.Tensor, groups: torch.Tensor, limit: int) -> list[int]:
    """A film's candidates (pool: bool [V]) best first by `order` [V], one per stem group, the first `limit`."""
    rows = torch.nonzero(pool).flatten()
    ranked = rows[torch.argsort(-order[rows].double(), stable=True)].tolist()
    taken, out = set(), []
    for word in ranked:
        group = int(groups[word])
        if group not in taken:
            taken.add(group)
            out.append(word)
            if len(out) == limit:
                break
    return out


def draw_films(popularity: np.ndarray, excluded: set[int], seed: int, films: int = 80, top: int = 200) -> list[int]:
    """Half the films among the `top` most-rated, half from the rest, none in `excluded` (row indices)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-popularity, kind="stable").tolist()
    head = [i for i in order[:top] if i not in excluded]
    tail = [i for i in order[top:] if i not in excluded]
    return [*rng.choice(head, size=films // 2, replace=False).tolist(),
            *rng.choice(tail, size=films - films // 2, replace=False).tolist()]


def draw(workdir: Path, config_path: Path, blind: Path, seed: int) -> dict[str, Any]:
    from bench.descriptor_fit import _missing
    from training.config import load_config
    from training.readout import built_card_features, card_order

    if TRAINING_SHEET.exists():
        raise SystemExit(f"{TRAINING_SHEET} exists: its films are drawn once")
    config = load_config(config_path)
    readout, data, features, pool = built_card_features(config, workdir)
    order = card_order(features, hand_set(config.face))
    item_ids = readout.item_ids
    scored = set(load_sheet(SHEET)["sample"]["items"])
    index = {item: i for i, item in enumerate(item_ids)}
    popularity = np.asarray(data.item_counts(), dtype=float)
    films = draw_films(popularity, {index[i] for i in scored if i in index}, seed)
    rng = np.random.default_rng([seed, 1])
    sheet = {"rule": RULE, "seed": seed, "drawn_from": str(workdir),
             "sample_rule": "80 films outside bench/descriptor-judgments.json's sample, 40 among the 200 most-rated "
                            "and 40 from the rest (draw_films); per film the 12 best candidates of its card by the "
                            "hand-set order, 6 of its candidates ranked 13 to 60, 6 random vocabulary words",
             "sample": {"items": [item_ids[i] for i in films], "users": []},
             "sources": {"items": {}}, "random": {"items": {}, "users": {}},
             "judgments": {"items": {}, "users": {}}}
    entries = []
    items = data.items
    for film in films:
        ranked = ranked_candidates(order[film], pool[film], readout.word_groups, DEEP_TO)
        top, deep = ranked[:TOP], ranked[DEEP_FROM:]
        deep = [deep[i] for i in rng.choice(len(deep), size=min(DEEP, len(deep)), replace=False)]
        taken = {int(readout.word_groups[w]) for w in top + deep}
        others = [w for w in range(len(readout.words)) if int(readout.word_groups[w]) not in taken
                  and not bool(readout.display.user_hidden[w])]
        extra = [others[i] for i in rng.choice(len(others), size=RANDOM, replace=False)]
        sources = {**{readout.words[w]: "top" for w in top}, **{readout.words[w]: "deep" for w in deep},
                   **{readout.words[w]: "random" for w in extra}}
        words = list(sources)
        rng.shuffle(words)
        entity = item_ids[film]
        sheet["sources"]["items"][entity] = sources
        sheet["random"]["items"][entity] = [readout.words[w] for w in extra]
        row = items.iloc[film]
        title = f"{row.title} ({int(row.year)})" if not _missing(row.year) else str(row.title)
        entries.append({"kind": "item", "id": entity, "film": title, "genres": list(row.genres), "words": words})
    save_sheet(sheet, TRAINING_SHEET)
    paths = write_blind(entries, blind, 20, "train-1")
    return {"films": len(films), "words": sum(len(e["words"]) for e in entries), "files": [str(p) for p in paths]}


def marks_table(sheet: dict[str, Any], readout, features: dict[str, torch.Tensor]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """X [N, F] the card features of every judged (film, word) but the `word` prior, y [N] 1 for fit, groups [N]
    the film's row, the feature names (`training.readout.CARD_FEATURES` less `word`) and the words."""
    from training.readout import CARD_FEATURES

    names = [name for name in CARD_FEATURES if name != "word"]
    item_index = {item: i for i, item in enumerate(readout.item_ids)}
    word_index = {word: i for i, word in enumerate(readout.words)}
    rows, labels, groups, words = [], [], [], []
    for entity, marks in sheet["judgments"]["items"].items():
        film = item_index[entity]
        for word, mark in marks.items():
            if word not in word_index:
                continue
            w = word_index[word]
            rows.append([float(features[name][film, w]) for name in names])
            labels.append(mark["label"] == "fit")
            groups.append(film)
            words.append(word)
    return np.array(rows), np.array(labels, dtype=int), np.array(groups), names, words


def word_log_odds(words: list[str], labels: np.ndarray,
                  prior_marks: float = PRIOR_MARKS) -> tuple[dict[str, float], float]:
    """Each judged word's log-odds of fit, smoothed towards the share of all marks that fit by `prior_marks`
    pseudo-marks, and that share's log-odds (the default for a word never judged)."""
    base = float(labels.mean())
    fits: dict[str, list[int]] = {}
    for word, label in zip(words, labels.tolist(), strict=True):
        fits.setdefault(word, []).append(label)
    odds = {word: float(np.log((sum(v) + prior_marks * base) / (len(v) - sum(v) + prior_marks * (1 - base))))
            for word, v in fits.items()}
    return odds, float(np.log(base / (1 - base)))


def out_of_fold_prior(words: list[str], labels: np.ndarray, groups: np.ndarray, folds: int) -> np.ndarray:
    """[N] each mark's word prior learned from the other folds' films only (a mark never informs its own prior)."""
    from sklearn.model_selection import GroupKFold

    prior = np.zeros(len(labels))
    for train, test in GroupKFold(n_splits=folds).split(labels, labels, groups):
        odds, default = word_log_odds([words[i] for i in train], labels[train])
        prior[test] = [odds.get(words[i], default) for i in test]
    return prior


def fit(workdir: Path, config_path: Path, sheet_path: Path, folds: int = 5) -> dict[str, Any]:
    """The learned order (module docstring): agreement by grouped folds with and without the word prior, beside the
    hand-set order's; the weights of the model fit on every mark (the word prior of each mark out of fold, so that
    the model learns how far a prior from other films can be trusted); the word prior of every judged word; and the
    threshold table with the rule's choice."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.config import load_config
    from training.readout import built_card_features, card_order

    config = load_config(config_path)
    readout, _, features, pool = built_card_features(config, workdir)
    sheet = load_sheet(sheet_path)
    x, y, groups, names, words = marks_table(sheet, readout, features)
    hand = card_order(features, hand_set(config.face))
    item_index = {item: i for i, item in enumerate(readout.item_ids)}
    word_index = {word: i for i, word in enumerate(readout.words)}
    hand_scores = np.array([float(hand[item_index[e], word_index[w]])
                            for e, marks in sheet["judgments"]["items"].items() for w in marks if w in word_index])

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))

    agreement = {}
    for with_prior in (False, True):
        predicted = np.zeros(len(y))
        for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
            features_train, features_test = x[train], x[test]
            if with_prior:
                sub = [words[i] for i in train]
                inner = out_of_fold_prior(sub, y[train], groups[train], folds)
                odds, default = word_log_odds(sub, y[train])
                features_train = np.c_[features_train, inner]
                features_test = np.c_[features_test, [odds.get(words[i], default) for i in test]]
            predicted[test] = model().fit(features_train, y[train]).predict_proba(features_test)[:, 1]
        agreement["with_word_prior" if with_prior else "terms_alone"] = float(roc_auc_score(y, predicted))
    names = [*names, "word"]
    whole = model().fit(np.c_[x, out_of_fold_prior(words, y, groups, folds)], y)
    scaler, logistic = whole[0], whole[1]
    weights = logistic.coef_[0] / scaler.scale_
    bias = float(logistic.intercept_[0] - (weights * scaler.mean_).sum())
    odds, default = word_log_odds(words, y)
    prior = torch.tensor([odds.get(word, default) for word in readout.words])
    weighted = {"bias": bias, **{n: float(w) for n, w in zip(names, weights, strict=True)}}
    learned = card_order({**features, "word": prior[None].expand_as(hand)},
                         dataclasses.replace(config.face, display_card_weights=weighted))
    scored = set(load_sheet(SHEET)["sample"]["items"])
    popularity = np.argsort(-np.asarray(readout.item_weights.reciprocal().square()), kind="stable").tolist()
    strata = {"head": [i for i in popularity[:200] if readout.item_ids[i] not in scored],
              "tail": [i for i in popularity[200:] if readout.item_ids[i] not in scored]}
    grid = [round(t, 2) for t in np.arange(0.30, 0.751, 0.05)]
    table = threshold_table(learned, pool, readout.word_groups, strata, grid)
    return {
        "chosen_threshold": chosen_threshold(table), "least_fit": LEAST_FIT, "thresholds": table,
        "sheet": str(sheet_path), "marks": int(len(y)), "fit_share": float(y.mean()), "films": int(len(set(groups))),
        "auc_cv": agreement, "auc_hand_set": float(roc_auc_score(y, hand_scores)), "folds": folds,
        "weights": {"bias": round(bias, 4), **{n: round(float(w), 4) for n, w in zip(names, weights, strict=True)}},
        "standardised_weights": {n: round(float(w), 4) for n, w in zip(names, logistic.coef_[0], strict=True)},
        "labels": list(LABELS), "prior_marks": PRIOR_MARKS, "word_default": round(default, 4),
        "word_prior": {word: round(value, 4) for word, value in sorted(odds.items())},
    }


def expected_card(probabilities: list[float], need: int = 4) -> float:
    """The chance that at least `need` of a card's words fit, each independently with its probability (the
    Poisson-binomial tail)."""
    counts = np.zeros(len(probabilities) + 1)
    counts[0] = 1.0
    for p in probabilities:
        counts[1:] = counts[1:] * (1 - p) + counts[:-1] * p
        counts[0] *= 1 - p
    return float(counts[need:].sum())


def threshold_table(order: torch.Tensor, pool: torch.Tensor, groups: torch.Tensor, films: dict[str, list[int]],
                    thresholds: list[float], k: int = 8, min_words: int = 5) -> list[dict[str, float]]:
    """Per threshold (a probability), what the learned order would show on `films` (row indices per stratum): a card
    takes its candidates best first by `order` (log-odds [I, V]), one per stem, at least `min_words` and more while
    the probability is at least the threshold, up to k (the exposure caps left out). Per stratum, the mean predicted
    fit of the shown words and the expected share of films with 4 or more fitting; the strata weigh equally, as the
    scored sheet's halves do."""
    table = []
    for threshold in thresholds:
        row: dict[str, float] = {"threshold": threshold}
        shares, fours, counts = [], [], []
        for rows in films.values():
            fit, four, shown = [], [], []
            for film in rows:
                ranked = ranked_candidates(order[film], pool[film], groups, k)
                p = torch.sigmoid(order[film, ranked]).tolist()
                kept = [q for i, q in enumerate(p) if i < min_words or q >= threshold]
                fit += kept
                four.append(expected_card(kept))
                shown.append(len(kept))
            shares.append(float(np.mean(fit)))
            fours.append(float(np.mean(four)))
            counts.append(float(np.mean(shown)))
        row.update(expected_fit=float(np.mean(shares)), expected_with_4=float(np.mean(fours)),
                   words_per_card=float(np.mean(counts)))
        table.append(row)
    return table


def chosen_threshold(table: list[dict[str, float]], least_fit: float = LEAST_FIT) -> float | None:
    """The rule written in docs/face.md before the training sheet was judged: the lowest threshold whose predicted
    fit share is at least `least_fit` (None: none is)."""
    passing = [row["threshold"] for row in table if row["expected_fit"] >= least_fit]
    return min(passing) if passing else None


def learned_display(path: Path = Path("bench/display-learned.json")) -> dict[str, Any] | None:
    """The `face` settings of the learned card order (`display_card_weights`, and `display_item_min_fit` the chosen
    threshold as log-odds), or None when `fit` has not written `path` or chose no threshold."""
    if not path.exists():
        return None
    learned = json.loads(path.read_text())
    if learned.get("chosen_threshold") is None:
        return None
    p = learned["chosen_threshold"]
    return {"display_card_weights": learned["weights"], "display_card_word_prior": str(path),
            "display_item_min_fit": round(float(np.log(p / (1 - p))), 4)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("draw", "fit") else "fit"
    parser = argparse.ArgumentParser(prog=f"python -m bench.display_learn {command}")
    parser.add_argument("--workdir", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--config", type=Path, default=Path("configs/ml-100k.yaml"))
    if command == "draw":
        parser.add_argument("--blind", type=Path, required=True)
        parser.add_argument("--seed", type=int, default=2027)
    else:
        parser.add_argument("--sheet", type=Path, default=TRAINING_SHEET)
        parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if command == "draw":
        print(json.dumps(draw(args.workdir, args.config, args.blind, args.seed), indent=1))
        return 0
    result = fit(args.workdir, args.config, args.sheet)
    result["command"] = "python -m bench.display_learn fit " + " ".join(argv)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
