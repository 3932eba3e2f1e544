"""Does FACE improve the LightGCN it regularises? The ablation, seed by seed, on the same joint schedule.

    python -m bench.face_ablation --base runs/ml-100k [--row NAME ...] [--seeds 0 1 2] [--out bench/face-ablation.json]
    python -m bench.face_ablation --table

`--base` is a workdir whose data and cf stages are done (`python -m training build --config
configs/ml-100k.yaml --workdir runs/ml-100k --stages data,cf`). Every row starts from the cf stage's
LightGCN of the same seed and runs `training.face.train_face` with the shipped config's FACE settings,
the joint schedule `SCHEDULE` and the row's loss weights:

- `lightgcn`: the cf stage's LightGCN as it is (no further training);
- `continued`: the joint schedule with every FACE weight at 0 (BPR alone at the joint learning rate:
  what the extra epochs do without FACE);
- `recons`: + the commitment and reconstruction losses (no alignment);
- `align`: + the commitment and alignment losses (no reconstruction);
- `both`: FACE's full loss;
- `scratch`: FACE's full loss from LightGCN's initialisation, on LightGCN's own schedule and learning rate
  (`SCRATCH`): FACE as a regulariser of the whole training rather than of a converged model, against the
  `lightgcn` row trained on that schedule without it;
- `scratch-light`: the same with every FACE loss weight at a tenth (a lighter regulariser).

Each row is scored on every test and valid user (`training.metrics.evaluate`) at the best valid epoch,
and its descriptors (read-out of the trained model) are scored for faithfulness as the face stage does.
Results go to `--out` as each run finishes (a run already there is not repeated), with the machine,
the load average at its start and the command; the table is printed as markdown for docs/descriptors.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from face_app import hardware
from face_app.descriptors import load_codebook
from training import face
from training.cf import LightGCN
from training.config import load_config, torch_threads
from training.data import SplitData
from training.metrics import evaluate
from training.profiles import TextEncoder, item_profiles, user_profiles
from training.vocabulary import faithfulness
from training.workdir import MODEL_FILE, Workdir

CONFIG = "configs/ml-100k.yaml"
# The joint phase long enough to converge: up to 40 LightGCN epochs, validated every 2, stopped after 5
# evaluations without a better valid NDCG@10; the CF tables at a fifth of LightGCN's own learning rate.
SCHEDULE = ["face.epochs=40", "face.eval_every=2", "face.patience=5", "face.cf_lr=0.001"]
# From scratch: LightGCN's schedule (configs/ml-100k.yaml cf.lightgcn: 400 epochs, every 5, patience 10, lr 0.005)
# and the FACE module at FACE's own learning rate (no warm start to protect).
SCRATCH = ["face.epochs=400", "face.eval_every=5", "face.patience=10", "face.cf_lr=0.005", "face.lr=0.001"]
ROWS = {
    "lightgcn": ("LightGCN (the cf stage's run)", None),
    "continued": ("LightGCN, joint schedule, no FACE loss", ["face.vq_weight=0", "face.recons_weight=0",
                                                             "face.align_weight=0"]),
    "recons": ("+ reconstruction (commitment, reconstruction)", ["face.align_weight=0"]),
    "align": ("+ alignment (commitment, InfoNCE)", ["face.recons_weight=0"]),
    "both": ("+ both (FACE's full loss)", []),
    "scratch": ("LightGCN+FACE trained from scratch (full loss)", []),
    "scratch-light": ("LightGCN+FACE from scratch, FACE losses at a tenth",
                      ["face.vq_weight=0.1", "face.recons_weight=0.1", "face.align_weight=0.01"]),
}


def overrides(name: str) -> list[str]:
    extra = ROWS[name][1]
    if extra is None:
        return []
    return [*SCRATCH, *extra] if name.startswith("scratch") else [*SCHEDULE, *extra]


def run_one(name: str, seed: int, base: Path, text: TextEncoder, cache: dict) -> dict:
    """Train (or load) one row's model for one seed and score it: valid/test metrics, faithfulness."""
    config = load_config(CONFIG, overrides(name))
    paths = Workdir(base)
    data = cache.setdefault("data", SplitData.load(paths.data))
    words = cache.setdefault("words", load_codebook())
    codebook = cache.setdefault("codebook", text.word_vectors(words))
    groups = face.word_groups(words, config)
    if "profiles" not in cache:
        texts = {"users": user_profiles(data), "items": item_profiles(data.items)}
        cache["profiles"] = {kind: text.cached_encode(t) for kind, t in texts.items()}
        cache["word_embeddings"] = text.cached_encode(words)
    profiles = cache["profiles"]
    pretrained = None if name.startswith("scratch") else load_file(paths.cf_run("LightGCN", seed) / MODEL_FILE)
    start = time.perf_counter()
    if ROWS[name][1] is None:
        lightgcn = LightGCN(data.n_users, data.n_items, config.cf.lightgcn, data.train_pairs())
        lightgcn.load_state_dict(pretrained)
        lightgcn.eval()
        model, history, readout_model = lightgcn, [], None
    else:
        model = face.train_face(data, config, seed, pretrained, text, codebook,
                                (profiles["users"], profiles["items"]), cache["word_embeddings"], groups)
        history, readout_model = model.history, model
    seconds = time.perf_counter() - start
    out = {"row": name, "seed": seed, "seconds": seconds, "history": history,
           "valid": evaluate(model, data, "valid"), "test": evaluate(model, data, "test")}
    scored = [h for h in history if h.get("valid_NDCG@10") is not None]
    out["best_epoch"] = max(scored, key=lambda h: h["valid_NDCG@10"])["epoch"] if scored else 0
    if readout_model is not None:
        readout = face.build_readout(readout_model, data, words, config.face.k)
        described = {"items": [[words[i] for i in row] for row in readout.item_words.tolist()],
                     "users": [[words[i] for i in row] for row in readout.user_words.tolist()]}
        out["faithfulness"] = faithfulness(text, described, profiles, words, config.face.k)
    return out


