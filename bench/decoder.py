"""Decoder latency: the trie beam search (`ItemGenerator.recommend`) against `transformers.generate` with
`prefix_allowed_tokens_fn`, on the same model, prompts and beams.

Prompts are real users' recommendation prompts (their last `--history` items as index tokens) from a
built workdir. The model is a tuned generator (`--model <workdir>/tune/model`) or, before tuning, a
base model with the workdir's index tokens added (`--base smollm2`, the default).

    python -m bench.decoder --workdir runs/ml-100k --users 30 --k 10 --beams 10 --threads 2

Prints the median latency of each, their ratio, and whether both returned the same top-k.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from face_app import llm
from face_app.decoder import ItemGenerator
from face_app.index import ItemIndex
from training.data import SplitData
from training.tune import Catalog


def load_generator(args: argparse.Namespace, data: SplitData) -> ItemGenerator:
    if args.model:
        return ItemGenerator.load(Path(args.model))
    index = ItemIndex.load(Path(args.workdir) / "index" / "item_index.json")
    model, tokenizer = llm.load_base(args.base)
    llm.add_index_tokens(model, tokenizer, index.vocabulary(), Catalog(data, index).token_descriptions(index))
    return ItemGenerator(model, tokenizer, index, beams=args.beams)


def median_seconds(call, prompts: list[tuple[str, list[str]]]) -> tuple[float, list]:
    times, results = [], []
    for prompt, seen in prompts:
        start = time.perf_counter()
        results.append(call(prompt, seen))
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a built workdir (data/ and index/)")
    parser.add_argument("--model", help="a tuned generator directory (default: the base with index tokens)")
    parser.add_argument("--base", default=llm.SMOLLM2, help="base model when --model is not given")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = SplitData.load(Path(args.workdir) / "data")
    generator = load_generator(args, data)
    catalog = Catalog(data, generator.index)
    prompts = []
    for user in range(min(args.users, data.n_users)):
        history = data.history(user, "test")
        seen = [catalog.ids[i] for i in history]
        prompts.append((catalog.history_prompt(history[-args.history :], False), seen))
    generator.recommend(*prompts[0][:1])  # warm-up
    fast, fast_out = median_seconds(lambda p, s: generator.recommend(p, args.k, s, args.beams), prompts)
    slow, slow_out = median_seconds(lambda p, s: generator.recommend_with_generate(p, args.k, s, args.beams), prompts)
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(fast_out, slow_out, strict=True))
    # The prompt's own forward pass, alone: the part of a request that the search cannot shorten.
    with torch.no_grad():
        prefill, _ = median_seconds(lambda p, s: generator.prefill(generator.prompt_ids(p)), prompts)
    lengths = sorted(generator.prompt_ids(p).shape[-1] for p, _ in prompts)
    print(f"model: {args.model or args.base}; {len(prompts)} prompts, k={args.k}, beams={args.beams}, "
          f"threads={args.threads}, history={args.history} items")
    print(f"trie beam search (fast): median {fast:.3f} s, of which the prompt's prefill {prefill:.3f} s "
          f"(median prompt {lengths[len(lengths) // 2]} tokens, chat header included; its keys/values are cached)")
    print(f"generate + prefix_allowed_tokens_fn: median {slow:.3f} s")
    print(f"speed-up: {slow / fast:.2f}x; same top-{args.k} on {same}/{len(prompts)} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
