"""`python -m training` in which process 1 dies hard (`os._exit`: no cleanup, no exception) as its step STEP
begins, i.e. after STEP steps: one process of a data-parallel tune killed mid-run (tests/test_distributed.py).

    torchrun --standalone --nproc_per_node 2 tests/killed_rank.py STEP build --config ... --stages tune
"""

from __future__ import annotations

import os
import sys

from training import tune
from training.__main__ import main

KILL_AT = int(sys.argv[1])
schedule = tune.learning_rate  # asked once at the start of every step


def learning_rate_or_exit(step: int, total: int, config: tune.TuneConfig) -> float:
    if step == KILL_AT and os.environ["RANK"] == "1":
        os._exit(9)
    return schedule(step, total, config)


tune.learning_rate = learning_rate_or_exit
sys.exit(main(sys.argv[2:]))
