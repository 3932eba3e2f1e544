"""Concurrent LLM turns one after another against one batch: the work the served app's batcher saves.

    python -m bench.batching --bundle assets/ml-100k --mode batch --sessions 16 --repeat 5
    farm-bench --vs 'python -m bench.batching --mode alone' -- python -m bench.batching --mode batch

The first `--sessions` personas of the bundle each open a session and ask for the chat's five picks: the
LLM arm's own search as a turn asks it (its prompt, the history excluded, the intent prior), built once.
`--mode alone` runs the searches one after another (`ItemGenerator.search_many` of one: the unbatched path
with the cached chat header), `--mode batch` as one batch (left-padded prefill, every request's beams
stepped together); either `--repeat` times. Prints the seconds per round, the machine and the load average,
and checks that both modes give every session the same items (exit 1 if not). Whole-process timings through
`farm-bench` include loading the bundle (about 3 s), the same for both modes.

`--follow-up` times each persona's follow-up instead ("something darker": the same history, so the same prompt
stem), its stems remembered from the opening or forgotten before each round (`--stems`):

    python -m bench.batching --follow-up --stems remembered --sessions 24 --repeat 5

`--head` chooses how the beams are scored (`face_app.decoder.HEADS`); `--compare-heads` runs every session under
each head instead and says whether their picks agree:

    python -m bench.batching --compare-heads --sessions 64
    farm-bench --vs 'python -m bench.batching --head vocabulary' -- python -m bench.batching --head codes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from face_app import hardware
from face_app.bundle import Bundle
from face_app.decoder import HEAD, HEADS
from face_app.dialogue import ConversationState
from face_app.engine import Engine

# The follow-up `--follow-up` times: a turn that keeps the history and adds a request to the prompt.
FOLLOW_UP = "something darker"


def searches(engine: Engine, sessions: int, request: str | None = None) -> list:
    """The LLM arm's search for each of the first `sessions` personas, as a chat turn asks it (request: the
    follow-up's text the prompt carries, None for the opening)."""
    arm = engine.recommenders["llm"]
    out = []
    for persona in list(engine.personas)[:sessions]:
        state = ConversationState()
        engine.use_persona(state, persona)
        bonus = engine.intent.bonus(engine.intent.mixes(state.history), engine.intent_llm)
        prompt = arm.prompt(state.history, engine.user_descriptors(state), request)
        out.append(arm.generator.search(prompt, k=engine.n, exclude=engine.excluded(state), beams=arm.beams,
                                        history=state.history, bonus=bonus))
    return out


def compare_heads(generator, asked: list) -> int:
    """Each session's picks under every head (`face_app.decoder.HEADS`), batched as the app runs them: how many
    sessions get the same items in the same order, and the largest difference of a pick's score."""
    found = {}
    for head in HEADS:
        generator.head = head
        found[head] = generator.search_many(asked)
    codes, vocabulary = found["codes"], found["vocabulary"]
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(codes, vocabulary, strict=True))
    gaps = [abs(sa - sb) for a, b in zip(codes, vocabulary, strict=True)
            for (ia, sa), (ib, sb) in zip(a, b, strict=False) if ia == ib]
    print(json.dumps({"sessions": len(asked), "same_items_in_order": same, "largest_score_gap": max(gaps, default=0.0),
                      "machine": {**hardware.machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}}))
    return 0 if same == len(asked) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--mode", choices=("alone", "batch"), default="batch")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                        help="the LLM's precision (auto: as the served app picks it on this CPU, face_app.hardware)")
    parser.add_argument("--head", choices=HEADS, default=HEAD, help="how beams are scored (face_app.decoder.HEADS)")
    parser.add_argument("--follow-up", action="store_true", help="time each persona's follow-up (\"something "
                        "darker\": the same history, the request in the prompt) instead of its opening")
    parser.add_argument("--stems", choices=("remembered", "forgotten"), default="remembered",
                        help="with --follow-up: the openings' prompt stems remembered (as after the opening turn) "
                        "or forgotten before each round (ItemGenerator._prefix)")
    parser.add_argument("--compare-heads", action="store_true",
                        help="instead of timing: every session's picks under each head, and how they differ")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine.from_bundle(Bundle.load(args.bundle))
    if "llm" not in engine.recommenders:
        print("error: the bundle has no LLM arm", file=sys.stderr)
        return 2
    generator = engine.recommenders["llm"].generator
    generator.use_precision(hardware.choose_precision(args.precision))
    asked = searches(engine, args.sessions, FOLLOW_UP if args.follow_up else None)
    if args.compare_heads:
        return compare_heads(generator, asked)
    generator.head = args.head
    alone = [generator.search_many([s])[0] for s in asked]
    together = generator.search_many(asked)
    same = [[i for i, _ in a] == [i for i, _ in b] for a, b in zip(alone, together, strict=True)]
    openings = searches(engine, args.sessions) if args.follow_up else []
    rounds = []
    for _ in range(args.repeat):
        if args.follow_up:  # the opening turn remembered its stem; a follow-up continues it, or starts cold
            generator.forget_prefixes()
            if args.stems == "remembered":
                generator.search_many(openings)
        start = time.perf_counter()
        if args.mode == "batch":
            generator.search_many(asked)
        else:
            for search in asked:
                generator.search_many([search])
        rounds.append(time.perf_counter() - start)
    print(json.dumps({"mode": args.mode, "head": args.head, "precision": generator.precision, "sessions": len(asked),
                      "follow_up": args.follow_up, "stems": args.stems if args.follow_up else None, "round_s": rounds,
                      "median_s": statistics.median(rounds), "same_items": sum(same),
                      "machine": {**hardware.machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}}))
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
