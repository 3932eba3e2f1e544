"""docs/descriptors.md: the shipped bundle's FACE words, to judge by eye, with the measures and the ablation.

    python -m bench.descriptors --bundle assets/ml-100k --ablation bench/face-ablation.json --out docs/descriptors.md

The page holds: the build's vocabulary rule and the word measures of its report (per kind: faithfulness against
random words, distinct words, own-group lift, common words that tell nothing); the `--films` most-rated films of
the catalog with their genres, year and words; `--personas` of the bundle's personas with their demographics,
their most-watched genres, the newest films of their history and two sets of words: the dataset user's own
(the read-out of the trained user embedding) and what the app shows a visitor who starts from that persona
(the fold-in of the history without its held-out last film); and the FACE ablation table of `--ablation`
(`python -m bench.face_ablation`). Everything on it is read from the bundle and the ablation file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from bench.face_ablation import markdown as ablation_markdown
from face_app.bundle import Bundle
from face_app.engine import Engine
from training.report import format_metric, word_measures


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def judged_section(fit: Path | None, baseline: Path | None, levers: Path | None, lightgcn: str = "-") -> list[str]:
    """The judged fit of the bundle's shown words (`python -m bench.descriptor_fit`), beside the round-2 read-out's
    and the levers' (`python -m bench.readout_levers`); lightgcn: the bundle's LightGCN test NDCG@10, as text."""
    lines: list[str] = []
    rows = [(name, json.loads(path.read_text())) for name, path in (("round 2 (shipped before)", baseline),
                                                                     ("this bundle", fit)) if path and path.exists()]
    if rows:
        lines += ["## Judged fit (the result)", "",
                  "Blind marks of bench/descriptor-judgments.json (80 films, half among the 200 most-rated, and 30 "
                  "users, seed 2026; the rule is in the sheet's header, written before any word was judged). The "
                  "shown words are mixed with as many random words of the vocabulary before a reader sees them. "
                  "Produced by `" + rows[-1][1].get("command", "python -m bench.descriptor_fit") + "`.", "",
                  "| read-out | kind | shown words judged to fit | random words that fit | with 4+ fitting | "
                  "with none | unsuitable shown | proxy AUC | marks by round |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, result in rows:
            for kind, r in result["per_kind"].items():
                lines.append(f"| {name} | {kind} | {pct(r['shown_fit'])} of {r['shown_words']} | "
                             f"{pct(r['random_fit'])} of {r['random_words']} | {r['entities_with_4_fitting']:.0%} | "
                             f"{r['entities_with_no_fitting']} | {r['shown_unsuitable']} | "
                             f"{pct(r['proxy_auc_fit_vs_no'])} | {r['marks_by_round']} |")
        lines.append("")
    if levers and levers.exists():
        found = json.loads(levers.read_text())
        last = found.get("command", "python -m bench.readout_levers")
        lines += ["## Levers", "", "Each row trained by `python -m bench.readout_levers --levers NAME --out "
                  f"bench/readout-levers.json` and last scored by `{last}`, each on the frozen "
                  "LightGCN embeddings of the bundle's read-out (so LightGCN's results cannot change), with the "
                  "suitability seeds of the time it ran. Judged fit counts only the "
                  "shown words the sheet had marks for when the lever was last scored (`--rescore` scores the saved "
                  "read-outs again after a judged round); the unjudged count says how much of the row is proxy only, "
                  "and films with 4+ fitting words count judged words alone. Faithfulness: hit@10 of the words' text "
                  "retrieving the entity's round-2 profile, over random words' (20 draws of as many random words as "
                  "the entity shows; a row marked * still has the older baseline, 5 draws of 8 random words, which "
                  "reads higher for users, who show 4 to 8). LightGCN's test NDCG@10 is the "
                  "bundle's: every lever reads the same frozen embeddings.", "",
                  "| lever | vocabulary | items: judged fit (judged / unjudged) | films with 4+ fitting | users: "
                  "judged fit (judged / unjudged) | proxy, items / users | faithfulness, items / users | films with "
                  "5+ words | LightGCN test NDCG@10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in found.get("levers", {}).items():
            judged, unjudged = row["judged"], row.get("unjudged_shown", {})
            per_item = row["shown_per_item"]
            five = sum(per_item[5:]) / max(sum(per_item), 1)
            cells = [f"{pct(judged[k]['shown_fit'])} ({judged[k]['shown_words']} / {unjudged.get(k, 0)})"
                     for k in ("items", "users")]
            lines.append(f"| {name} | {row['vocabulary_words']:,} | {cells[0]} | "
                         f"{judged['items']['entities_with_4_fitting']:.0%} | {cells[1]} | "
                         f"{row['proxy_mean_shown']['items']:.3f} / {row['proxy_mean_shown']['users']:.3f} | "
                         f"{row['faithfulness']['items']:.1f}x / {row['faithfulness']['users']:.1f}x"
                         f"{'' if row.get('faithfulness_baseline') else ' *'} | {five:.0%} | "
                         f"{lightgcn} |")
        lines.append("")
    return lines


def page(bundle_dir: Path, ablation: Path | None, films: int, personas: int, command: str,
         fit: Path | None = None, baseline: Path | None = None, levers: Path | None = None) -> str:
    bundle = Bundle.load(bundle_dir)
    engine = Engine.from_bundle(bundle, load_llm=False)
    catalog, readout = engine.catalog, bundle.descriptors
    report = bundle.manifest.get("report", {})
    descriptors = report.get("descriptors", {})
    face = bundle.manifest.get("config", {}).get("face", {})
    lines = ["# FACE descriptors of the shipped bundle, to judge by eye", "",
             f"Generated by `{command}` from `{bundle_dir}` (bundle `{bundle.name}`, created "
             f"{bundle.manifest.get('created', '?')}). Each entity gets at most {readout.k} words of the codebook (the "
             "display rule shows fewer where its words stop fitting); no two share a stem.", ""]
    if face:
        lines += [f"Vocabulary rule `{face.get('vocabulary', 'all')}` ({len(readout.words):,} words; "
                  f"share kept by relevance {face.get('vocabulary_share', 1)}), hub correction weight "
                  f"{face.get('hub_penalty', 0)}: see training/vocabulary.py and docs/face.md.", ""]
    lightgcn = bundle.manifest.get("report", {}).get("models", {}).get("LightGCN", {})
    lines += judged_section(fit, baseline, levers, format_metric(lightgcn, "NDCG@10") if lightgcn else "-")
    if descriptors.get("words"):
        lines += ["## Measures (the build's report)", *word_measures(descriptors), ""]

    lines += [f"## The {films} most-rated films", "", "| film | genres | words |", "|---|---|---|"]
    order = sorted(range(len(catalog.ids)), key=lambda r: (-int(catalog.popularity[r]), r))
    for row in order[:films]:
        item = catalog.item(catalog.ids[row])
        lines.append(f"| {item.label} | {', '.join(item.genres)} | {', '.join(readout.for_item(item.item_id))} |")

    users = {} if engine.users is None else {str(r["user_id"]): r for r in engine.users.to_dict("records")}
    lines += ["", f"## {personas} personas", "",
              "A persona is a test user of the dataset; the app starts a visitor from their history without its "
              "held-out last film. *Own words*: the read-out of the trained user embedding; *shown words*: what "
              "the app shows for the history (its fold-in).", ""]
    for user_id in list(engine.personas)[:personas]:
        history = engine.personas[user_id]
        row = users.get(user_id, {})
        who = ", ".join(str(row[k]) for k in ("age", "gender", "occupation") if k in row)
        genres = Counter(g for i in history for g in catalog.item(i).genres)
        newest = "; ".join(catalog.item(i).label for i in history[-8:][::-1])
        own = ", ".join(readout.for_user(user_id)) if user_id in set(readout.user_ids) else "(not in the read-out)"
        lines += [f"### User {user_id} ({who}; {len(history)} films)", "",
                  f"- most-watched genres: {', '.join(f'{g} {n}' for g, n in genres.most_common(4))}",
                  f"- newest films: {newest}",
                  f"- own words: {own}",
                  f"- shown words: {', '.join(readout.describe_history(history))}", ""]

    if ablation and ablation.exists():
        lines += ["## Does FACE improve LightGCN? The ablation", "",
                  f"From `{ablation}` (`python -m bench.face_ablation --table`); test and valid metrics on every "
                  "user, mean ± standard deviation over seeds.", "",
                  ablation_markdown(json.loads(ablation.read_text()))]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.descriptors", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--ablation", type=Path, default=Path("bench/face-ablation.json"))
    parser.add_argument("--films", type=int, default=20)
    parser.add_argument("--personas", type=int, default=6)
    parser.add_argument("--fit", type=Path, default=Path("bench/descriptor-fit.json"))
    parser.add_argument("--baseline", type=Path, default=Path("bench/descriptor-fit-round2.json"))
    parser.add_argument("--levers", type=Path, default=Path("bench/readout-levers.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/descriptors.md"))
    args = parser.parse_args(argv)
    command = (f"python -m bench.descriptors --bundle {args.bundle} --ablation {args.ablation} "
               f"--out {args.out}")
    text = page(args.bundle, args.ablation, args.films, args.personas, command, args.fit, args.baseline,
                args.levers)
    args.out.write_text(text)
    print(f"[descriptors] wrote {args.out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
