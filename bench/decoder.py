"""Decoder latency: the trie beam search (`ItemGenerator.recommend`) against `transformers.generate` with
`prefix_allowed_tokens_fn`, on the same model, prompts and beams.

Prompts are real users' recommendation prompts (their last `--history` items as index tokens) from a
built workdir. The model is a tuned generator (`--model <workdir>/tune/model`) or, before tuning, a
base model with the workdir's index tokens added (`--base smollm2`, the default).

    python -m bench.decoder --workdir runs/ml-100k --users 30 --k 10 --beams 10 --threads 2

Prints the median latency of each, their ratio, and whether both returned the same top-k. `compare_search`
is the measurement; `python -m bench` runs it on the prompts of the app's own chat turns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from face_app import llm
from face_app.decoder import ItemGenerator
from face_app.index import ItemIndex


def load_generator(args: argparse.Namespace, data: Any) -> ItemGenerator:
    from training.tasks import Catalog

    if args.model:
        return ItemGenerator.load(Path(args.model))
    index = ItemIndex.load(Path(args.workdir) / "index" / "item_index.json")
    model, tokenizer = llm.load_base(args.base)
    llm.add_index_tokens(model, tokenizer, index.vocabulary(), Catalog(data, index).token_descriptions(index))
    return ItemGenerator(model, tokenizer, index, beams=args.beams)


# One search as the app asks for it: (prompt, k, excluded item ids, beams, history item ids for <taste>).
Call = tuple[str, int, Collection[str], int | None, Sequence[str]]


def median_seconds(call: Callable[..., Any], calls: Sequence[tuple]) -> tuple[float, list]:
    """Median wall seconds of `call(*args)` over `calls`, and the results in order."""
    times, results = [], []
    for args in calls:
        start = time.perf_counter()
        results.append(call(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def compare_search(generator: ItemGenerator, calls: Sequence[Call]) -> dict[str, float]:
    """The trie beam search (`recommend`) against `transformers.generate` with `prefix_allowed_tokens_fn`
    (`recommend_with_generate`) on the same calls, after one warm-up of each.

    Returns decoder_p50_s, hf_generate_p50_s, speedup (their ratio) and same_topk (the share of calls on
    which both return the same top-k, in order).
    """
    generator.recommend(*calls[0])
    generator.recommend_with_generate(*calls[0])
    fast, fast_out = median_seconds(generator.recommend, calls)
    slow, slow_out = median_seconds(generator.recommend_with_generate, calls)
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(fast_out, slow_out, strict=True))
    return {"decoder_p50_s": fast, "hf_generate_p50_s": slow, "speedup": slow / fast, "same_topk": same / len(calls)}


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

    from training.data import SplitData
    from training.tasks import Catalog

    data = SplitData.load(Path(args.workdir) / "data")
    generator = load_generator(args, data)
    catalog = Catalog(data, generator.index)
    calls: list[Call] = []
    for user in range(min(args.users, data.n_users)):
        history = data.history(user, "test")
        seen = [catalog.ids[i] for i in history]
        prompt = catalog.history_prompt(history[-args.history :], False, taste=generator.taste_in_prompt)
        calls.append((prompt, args.k, seen, args.beams, seen))
    result = compare_search(generator, calls)
    # The prompt's own forward pass, alone: the part of a request that the search cannot shorten.
    with torch.no_grad():
        def prefill_only(prompt: str, k: int, exclude: Collection[str], beams: int | None, seen: Sequence[str]):
            vector = generator.taste_vector(seen)
            return generator.prefill(generator.input_ids(prompt, vector), vector)

        prefill, _ = median_seconds(prefill_only, calls)
    lengths = sorted(generator.input_ids(p, generator.taste_vector(h)).shape[-1] for p, _, _, _, h in calls)
    print(f"model: {args.model or args.base}; {len(calls)} prompts, k={args.k}, beams={args.beams}, "
          f"threads={args.threads}, history={args.history} items")
    print(f"trie beam search (fast): median {result['decoder_p50_s']:.3f} s, of which the prompt's prefill "
          f"{prefill:.3f} s (median prompt {lengths[len(lengths) // 2]} tokens, chat header included; its "
          "keys/values are cached)")
    print(f"generate + prefix_allowed_tokens_fn: median {result['hf_generate_p50_s']:.3f} s")
    print(f"speed-up: {result['speedup']:.2f}x; same top-{args.k} on {result['same_topk']:.0%} of prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
