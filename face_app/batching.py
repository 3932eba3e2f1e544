"""Micro-batching: calls that arrive from several threads at about the same moment run as one batch.

`Batcher(run_many).submit(request)` blocks its caller until `run_many([...requests])` has answered it. One
worker thread takes whatever requests are waiting, lets `window_s` pass so that requests arriving together
join the same batch, and more windows while more keep arriving or while callers that announced themselves
(`coming`: a chat turn that has started and may search) have not yet submitted (up to `max_wait_s`, at most
`max_batch` requests; after a recent batch of n, until at least half as many wait: `RECENT_S`), runs them, and
hands each caller its own result (or the batch's exception). A lone caller waits `window_s` more than it would
alone; under load the requests that queue while a batch runs, and those still on their way, form the next one.
The served app's LLM arm uses it (`ItemGenerator.batched`), so that
concurrent chat turns share one batched prefill and batched beam steps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("face_app")
# A served generator collects the searches that arrive within this window into one batch (`ItemGenerator.batched`),
# at most MAX_BATCH of them (the gradio queue runs twice as many turns at once: face_app.ui.CONCURRENCY).
BATCH_WINDOW_S = 0.005
# ...and keeps collecting while more keep arriving or announced callers are still on their way, one window after
# another, up to this long (`Batcher._gather`). Before the announcement (round 3, session 7) a batch closed one
# window after its first request: in a run of 64 sessions with the batches logged, every round ran one search alone
# while the others queued behind it, then the rest together. A bound for a turn that announced itself and stalls, not
# a tuned value: a batch closes as soon as every announced turn has searched, and at 1.5 s as at 0.25 s that log
# showed batches of 32.
BATCH_MAX_WAIT_S = 0.5
# 32 rather than 16 (round 3, session 6): under 64 sessions the 95th percentile turn read 3.80, 3.58 and 4.17 s at
# 32, 4.53 and 4.16 s at 16, 4.09 s at 64 (`python -m bench`, with or without `--skip-train --sessions 64`, AMD EPYC
# AVX2, nothing else running): a run's noise is about 0.3 s, so this is a small gain, not a settled one.
MAX_BATCH = 32
SIZES_KEPT = 10_000
# A batch that follows a recent one of n requests (ended at most this long before) waits, up to BATCH_MAX_WAIT_S,
# for at least half as many: under load the sessions a batch answered come back within a few hundred ms, and the
# first of them to return would otherwise run alone while the rest queue behind it. A batch of 24 searches takes about
# 0.54 s alone (`python -m bench.batching --sessions 24`), longer under load, so a batch that ended within the last
# second is the load now.
RECENT_S = 1.0


class Batcher:
    """Runs `run_many` on batches of submitted requests on one worker thread (started on first use)."""

    def __init__(self, run_many: Callable[[Sequence[Any]], Sequence[Any]], window_s: float = BATCH_WINDOW_S,
                 max_batch: int = MAX_BATCH, max_wait_s: float = BATCH_MAX_WAIT_S) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.run_many, self.window_s, self.max_batch = run_many, window_s, max_batch
        self.max_wait_s = max_wait_s
        self._waiting: list[tuple[Any, Future]] = []
        self._coming = 0  # callers inside `coming` that have not submitted yet
        self._announced = threading.local()  # whether this thread's caller is counted in `_coming`
        self._last = (0, -float("inf"))  # the size of the last batch, and when it ended (perf_counter)
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        # The sizes of the newest batches, in order (what the tests read); bounded, as a server runs for weeks.
        self.sizes: deque[int] = deque(maxlen=SIZES_KEPT)

    def submit(self, request: Any) -> Any:
        """`run_many([..., request, ...])`'s answer for `request`; raises what the batch raised."""
        future: Future = Future()
        with self._ready:
            self._arrived()
            self._waiting.append((request, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return future.result()

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce a caller that may `submit` soon (a chat turn that has begun): until it submits or leaves the
        block, a gathering batch waits for it (up to `max_wait_s`). Not nested: an inner block announces nothing."""
        if getattr(self._announced, "on", False):
            yield
            return
        with self._ready:
            self._coming += 1
            self._announced.on = True
        try:
            yield
        finally:
            with self._ready:
                self._arrived()

    def _arrived(self) -> None:
        """This thread's announced caller has submitted or left (called with `_ready` held)."""
        if getattr(self._announced, "on", False):
            self._announced.on = False
            self._coming -= 1

    def _gather(self) -> None:
        """Let `window_s` pass, and again while more requests keep arriving or announced callers have yet to
        submit, up to `max_wait_s` in all or until a whole batch waits: under load the turns reach their searches
        a few milliseconds apart, and a batch closed after one window would run many of them alone."""
        if self.window_s <= 0:
            return
        start = time.perf_counter()
        size, ended = self._last
        least = (size + 1) // 2 if start - ended <= RECENT_S else 1
        with self._ready:
            count = len(self._waiting)
        while True:
            time.sleep(self.window_s)
            with self._ready:
                now, coming = len(self._waiting), self._coming
            if (now == count and not coming and now >= least) or now >= self.max_batch \
                    or time.perf_counter() - start + self.window_s > self.max_wait_s:
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
            self._last = (len(batch), time.perf_counter())
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
