"""App serving: start-up time, per-turn latency of each arm, and resident memory, on a bundle.

    python -m bench.app --bundle assets/ml-100k --personas 8 --threads 2

Start-up is `face_app.ui.load_app` (verify the bundle, read the dataset, load the read-out, the LLM and
the title index) in this process; a scripted conversation (persona, then the follow-ups below) runs for
each persona on each arm. Prints each number beside its DESIGN.md target and their ratio
(measured / target: at most 1 meets it).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from face_app.dialogue import ConversationState
from face_app.ui import load_app

TURNS = ("recommend", "something darker", "from the 90s", "more like the second one", "not that", "seen it")
TARGETS = {"start-up s": 20.0, "turn s (median)": 0.3, "resident MB": 2048.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--personas", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    app = load_app(args.bundle)
    startup = time.perf_counter() - start
    engine = app.engine
    rows = [("start-up s", "", startup)]
    for arm in engine.recommenders:
        times = []
        for user in list(engine.personas)[: args.personas]:
            state = ConversationState()
            engine.use_persona(state, user)
            for text in TURNS:
                times.append(engine.respond(state, text, arm).seconds)
        rows.append(("turn s (median)", arm, statistics.median(times)))
        rows.append(("turn s (max)", arm, max(times)))
    rows.append(("resident MB", "", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))

    print(f"bundle {args.bundle} ({engine.catalog.__len__()} items), {args.threads} threads, "
          f"{min(args.personas, len(engine.personas))} personas x {len(TURNS)} turns")
    print("| measure | arm | value | target | ratio |\n|---|---|---|---|---|")
    for name, arm, value in rows:
        target = TARGETS.get(name)
        ratio = f"{value / target:.2f}" if target else ""
        print(f"| {name} | {arm} | {value:.3f} | {target if target else ''} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
