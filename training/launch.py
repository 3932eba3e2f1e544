"""The processes of one launch of `python -m training`: one for a plain run, several under `torchrun` or
`accelerate launch` (docs/lcrec.md, "Several processes"), each running the same command.

The pipeline runs the stages that share out their own work (`tune`: one batch per process per step, DDP;
`eval`: a share of the users per process) on every process, and the others on process 0 while the rest
wait. Every file is written by process 0. The workdir must be one that every process reads (a shared
filesystem across machines): each process loads the data, the index and the tune checkpoint from it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from accelerate import PartialState

# How long a process waits for the others at a barrier: processes 1.. wait there for as long as process 0 runs a
# single-process stage (cf, face), which on a large dataset may be hours: a day is a bound, not a measurement. A
# failed process does not leave the others waiting that long: torchrun (and accelerate launch, which runs it)
# stops every worker when one fails.
BARRIER_TIMEOUT = timedelta(hours=24)


def processes() -> PartialState:
    """This launch's processes (`accelerate.PartialState`, shared by every caller; set up on the first call).

    A torchrun environment (`WORLD_SIZE` > 1) joins them in a process group: nccl with one GPU a process where
    GPUs are, gloo on CPU. Without one it is a single process, on the GPU if there is one."""
    from accelerate import PartialState  # heavy, and needed only by the stages that run

    return PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
