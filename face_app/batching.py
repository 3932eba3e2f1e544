"""Micro-batching: calls that arrive from several threads at about the same moment run as one batch.

`Batcher(run_many).submit(request)` blocks its caller until `run_many([...requests])` has answered it. One
worker thread takes whatever requests are waiting, lets `window_s` pass so that requests arriving together
join the same batch, and more windows while more keep arriving (up to `max_wait_s`, at most `max_batch`
requests), runs them, and hands each caller its own result (or the batch's exception). A lone caller waits
`window_s` more than it would alone; under load the requests that queue while a batch runs, and those still
trickling in, form the next one. The served app's LLM arm uses it (`ItemGenerator.batched`), so that
concurrent chat turns share one batched prefill and batched beam steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("face_app")
# A served generator collects the searches that arrive within this window into one batch (`ItemGenerator.batched`),
# at most MAX_BATCH of them: the gradio queue's concurrency (face_app.ui.CONCURRENCY).
BATCH_WINDOW_S = 0.005
# ...and keeps collecting while more keep arriving, one window after another, up to this long (`Batcher._gather`).
BATCH_MAX_WAIT_S = 0.05
# 32 rather than 16 (round 3, session 6): under 64 sessions the 95th percentile turn read 3.80, 3.58 and 4.17 s at
# 32, 4.53 and 4.16 s at 16, 4.09 s at 64 (`python -m bench`, with or without `--skip-train --sessions 64`, AMD EPYC
# AVX2, nothing else running): a run's noise is about 0.3 s, so this is a small gain, not a settled one.
MAX_BATCH = 32
SIZES_KEPT = 10_000


class Batcher:
    """Runs `run_many` on batches of submitted requests on one worker thread (started on first use)."""

    def __init__(self, run_many: Callable[[Sequence[Any]], Sequence[Any]], window_s: float = BATCH_WINDOW_S,
                 max_batch: int = MAX_BATCH, max_wait_s: float = BATCH_MAX_WAIT_S) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.run_many, self.window_s, self.max_batch = run_many, window_s, max_batch
        self.max_wait_s = max_wait_s
        self._waiting: list[tuple[Any, Future]] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        # The sizes of the newest batches, in order (what the tests read); bounded, as a server runs for weeks.
        self.sizes: deque[int] = deque(maxlen=SIZES_KEPT)

    def submit(self, request: Any) -> Any:
        """`run_many([..., request, ...])`'s answer for `request`; raises what the batch raised."""
        future: Future = Future()
        with self._ready:
            self._waiting.append((request, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return future.result()

    def _gather(self) -> None:
        """Let `window_s` pass, and again while more requests keep arriving, up to `max_wait_s` in all or until a
        whole batch waits: under load the turns reach their searches a few milliseconds apart, and a batch closed
        after one window would run many of them alone."""
        if self.window_s <= 0:
            return
        start = time.perf_counter()
        with self._ready:
            count = len(self._waiting)
        while True:
            time.sleep(self.window_s)
            with self._ready:
                now = len(self._waiting)
            if now == count or now >= self.max_batch or time.perf_counter() - start + self.window_s > self.max_wait_s:
                return
            count = now

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
            self._gather()
            with self._ready:
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
            self.sizes.append(len(batch))
            try:
                results = self.run_many([request for request, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests gave {len(results)} results")
            except Exception as error:  # every caller of the batch gets it; the worker goes on
                log.error(f"a batch of {len(batch)} failed: {error}")
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
