"""What makes the LLM learn per CPU-hour: each lever tuned for the same minutes, judged by the valid curve.

    python -m bench.levers --base runs/ml-100k --minutes 10 [--lever NAME ...] [--out bench/levers.json]

`--base` is a workdir whose data and cf stages are done (at least SASRec seed 0:
`python -m training build --config configs/ml-100k.yaml --workdir runs/ml-100k --stages data,cf`).
Each lever is a set of `--set` overrides on configs/ml-100k.yaml (on top of `COMMON`), run as

    python -m training build --config configs/ml-100k.yaml --workdir runs/levers/<name> --stages index,tune \\
        --set <COMMON> --set <lever>

in its own workdir, whose data and cf stages are links to the base's. Training stops after `--minutes` of
training (the valid curve's time is not counted), so every row had the same CPU time. The curve is HR@10 /
NDCG@10 on the same 200 valid users for every lever (`training.tune.valid_users`); Pop and the base's SASRec
are scored on those users too, for scale. Results: `--out` (JSON, one row per lever, each with its command,
the machine and the load average at its start), and the table printed as markdown for docs/lcrec.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from face_app import hardware
from face_app.decoder import GeneratorSpec
from training.cf import Pop
from training.config import load_config
from training.data import SplitData
from training.metrics import evaluate
from training.tune import load_teacher, valid_users

CONFIG = "configs/ml-100k.yaml"
# Every lever starts from these settings, so that a row depends on nothing else in the config file: the first 8
# of SmolLM2's 30 layers, LoRA r=16 on attention, 10 history items, batches of 16 at lr 1e-3, no <taste> token and
# no distillation unless the lever says so, a curve every 100 steps on 200 valid users, a schedule long enough that
# no lever reaches its end in the time given, and a task mix led by next-item windows.
COMMON = [
    "tune.base_model=smollm2", "tune.keep_layers=8", "tune.taste=false", "tune.distill=0.0",
    "tune.max_history=10", "tune.titles_in_history=false", "tune.lora_r=16", "tune.lora_alpha=32",
    "tune.target_modules=[q_proj, k_proj, v_proj, o_proj]", "tune.layers=null", "tune.lr=0.001",
    "tune.batch_size=16", "tune.precision=auto", "tune.init_from=null", "tune.seed=0",
    "tune.eval_every=100", "tune.eval_users=200", "tune.max_steps=3000", "tune.checkpoint_every=100",
    "tune.warmup_steps=50",
    "tune.tasks={next: 1.0, followup: 0.05, index_to_title: 0.3, title_to_index: 0.3, intention: 0.3}",
]
# name -> (lever, setting, overrides)
LEVERS = {
    "text": ("item index", "text codes (MiniLM of title, year, genres)", ["index.embedding=text"]),
    "sasrec-codes": ("item index", "codes from SASRec's item embeddings", ["index.embedding=sasrec"]),
    "taste": ("CF soft token", "SASRec codes + <taste> token", ["index.embedding=sasrec", "tune.taste=true"]),
    "taste-distill": ("distillation", "SASRec codes + <taste> in the prompt + distillation (weight 1)",
                      ["index.embedding=sasrec", "tune.taste=true", "tune.distill=1.0"]),
    "answer-distill": ("CF soft token", "SASRec codes + <taste> at the answer + distillation (weight 1)",
                       ["index.embedding=sasrec", "tune.taste=answer", "tune.distill=1.0"]),
    "distill": ("distillation", "SASRec codes + distillation, no <taste>",
                ["index.embedding=sasrec", "tune.distill=1.0"]),
    "taste-distill-30": ("model size", "as taste-distill, all 30 layers",
                         ["index.embedding=sasrec", "tune.taste=true", "tune.distill=1.0", "tune.keep_layers=null"]),
    "taste-distill-4": ("model size", "as taste-distill, first 4 layers",
                        ["index.embedding=sasrec", "tune.taste=true", "tune.distill=1.0", "tune.keep_layers=4"]),
}


def command(name: str, minutes: float) -> list[str]:
    overrides = [*COMMON, f"tune.max_minutes={minutes}", *LEVERS[name][2]]
    sets = [part for value in overrides for part in ("--set", value)]
    return [sys.executable, "-m", "training", "build", "--config", CONFIG, "--workdir", f"runs/levers/{name}",
            "--stages", "index,tune", "--force", *sets]


def link_base(base: Path, workdir: Path) -> None:
    """The lever's workdir shares the base's data and cf stages."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stage in ("data", "cf"):
        link = workdir / stage
        if not link.exists():
            link.symlink_to((base / stage).resolve(), target_is_directory=True)


