"""Probe a tune run while it trains: the LLM from the latest checkpoint, scored under the evaluation
protocol on a seeded sample of test users (the full eval stage scores every user once tuning ends).

    python -m bench.llm_probe --config configs/ml-100k.yaml --workdir runs/ml-100k --users 100 --threads 1

Prints the checkpoint's step and HR/NDCG on the sample (with its size: a sample of 100 users has a
standard error of about 0.03 on HR@10 near 0.1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face_app.decoder import ItemGenerator
from face_app.index import ItemIndex
from training.config import load_config
from training.data import SplitData
from training.evaluate import evaluate
from training.tune import Catalog, LLMRecommender, load_checkpoint_weights, prepare_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config, workdir = load_config(args.config), Path(args.workdir)
    data = SplitData.load(workdir / "data")
    index = ItemIndex.load(workdir / "index" / "item_index.json")
    catalog = Catalog(data, index)
    model, tokenizer, _ = prepare_model(config.tune, index, catalog)
    checkpoint = workdir / "tune" / "checkpoint"
    step = load_checkpoint_weights(checkpoint, model)
    generator = ItemGenerator(model.merge_and_unload(), tokenizer, index, beams=config.tune.eval_beams)
    recommender = LLMRecommender(generator, data, config.tune.max_history, config.tune.titles_in_history,
                                 config.tune.eval_beams)
    users = np.flatnonzero(data.test >= 0)
    sample = np.random.default_rng(args.seed).choice(users, min(args.users, len(users)), replace=False)
    test = np.full_like(data.test, -1)
    test[sample] = data.test[sample]
    start = time.perf_counter()
    metrics = evaluate(recommender, dataclasses.replace(data, test=test), "test")
    seconds = time.perf_counter() - start
    print(json.dumps({"step": step, "users": len(sample), "seconds": round(seconds, 1), **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
