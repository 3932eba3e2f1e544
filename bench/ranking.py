"""How the chat orders its picks, scored under the evaluation protocol: the engine's top-10 for dataset users.

    python -m bench.ranking --bundle assets/ml-100k --workdir runs/ml-100k --split valid \\
        --recent 0,1,2,3,5,10 --weights 0,0.05,0.1,0.25,0.5,1 --out bench/ranking-valid.json
    python -m bench.ranking --bundle assets/ml-100k --workdir runs/ml-100k --split test --recent 0,3 \\
        --weights 0,0.1 --out bench/ranking-test.json
    python -m bench.ranking --bundle assets/ml-100k --workdir runs/ml-100k --split valid --recent 3 \\
        --weights 0.1 --intent-llm 0,0.25,0.5,1,2 --intent-cf 0,0.025,0.05,0.1,0.2 --out bench/intent-valid.json
    python -m bench.ranking --bundle assets/ml-100k --workdir runs/ml-100k --split valid --recent 3 \
        --weights 0.1 --intent-llm 0,1 --intent-cf 0,0.1 --boost 0,2,4,8 --last 3 --out bench/boost-valid-last3.json

Each user of the split (or a seeded sample of `--users`) becomes a session whose history is everything they
saw before the target (or only its newest `--last` films: a history as short as a visitor types), and
`Engine.recommend` gives its top-10 through the arm (`--arms`), exactly as a chat turn
does. A generative arm (the LLM) is shown in its own order, so it is scored once, beside the generator's own
top-10 asked directly with the same exclusions (`own`): the two agree when the chat shows what the LLM
generated. A non-generative arm's pool is ordered by closeness to the newest `recent` history items plus
`weight` times the arm's own order (`face_app.ranking.ClosenessPicker`), history and twins excluded; `recent` 0 is the
arm's own order. Each arm weighs its scores with the history's genre and decade prior (`face_app.picking.Intent`)
at each weight of `--intent-llm` / `--intent-cf` (0: off) and each `--boost` (how much more a genre or decade
that dominates the history weighs: `face_app.picking.DOMINANCE_BOOST_LLM` / `_CF`), and how much of the
history's genre and decade mix the picks cover is reported beside the accuracy (`genre_cover`,
`decade_cover`: the mean over sessions and picks of `Intent.cover`; a pick of the history's main genre covers
its share). The LightGCN pool does not depend on (recent, weight, intent, boost), so it is computed once per
user and reused; the LLM's guided search is run again for every weight and boost.
`<workdir>/data` is the build's split (`python -m training build --config C --workdir W --stages data`).
Prints and writes HR@10 and NDCG@10 per (arm, recent, weight, intent, boost), with the machine and the commit;
`--out` is rewritten after every row, so a cut run keeps what it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.__main__ import git_commit
from face_app import hardware
from face_app.bundle import Bundle
from face_app.dialogue import ConversationState
from face_app.engine import Engine
from training.data import SplitData
from training.metrics import metrics_from_ranks


class PoolCache:
    """An arm whose pools are remembered per (history, request, exclusions): the grid re-ranks, never re-asks."""

    def __init__(self, arm) -> None:
        self.arm, self.name, self.generative, self.pools = arm, arm.name, arm.generative, {}

    def __getattr__(self, attribute: str):  # the arm's other attributes (its generator, for the SASRec guide)
        if attribute.startswith("_") or attribute == "arm":
            raise AttributeError(attribute)
        return getattr(self.arm, attribute)

    def rank(self, history, user_descriptors, request, exclude, n, bonus=None):
        if bonus is not None:  # a guided search differs with every prior
            return self.arm.rank(history, user_descriptors, request, exclude, n, bonus)
        key = (tuple(history), request, frozenset(exclude), n)
        if key not in self.pools:
            self.pools[key] = self.arm.rank(history, user_descriptors, request, exclude, n)
        return self.pools[key]


def metrics(tops: list[list[str]], targets: list[str]) -> dict[str, float]:
    """HR@10 / NDCG@10 of top-10 lists by the evaluation's own metric (`training.metrics.metrics_from_ranks`; a
    target outside the top-10 counts as never ranked)."""
    ranks = [top.index(target) if target in top else math.inf for top, target in zip(tops, targets, strict=True)]
    found = metrics_from_ranks(np.array(ranks, dtype=np.float64))
    return {"HR@10": found["HR@10"], "NDCG@10": found["NDCG@10"]}


def score(engine: Engine, arm: str, histories: list[list[str]], targets: list[str]) -> dict[str, float]:
    """HR@10 / NDCG@10 of the engine's top-10 (engine.n must be 10) over the sessions; for a generative arm also
    those of the arm's own top-10 (`own_`, rows without the intent prior) and the share of sessions whose two lists are
    identical."""
    shown, own, covers = [], [], []
    recommender = engine.recommenders[arm]
    picker = engine.picker(arm)
    alone = dataclasses.replace(picker, intent=0.0, guide=0.0) if recommender.generative else picker  # no prior
    for history in histories:
        state = ConversationState()
        state.add_history(history)
        plan = engine.plan(state)
        shown.append([p.item_id for p in picker.pick(plan)])
        rows = [engine.intent.row[i] for i in shown[-1]]
        covers.append([float(cover[rows].mean()) for cover in engine.intent.cover(list(plan.mixes))])
        if recommender.generative:
            own.append([p.item_id for p in alone.pick(plan)])
    row = {**metrics(shown, targets), "genre_cover": float(np.mean([c[0] for c in covers])),
           "decade_cover": float(np.mean([c[-1] for c in covers]))}
    if recommender.generative and not engine.intent_llm and not engine.guide_llm:
        row.update({f"own_{k}": v for k, v in metrics(own, targets).items()})
        row["identical_lists"] = float(np.mean([a == b for a, b in zip(shown, own, strict=True)]))
    return row


def sessions(data: SplitData, split: str, users: int = 0, seed: int = 0,
             last: int = 0) -> tuple[list[list[str]], list[str]]:
    """(histories, targets) as item ids: every user with a `split` target, or a seeded sample of `users`; each
    history cut to its newest `last` items (0: whole)."""
    ids = data.items["item_id"].astype(str).tolist()
    targets = data.targets(split)
    chosen = np.flatnonzero(targets >= 0)
    if users and users < len(chosen):
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, users, replace=False))
    histories = [[ids[i] for i in data.history(int(u), split)] for u in chosen]
    return [h[-last:] if last else h for h in histories], [ids[targets[u]] for u in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--workdir", required=True, help="a build's workdir: its data/ split is used")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--users", type=int, default=0, help="a seeded sample of this many users (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="llm,lightgcn")
    parser.add_argument("--recent", default="0,1,3,5,10", help="history items to be close to (0: the arm's order)")
    parser.add_argument("--weights", default="0,0.1,0.25,0.5", help="weights of the arm's own order")
    parser.add_argument("--intent-llm", default="0", help="weights of the history's genre and decade prior (LLM)")
    parser.add_argument("--intent-cf", default="0", help="weights of the history's genre and decade prior (LightGCN)")
    parser.add_argument("--boost", default="0",
                        help="how much more a dominated genre or decade weighs (with an intent weight above 0)")
    parser.add_argument("--guide", default="0",
                        help="weights of the SASRec prior inside the LLM's search (0: the LLM alone)")
    parser.add_argument("--last", type=int, default=0, help="only the newest N films of each history (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                        help="the LLM's matrix products (`ItemGenerator.use_precision`; auto: as the served app "
                             "chooses on this CPU)")
    parser.add_argument("--out", help="write the results here as JSON")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = SplitData.load(Path(args.workdir) / "data")
    histories, targets = sessions(data, args.split, args.users, args.seed, args.last)
    precision = hardware.choose_precision(args.precision)
    engine = Engine.from_bundle(Bundle.load(args.bundle), n=10, precision=precision)
    recents = [int(r) for r in args.recent.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    intents = {"llm": [float(w) for w in args.intent_llm.split(",")],
               "lightgcn": [float(w) for w in args.intent_cf.split(",")]}
    boosts = [float(b) for b in args.boost.split(",")]
    guides = [float(g) for g in args.guide.split(",")]
    rows: list[dict] = []
    result = {"command": " ".join(["python -m bench.ranking", *argv]), "commit": git_commit(),
              "precision": precision,
              "machine": {**hardware.machine(), "load_average": [round(x, 2) for x in os.getloadavg()]},
              "bundle": args.bundle, "split": args.split, "last": args.last, "users": len(targets),
              "seed": args.seed, "rows": rows}
    for arm in args.arms.split(","):
        if arm not in engine.recommenders:
            print(f"the bundle has no {arm!r} arm; skipped", file=sys.stderr)
            continue
        engine.recommenders[arm] = PoolCache(engine.recommenders[arm])
        generative = engine.recommenders[arm].generative
        for recent in recents[:1] if generative else recents:
            for weight in weights if recent and not generative else weights[:1]:
                grid = [(i, b, g) for i in intents.get(arm, [0.0]) for b in (boosts if i else [0.0])
                        for g in (guides if generative else [0.0])]
                for intent, boost, guide in grid:
                    engine.recent_items, engine.model_weight, engine.guide_llm = recent, weight, guide
                    engine.intent_llm, engine.intent_cf = (intent, 0.0) if generative else (0.0, intent)
                    engine.boost_llm = engine.boost_cf = boost
                    start = time.perf_counter()
                    row = {"arm": arm, "recent": None if generative else recent,
                           "weight": weight if recent and not generative else None, "intent": intent,
                           "boost": boost, "guide": guide if generative else None,
                           **score(engine, arm, histories, targets),
                           "seconds": round(time.perf_counter() - start, 1),
                           "load_average": [round(x, 2) for x in os.getloadavg()]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.out:
                        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
