"""The descriptor levers of issue 23, each a read-out trained on the same frozen LightGCN, measured the same way.

    python -m bench.readout_levers --workdir runs/ml-100k --bundle assets/ml-100k --out bench/readout-levers.json

Each lever is a set of `face` settings (training/config.py `FACEConfig`) in `mode: readout`, trained on the CF
embeddings of the bundle's read-out (LightGCN seed 0, frozen: LightGCN's results cannot change). For each: the
vocabulary size, the judged fit of its shown words on the sheet where judged (bench/descriptor_fit.py; the count of
unjudged shown words beside it, so a row with many is a proxy row only), the automatic proxy's mean over shown words,
faithfulness against random words on the round-2 profiles (training/vocabulary.py `faithfulness`), the films and
users with at least 5 shown words, and the most exposed shown words. Each read-out is written under
`<workdir>/readouts/<lever>/readout`, so `python -m bench.descriptor_fit --readout DIR` can score it, and
`--rescore` scores the saved read-outs again against the sheet after a judged round (the rest of each row stays).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.display_learn import learned_display
from face_app.bundle import Bundle
from face_app.descriptors import Descriptors, stem_groups
from face_app.hardware import machine
from training.config import FACEConfig
from training.data import SplitData
from training.face import descriptor_vocabulary
from training.film_knowledge import film_word_scores, title_word_scores
from training.profiles import TextEncoder, item_genres, item_profiles, rich_item_profiles, user_profiles
from training.readout import build_display_readout, history_profiles, train_readout
from training.suitability import seed_words, sensitive_topics
from training.vocabulary import GENERIC_ANCHORS, faithfulness, genre_anchors, genre_names

BASE = {"mode": "readout", "suitable": True, "epochs": 4, "lr": 1e-3, "align_weight": 1.0, "temperature": 0.05,
        "entities_per_step": 64, "align_entities": 64, "display_min_fit": 0.15}
SECOND_DISPLAY_NEIGHBOURS = {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                             "display_item_candidates": 128, "display_item_neighbours": 10, "centre": True,
                             "display_name_weight": 1.5, "display_lm": "smollm2", "display_lm_weight": 0.07,
                             "display_card_weight": 1.0, "display_genre_rule": "blend", "display_min_words": 3,
                             "display_min_fit": 0.7, "display_item_min_words": 5, "display_item_min_fit": 0.9}
LEVERS: dict[str, dict[str, Any]] = {
    # round 2's vocabulary rule and profiles, with the suitability rules and the display rule
    "describing-basic": {"vocabulary": "describing", "profiles": "basic"},
    "film-rich": {"vocabulary": "film", "profiles": "rich"},
    "film-rich-16cand-centred": {"vocabulary": "film", "profiles": "rich", "display_candidates": 16, "centre": True},
    # the first judged round (later-1)
    "film-richitems-32cand-centred-close2": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 32,
                                             "centre": True, "display_closeness": 2.0},
    # round 3, session 1's first display
    "film-richitems-128cand-centred": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                                       "centre": True},
    # every vocabulary word a candidate: the display proxy alone, the CF read-out choosing nothing (a bound, not FACE)
    "film-richitems-proxy-only": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 4000,
                                  "centre": True},
    # round 3's second display (the same read-out): the genres' names, then what the base LLM reads in a film's
    # title (training/film_knowledge.py) over more candidates, then a user's words by their films' cards
    "names": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128, "centre": True,
              "display_name_weight": 1.5},
    "names-lm-512": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 512, "centre": True,
                     "display_name_weight": 1.5, "display_lm": "smollm2", "display_lm_weight": 0.07},
    "names-lm-512-cards": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 512,
                           "centre": True, "display_name_weight": 1.5, "display_lm": "smollm2",
                           "display_lm_weight": 0.07, "display_card_weight": 1.0},
    # items over 512 candidates, users and visitors over 128 (a user's words then stay particular to them)
    "names-lm-512i-128u-cards": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                                 "display_item_candidates": 512, "centre": True, "display_name_weight": 1.5,
                                 "display_lm": "smollm2", "display_lm_weight": 0.07, "display_card_weight": 1.0},
    "names-lm-512i-128u-cards2": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                                  "display_item_candidates": 512, "centre": True, "display_name_weight": 1.5,
                                  "display_lm": "smollm2", "display_lm_weight": 0.07, "display_card_weight": 2.0},
    "names-lm-512i-128u-cards-blend": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                                       "display_item_candidates": 512, "centre": True, "display_name_weight": 1.5,
                                       "display_lm": "smollm2", "display_lm_weight": 0.07,
                                       "display_card_weight": 1.0, "display_genre_rule": "blend"},
    # the same, a card showing a word past its fifth only above 0.9 of the display's score, a user's past their
    # third only above 0.7
    "second-display": {"vocabulary": "film", "profiles": "rich-items", "display_candidates": 128,
                       "display_item_candidates": 512, "centre": True, "display_name_weight": 1.5,
                       "display_lm": "smollm2", "display_lm_weight": 0.07, "display_card_weight": 1.0,
                       "display_genre_rule": "blend", "display_min_words": 3, "display_min_fit": 0.7,
                       "display_item_min_words": 5, "display_item_min_fit": 0.9},
    # the second display as shipped in session 2: a card's candidates its own concepts' 128 nearest words and its 10 CF
    # neighbours'
    "second-display-neighbours": SECOND_DISPLAY_NEIGHBOURS,
    # shipped (round 3, session 3: third-display-title1): the same, a card's order also by closeness to the
    # film's own title
    # (training/film_knowledge.py `title_word_scores`), and a user's words past their fourth only above 0.5
    **{f"third-display-title{weight}": {**SECOND_DISPLAY_NEIGHBOURS, "display_min_words": 4, "display_min_fit": 0.5,
                                        "display_title_weight": float(weight)} for weight in (1, 2)},
    # round 3, session 4: the same, the vocabulary with the genre and era words SmolLM2 reads in pieces
    # ("thriller", "noir", "sixties"; `training.vocabulary.domain_words`)
    "fourth-display-domain-words": {**SECOND_DISPLAY_NEIGHBOURS, "display_min_words": 4, "display_min_fit": 0.5,
                                    "display_title_weight": 1.0, "domain_words": True},
    # round 3, session 5: the same, a card's order also by the film's decade word where it is a candidate, a user's
    # by how much more their films' cards show a word than an average user's, and a card's sixth word and on
    # above 0.7 rather than 0.9. Like every row here, without the shipped config's `film_share_cap` (0.02): a build
    # of the same display shows other words on the cards it caps, and so other user words (docs/face.md)
    **{f"fifth-display-{tag}": {
        **SECOND_DISPLAY_NEIGHBOURS, "display_min_words": 4, "display_min_fit": 0.5, "display_title_weight": 1.0,
        "domain_words": True, **extra} for tag, extra in (
        ("era", {"display_era_weight": 1.0}),
        ("era-centred", {"display_era_weight": 1.0, "display_card_centre": 1.0}),
        ("era-centred-more", {"display_era_weight": 1.0, "display_card_centre": 1.0, "display_item_min_fit": 0.7}),
        # the shipped fifth display with the config's film-share cap (0.9: as built), a card's sixth word and on above
        # 0.9, 0.8 or 0.7
        *((f"era-capped-more{int(threshold * 10)}", {"display_era_weight": 1.0, "film_share_cap": 0.02,
                                                      "display_item_min_fit": threshold})
          for threshold in (0.9, 0.8, 0.7)),
        # a user's card share over their latest 10 films (the LLM prompt's window), weighted 3 or 4
        *((f"era-recent-cards{weight}", {"display_era_weight": 1.0, "display_card_centre": 1.0,
                                         "display_card_recent": 10, "display_card_weight": float(weight)})
          for weight in (3, 4)),
    )},
}
# round 3, session 6: the shipped fifth display with a card order learned from a second judged sheet of other films
# (bench/display_learn.py; its threshold by the rule in docs/face.md), users as shipped or by their latest 10 films'
# cards, centred, at weight 3
if (_LEARNED := learned_display()) is not None:
    _SHIPPED = {**LEVERS["fifth-display-era-capped-more8"], **_LEARNED}
    LEVERS["sixth-display-learned"] = _SHIPPED
    LEVERS["sixth-display-learned-recent3"] = {**_SHIPPED, "display_card_centre": 1.0, "display_card_recent": 10,
                                               "display_card_weight": 3.0}
    # the same, a card never naming a genre its film is not listed in (docs/face.md, the seventh display)
    LEVERS["seventh-display-own-genres"] = {**LEVERS["sixth-display-learned-recent3"], "display_item_own_genres": True}
    # round 3, session 8: the shipped display (sixth-display-learned-recent3) with the capped words shared out in two
    # rounds, every film's first 4 before any film's fifth (`training.readout.read_out_cards`), with the config's
    # film-share cap or with the exposure cap alone
    LEVERS["eighth-display-first4"] = {**LEVERS["sixth-display-learned-recent3"], "display_item_first_words": 4}
    LEVERS["eighth-display-first4-uncapped"] = {**LEVERS["eighth-display-first4"], "film_share_cap": 1.0}
    # round 3, session 9: the shipped eighth display with a card never naming a genre its film is not listed in, with
    # every card at least 6 words rather than 5, or with both (docs/face.md, the ninth display)
    LEVERS["ninth-display-own-genres"] = {**LEVERS["eighth-display-first4"], "display_item_own_genres": True}
    LEVERS["ninth-display-min6"] = {**LEVERS["eighth-display-first4"], "display_item_min_words": 6}
    LEVERS["ninth-display-own-genres-min6"] = {**LEVERS["ninth-display-own-genres"], "display_item_min_words": 6}
    # added before round later-20 was drawn: no foreign genre, every card 7 or 8 words
    for _words in (7, 8):
        LEVERS[f"ninth-display-own-genres-min{_words}"] = {**LEVERS["ninth-display-own-genres"],
                                                          "display_item_min_words": _words}
# How faithfulness's random baseline is drawn (`training.vocabulary.faithfulness`); rows without it in
# bench/readout-levers.json drew 5 times 8 random words per entity, before round 3, session 4.
FAITHFULNESS_BASELINE = "20 draws of as many random words as the entity shows"
# The settings that change only what is shown (the display rule and the exposure caps, not what the read-out
# learns): levers that differ only in them share one training.
def display_only(key: str) -> bool:
    return key.startswith("display_") or key in ("exposure_cap", "film_share_cap")


_TRAINED: dict[str, Any] = {}


def shown_words(readout: Descriptors) -> dict[str, list[list[str]]]:
    """Every item's and user's shown words."""
    return {"items": [readout.for_item(i) for i in readout.item_ids],
            "users": [readout.for_user(u) for u in readout.user_ids]}


def faithful_row(text: TextEncoder, readout: Descriptors, profiles: dict[str, torch.Tensor],
                 described: dict[str, list[list[str]]]) -> dict[str, Any]:
    """A lever row's faithfulness per kind (hit@10 of its shown words over random words') and its baseline."""
    faithful = faithfulness(text, described, profiles, readout.words, readout.k)
    return {"faithfulness": {kind: m["hit@10"] / max(m["random_hit@10"], 1e-12)
                             for kind, m in faithful["per_kind"].items()},
            "faithfulness_baseline": FAITHFULNESS_BASELINE}


def run_lever(name: str, overrides: dict[str, Any], data: SplitData, cf: Descriptors, text: TextEncoder,
              basic: dict[str, torch.Tensor], rich_items: torch.Tensor, out_dir: Path) -> tuple[Descriptors, dict]:
    settings = FACEConfig(**{**dataclasses.asdict(FACEConfig()), **BASE, **overrides})
    start = time.perf_counter()
    rich_users = history_profiles(data, rich_items)
    anchors = text.encode_texts(genre_anchors(item_genres(data)[0]))
    words, word_embeddings = descriptor_vocabulary(text, settings, torch.cat([basic["users"], basic["items"]]),
                                                   anchors, item_genres(data)[0])
    codebook = text.word_vectors(words)
    groups = stem_groups(words) if settings.distinct_stems else None
    targets = {"rich": (rich_users, rich_items), "rich-items": (basic["users"], rich_items),
               "basic": (basic["users"], basic["items"])}[settings.profiles]
    key = json.dumps({k: v for k, v in {**BASE, **overrides}.items() if not display_only(k)}, sort_keys=True)
    if key not in _TRAINED:
        _TRAINED[key] = train_readout(cf.user_embeddings, cf.item_embeddings, text, codebook, word_embeddings,
                                      groups, targets, data, settings, seed=0)
    face, log = _TRAINED[key]
    sensitive = sensitive_topics(words, word_embeddings, text.encode_texts(seed_words()), seed_words())
    film_scores = (film_word_scores(data.items, words, settings.display_lm)
                   if settings.display_lm != "none" and settings.display_lm_weight else None)
    readout, shown = build_display_readout(face, cf.user_embeddings, cf.item_embeddings, data, words,
                                           word_embeddings, anchors, text.encode_texts(list(GENERIC_ANCHORS)),
                                           sensitive, settings, text.encode_texts(genre_names(item_genres(data)[0])),
                                           film_scores,
                                           title_word_scores(data.items, torch.nn.functional.normalize(
                                               word_embeddings.float(), dim=-1), text)
                                           if settings.display_title_weight else None)
    readout.save(out_dir / name / "readout")
    described = shown_words(readout)
    index = {w: i for i, w in enumerate(words)}
    proxy = {}
    display = readout.display
    genres = {"items": display.item_genres,
              "users": torch.stack([display.history_genres(h.tolist()) for h in data.train])}
    for kind in ("items", "users"):
        fit = display.fit(genres[kind])  # the genre proxy alone (what the bench scores against the marks)
        values = [float(fit[e, index[w]]) for e, ws in enumerate(described[kind]) for w in ws]
        proxy[kind] = sum(values) / max(len(values), 1)
    return readout, {
        "settings": {**BASE, **overrides}, "vocabulary_words": len(words), "seconds": time.perf_counter() - start,
        "loss_log": log, "proxy_mean_shown": proxy,
        **faithful_row(text, readout, basic, described), "sensitive_words": sum(t is not None for t in sensitive),
        **shown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readout_levers", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--out", type=Path, default=Path("bench/readout-levers.json"))
    parser.add_argument("--rescore", action="store_true",
                        help="only score each lever's saved read-out against the sheet as it is now (after a judged "
                             "round) and its faithfulness against the current baseline, keeping the rest of its row")
    args = parser.parse_args(argv)
    from bench.descriptor_fit import Context, load_sheet, score

    data = SplitData.load(args.workdir / "data")
    cf = Bundle.load(args.bundle).descriptors
    text = TextEncoder()
    basic = {"users": text.cached_encode(user_profiles(data)), "items": text.cached_encode(item_profiles(data.items))}
    rich_items = text.cached_encode(rich_item_profiles(data))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = machine()
    results["command"] = "python -m bench.readout_levers " + " ".join(sys.argv[1:] if argv is None else argv)
    context = Context(args.bundle)
    sheet = load_sheet()
    for name in args.levers:
        if args.rescore:
            readout, row = Descriptors.load(args.workdir / "readouts" / name / "readout"), results["levers"][name]
            row |= faithful_row(text, readout, basic, shown_words(readout))
        else:
            readout, row = run_lever(name, LEVERS[name], data, cf, text, basic, rich_items,
                                     args.workdir / "readouts")
        context.readout = readout
        judged = score(context, sheet, allow_unjudged=True)
        row["judged"] = {kind: {key: r[key] for key in ("shown_fit", "shown_words", "entities_with_4_fitting",
                                                        "shown_unsuitable", "proxy_auc_fit_vs_no")}
                         for kind, r in judged["per_kind"].items()}
        row["unjudged_shown"] = {kind: sum(len(w) for w in per.values()) for kind, per in judged["unjudged"].items()}
        results.setdefault("levers", {})[name] = row
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        keys = ("vocabulary_words", "proxy_mean_shown", "faithfulness", "judged", "unjudged_shown")
        print(f"{name}: {json.dumps({k: row[k] for k in keys})}")
    print(f"python {platform.python_version()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
