"""The LLM's teacher, SASRec, scored on valid and test: every finished SASRec run of the given workdirs.

    python -m bench.teacher --config configs/ml-100k.yaml --workdir runs/ml-100k [--workdir DIR --set KEY=VALUE ...]

Each `--workdir` may carry its own `--set` overrides (the settings its runs were trained with; they must give the
runs' own keys, or the run is refused). Writes one row per run (seed, best epoch, seconds, valid and test metrics)
and per workdir, and over all the runs given, the mean and standard deviation over seeds, to `--out`
(bench/teacher.json). The protocol is the project's (training/metrics.py `evaluate`: full ranking, earlier items
excluded, the never-flattering tie rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from face_app.hardware import machine
from training.cf import load_model, run_key
from training.config import load_config
from training.data import SplitData
from training.metrics import evaluate
from training.workdir import RUN_FILE, Workdir

KEYS = ("HR@10", "NDCG@10", "HR@5", "NDCG@5", "Recall@20", "NDCG@20")


def score_workdir(config_path: Path, workdir: Path, overrides: list[str]) -> dict:
    config = load_config(config_path, overrides)
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    rows = []
    for seed, run_dir in paths.cf_runs("SASRec"):
        meta = json.loads((run_dir / RUN_FILE).read_text())
        if meta.get("key") != run_key("SASRec", config):
            raise SystemExit(f"{run_dir} was trained with other settings than {config_path} {overrides}")
        model = load_model("SASRec", run_dir, data, config)
        rows.append({"seed": seed, "best_epoch": meta.get("best_epoch"), "epochs_run": len(meta.get("history", [])),
                     "seconds": meta.get("seconds"),
                     "valid": {k: v for k, v in evaluate(model, data, "valid").items() if k in KEYS},
                     "test": {k: v for k, v in evaluate(model, data, "test").items() if k in KEYS}})
        print(f"{workdir} seed {seed}: test HR@10 {rows[-1]['test']['HR@10']:.4f} NDCG@10 "
              f"{rows[-1]['test']['NDCG@10']:.4f} (best epoch {rows[-1]['best_epoch']})")
    return {"workdir": str(workdir), "overrides": overrides, "settings": dataclasses.asdict(config.cf.sasrec),
            "runs": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """Per split and measure, the mean and population standard deviation over the runs ({} for none)."""
    return {split: {k: {"mean": float(np.mean([r[split][k] for r in rows])),
                        "std": float(np.std([r[split][k] for r in rows]))} for k in KEYS}
            for split in ("valid", "test")} if rows else {}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/ml-100k.yaml"))
    parser.add_argument("--out", type=Path, default=Path("bench/teacher.json"))
    # --workdir starts a group; the --set options after it are that workdir's
    groups: list[tuple[Path, list[str]]] = []
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--workdir":
            groups.append((Path(next(it)), []))
        elif arg == "--set" and groups:
            groups[-1][1].append(next(it))
        else:
            rest.append(arg)
    options = parser.parse_args(rest)
    if not groups:
        parser.error("give at least one --workdir")
    result = {"command": "python -m bench.teacher " + " ".join(args), "machine": machine(),
              "workdirs": [score_workdir(options.config, w, s) for w, s in groups]}
    # Over every run given (a candidate's seeds may each have a workdir of their own).
    runs = [run for group in result["workdirs"] for run in group["runs"]]
    result["all_runs"] = {"runs": len(runs), "summary": summarise(runs)}
    if len(runs) > 1:
        test = result["all_runs"]["summary"]["test"]
        print(f"all {len(runs)} runs: test HR@10 {test['HR@10']['mean']:.4f} ± {test['HR@10']['std']:.4f} "
              f"NDCG@10 {test['NDCG@10']['mean']:.4f} ± {test['NDCG@10']['std']:.4f} (mean ± population std)")
    options.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {options.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