def references(base: Path, users: int) -> dict[str, dict[str, float]]:
    """Pop and the base's first SASRec on the curve's valid users."""
    config = load_config(CONFIG)
    data = SplitData.load(base / "data")
    sample = valid_users(data, users)
    return {"Pop": evaluate(Pop.from_data(data), data, "valid", users=sample),
            "SASRec": evaluate(load_teacher(base, config, data.n_items), data, "valid", users=sample)}


def row(name: str, minutes: float, load: float, seconds: float) -> dict:
    spec = GeneratorSpec.load(Path("runs/levers") / name / "tune" / "model")
    curve = spec.training["valid_curve"]
    lever, setting, _ = LEVERS[name]
    shown = " ".join(part if " " not in part and "{" not in part else f"'{part}'" for part in command(name, minutes))
    return {"name": name, "lever": lever, "setting": setting,
            "steps": curve[-1]["step"] if curve else None, "train_minutes": spec.training["train_seconds"] / 60,
            "wall_minutes": seconds / 60, "best": spec.training["best"], "last": curve[-1] if curve else None,
            "curve": [{k: v[k] for k in ("step", "seconds", "HR@10", "NDCG@10")} for v in curve],
            "precision": spec.training["precision"], "command": shown.replace(sys.executable, "python"),
            "load_at_start": load}


def markdown(rows: list[dict], refs: dict[str, dict[str, float]], users: int) -> str:
    """The lever table (a row per lever, then Pop and SASRec on the same users), then each row's command."""
    lines = ["| lever | setting | steps | train min | best valid HR@10 | best valid NDCG@10 (step) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        best = r["best"] or {}
        lines.append(f"| {r['lever']} | {LEVERS[r['name']][1]} (`{r['name']}`) | {r['steps']} | "
                     f"{r['train_minutes']:.1f} | "
                     f"{best.get('HR@10', float('nan')):.4f} | {best.get('NDCG@10', float('nan')):.4f} "
                     f"({best.get('step')}) |")
    for name, metrics in refs.items():
        lines.append(f"| reference | {name} on the same {users} valid users | | | {metrics['HR@10']:.4f} | "
                     f"{metrics['NDCG@10']:.4f} |")
    lines += ["", "Each row's command, and the load average at its start (the full `python -m training build` "
              "command it ran is in bench/levers.json):", ""]
    lines += [f"- `python -m bench.levers --base runs/ml-100k --minutes {r['train_minutes']:.0f} --lever {r['name']}` "
              f"({r['load_at_start']:.2f})" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--lever", action="append", choices=sorted(LEVERS), help="default: every lever")
    parser.add_argument("--out", type=Path, default=Path("bench/levers.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of what --out holds")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"rows": {}}
    for name in [] if args.table else args.lever or list(LEVERS):
        link_base(args.base, Path("runs/levers") / name)
        load = os.getloadavg()[0]
        print(f"[levers] {name}: load {load:.2f}; {' '.join(command(name, args.minutes))}", flush=True)
        began = time.perf_counter()
        subprocess.run(command(name, args.minutes), check=True)
        results["rows"][name] = row(name, args.minutes, load, time.perf_counter() - began)
        results["machine"] = hardware.machine()
        results["references"] = references(args.base, 200)
        args.out.write_text(json.dumps(results, indent=1))
    print(markdown([results["rows"][n] for n in LEVERS if n in results["rows"]], results["references"], 200))
    return 0


if __name__ == "__main__":
    sys.exit(main())
