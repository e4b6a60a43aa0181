"""The batching buffer: rows from concurrent callers share one provider call.

A batch runs when the buffer holds ``max_items`` rows or when its oldest row has waited
``flush_us`` microseconds, whichever comes first, and never holds more than the provider's
``max_batch`` rows. One batch is in the provider at a time: rows that arrive meanwhile wait
for the next one, which is what makes batches grow under load. The provider call runs on a
worker thread, so the event loop keeps serving while the model computes. Each caller gets
exactly its own rows back, in order; a caller with more rows than ``max_batch`` is split over
several batches.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inference.metrics import BATCH_SIZE, INFERENCE_LATENCY_US

Matrix = npt.NDArray[np.float32]


@dataclass
class _Waiting:
    rows: Matrix
    future: asyncio.Future[Matrix]
    since: float = field(default_factory=time.perf_counter)


class InferenceBatcher:
    def __init__(self, infer: Callable[[Matrix], Matrix], *, provider: str, max_batch: int,
                 max_items: int = 16, flush_us: int = 500,
                 executor: Executor | None = None) -> None:
        if max_batch < 1 or max_items < 1:
            raise ValueError("max_batch and max_items must be at least 1")
        self._infer = infer
        self._provider = provider
        self.max_batch = max_batch
        self._max_items = min(max_items, max_batch)
        self._flush_seconds = flush_us / 1_000_000
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix=f"infer-{provider}")
        self._waiting: deque[_Waiting] = deque()
        self._waiting_rows = 0
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def infer(self, rows: Matrix) -> Matrix:
        """Score ``rows`` [n, F]; returns [n, outputs] for exactly these rows."""
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty 2-D matrix, got shape {rows.shape}")
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, rows.shape[0], self.max_batch):
            chunk = rows[start:start + self.max_batch]
            future: asyncio.Future[Matrix] = loop.create_future()
            self._waiting.append(_Waiting(chunk, future))
            self._waiting_rows += chunk.shape[0]
            futures.append(future)
        self._idle.clear()
        self._schedule(loop)
        results = await asyncio.gather(*futures)
        return results[0] if len(results) == 1 else np.concatenate(results)

    async def drain(self) -> None:
        """Wait until every submitted row has its answer (before retiring this batcher)."""
        await self._idle.wait()

    def close(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running or not self._waiting:
            return
        waited = time.perf_counter() - self._waiting[0].since
        if self._waiting_rows >= self._max_items or waited >= self._flush_seconds:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._running = True
            loop.create_task(self._run_batch())
        elif self._timer is None:
            self._timer = loop.call_later(self._flush_seconds - waited, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._schedule(loop)

    def _take_batch(self) -> list[_Waiting]:
        batch, rows = [], 0
        while self._waiting and rows + self._waiting[0].rows.shape[0] <= self.max_batch:
            waiting = self._waiting.popleft()
            rows += waiting.rows.shape[0]
            batch.append(waiting)
        self._waiting_rows -= rows
        return batch

    async def _run_batch(self) -> None:
        loop = asyncio.get_running_loop()
        batch = self._take_batch()
        try:
            matrix = batch[0].rows if len(batch) == 1 else np.concatenate(
                [waiting.rows for waiting in batch])
            scores = await loop.run_in_executor(self._executor, self._timed_infer, matrix)
        except Exception as error:  # noqa: BLE001 - every caller of the batch gets the error
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
        else:
            offset = 0
            for waiting in batch:
                count = waiting.rows.shape[0]
                if not waiting.future.done():
                    waiting.future.set_result(scores[offset:offset + count])
                offset += count
        finally:
            self._running = False
            if self._waiting:
                self._schedule(loop)
            else:
                self._idle.set()

    def _timed_infer(self, matrix: Matrix) -> Matrix:
        started = time.perf_counter()
        scores = self._infer(matrix)
        INFERENCE_LATENCY_US.labels(self._provider).observe(
            (time.perf_counter() - started) * 1_000_000)
        BATCH_SIZE.labels(self._provider).observe(matrix.shape[0])
        if scores.shape[0] != matrix.shape[0]:
            raise ValueError(f"the model returned {scores.shape[0]} rows for "
                             f"{matrix.shape[0]}")
        return scores