def markdown(results: dict) -> str:
    """Mean ± std over seeds per row, then each row's command."""
    lines = ["| row | seeds | test HR@10 | test NDCG@10 | valid NDCG@10 | best epoch | "
             "descriptor hit@10 (random) | minutes per run |", "|---|---|---|---|---|---|---|---|"]
    for name, (label, _) in ROWS.items():
        runs = [r for r in results["runs"].values() if r["row"] == name]
        if not runs:
            continue

        def stat(values: list[float]) -> str:
            return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"

        faith = [r["faithfulness"] for r in runs if "faithfulness" in r]
        words = (f"{np.mean([f['hit@10'] for f in faith]):.4f} ({np.mean([f['random_hit@10'] for f in faith]):.4f})"
                 if faith else "")
        lines.append(
            f"| {label} (`{name}`) | {len(runs)} | {stat([r['test']['HR@10'] for r in runs])} | "
            f"{stat([r['test']['NDCG@10'] for r in runs])} | {stat([r['valid']['NDCG@10'] for r in runs])} | "
            f"{', '.join(str(r['best_epoch']) for r in runs)} | {words} | "
            f"{np.mean([r['seconds'] for r in runs]) / 60:.1f} |")
    lines += ["", "Each row: `python -m bench.face_ablation --base runs/ml-100k --row NAME --seeds 0 1 2`; the "
              "settings it adds to configs/ml-100k.yaml:", ""]
    lines += [f"- `{name}`: {' '.join(overrides(name)) or '(none: the cf stage run)'}" for name in ROWS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.face_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--row", action="append", choices=list(ROWS), help="default: every row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/face-ablation.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of what --out holds")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    todo = [] if args.table else [(n, s) for s in args.seeds for n in (args.row or list(ROWS))]
    todo = [(n, s) for n, s in todo if f"{n}/{s}" not in results["runs"]]
    if todo:
        text, cache = TextEncoder(), {}
        with torch_threads(args.threads):
            for name, seed in todo:
                load = os.getloadavg()[0]
                print(f"[face-ablation] {name} seed {seed}: load {load:.2f}", flush=True)
                result = run_one(name, seed, args.base, text, cache)
                result["load_at_start"] = load
                result["command"] = f"python -m bench.face_ablation --base {args.base} --row {name} --seeds {seed}"
                results["runs"][f"{name}/{seed}"] = result
                results["machine"] = hardware.machine()
                args.out.write_text(json.dumps(results, indent=1))
                print(f"[face-ablation] {name} seed {seed}: test NDCG@10 {result['test']['NDCG@10']:.4f}, "
                      f"{result['seconds']:.0f} s", flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
