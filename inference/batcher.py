"""The batching buffer: rows from concurrent callers share one provider call.

A batch runs when it holds ``max_items`` rows or when its oldest row has waited ``flush_us``
microseconds, whichever comes first; rows that are already waiting by then ride along, up to
the provider's ``max_batch`` and never above it. One batch is in the provider at a time, and
rows that arrive meanwhile wait for the next one, which is what makes batches grow with load.

Collecting and running batches happens on the batcher's own thread: the event loop keeps
serving while the model computes, and the flush deadline is kept with the thread's
microsecond-precision waits rather than the event loop's timers, which wake about a
millisecond late. Each caller gets exactly its own rows back, in order; a caller with more
rows than ``max_batch`` is split over several batches.

`LoopBatcher` batches on the event loop instead, for a provider whose call takes tens of
microseconds (onnxruntime on the CPU with the shipped model: about 25 µs for 16 rows): the
rows submitted during one turn of the loop share one call, made at the end of that turn.
Handing rows to a thread and the scores back (a queue, a wake-up, `call_soon_threadsafe`, the
GIL changing hands twice) cost such a bidder about ten times the model call in CPU
(BENCHMARKS.md, "Bidder under load"); a provider that waits on a device or a server keeps
the thread, so the loop never blocks on it.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inference.metrics import BATCH_SIZE, INFERENCE_LATENCY_US

Matrix = npt.NDArray[np.float32]


@dataclass
class _Waiting:
    rows: Matrix
    future: asyncio.Future[Matrix]
    loop: asyncio.AbstractEventLoop
    since: float = field(default_factory=time.perf_counter)


def _settle(future: asyncio.Future[Matrix], result: Matrix | None,
            error: BaseException | None) -> None:
    if future.done():  # the caller gave up (cancelled) meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class InferenceBatcher:
    def __init__(self, infer: Callable[[Matrix], Matrix], *, provider: str, max_batch: int,
                 max_items: int = 16, flush_us: int = 500) -> None:
        if max_batch < 1 or max_items < 1:
            raise ValueError("max_batch and max_items must be at least 1")
        self._infer = infer
        self._provider = provider
        self.max_batch = max_batch
        self._max_items = min(max_items, max_batch)
        self._flush_seconds = flush_us / 1_000_000
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._unanswered: set[asyncio.Future[Matrix]] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"infer-{provider}",
                                        daemon=True)
        self._thread.start()

    async def infer(self, rows: Matrix) -> Matrix:
        """Score ``rows`` [n, F]; returns [n, outputs] for exactly these rows."""
        _check(rows, provider=self._provider, closed=self._closed)
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, rows.shape[0], self.max_batch):
            future: asyncio.Future[Matrix] = loop.create_future()
            self._unanswered.add(future)
            future.add_done_callback(self._unanswered.discard)
            futures.append(future)
            self._queue.put(_Waiting(rows[start:start + self.max_batch], future, loop))
        results = await asyncio.gather(*futures)
        return results[0] if len(results) == 1 else np.concatenate(results)

    async def drain(self) -> None:
        """Wait until every row submitted so far has its answer (before retiring it)."""
        if self._unanswered:
            await asyncio.gather(*list(self._unanswered), return_exceptions=True)

    def close(self) -> None:
        """Stop the thread once the rows already submitted are answered."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def _work(self) -> None:
        carried: _Waiting | None = None
        while True:
            first = carried or self._queue.get()
            if first is None:
                return
            batch, carried = self._collect(first)
            self._run(batch)
            if carried is None and self._closed and self._queue.empty():
                return

    def _collect(self, first: _Waiting) -> tuple[list[_Waiting], _Waiting | None]:
        """The rows of the next batch, and a chunk that did not fit (it opens the next one)."""
        batch, rows = [first], first.rows.shape[0]
        deadline = first.since + self._flush_seconds
        while rows < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                if rows < self._max_items and remaining > 0:
                    waiting = self._queue.get(timeout=remaining)
                else:
                    waiting = self._queue.get_nowait()  # only what is already there
            except queue.Empty:
                break
            if waiting is None:
                self._queue.put(None)
                break
            if rows + waiting.rows.shape[0] > self.max_batch:
                return batch, waiting
            batch.append(waiting)
            rows += waiting.rows.shape[0]
        return batch, None

    def _run(self, batch: list[_Waiting]) -> None:
        for waiting, result, error in _run_batch(self._infer, self._provider, batch):
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                waiting.loop.call_soon_threadsafe(_settle, waiting.future, result, error)


# Labelled children kept per provider: `labels()` validates and locks on every call.
_latency = functools.cache(INFERENCE_LATENCY_US.labels)
_batch_size = functools.cache(BATCH_SIZE.labels)


def _check(rows: Matrix, *, provider: str, closed: bool) -> None:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"rows must be a non-empty 2-D matrix, got shape {rows.shape}")
    if closed:
        raise RuntimeError(f"the {provider} batcher is closed")


def _run_batch(infer: Callable[[Matrix], Matrix], provider: str, batch: list[_Waiting]
               ) -> list[tuple[_Waiting, Matrix | None, BaseException | None]]:
    """One provider call for ``batch``: each caller's own rows of the scores, or the error."""
    matrix = batch[0].rows if len(batch) == 1 else np.concatenate(
        [waiting.rows for waiting in batch])
    try:
        started = time.perf_counter()
        scores = infer(matrix)
        _latency(provider).observe((time.perf_counter() - started) * 1_000_000)
        _batch_size(provider).observe(matrix.shape[0])
        if scores.shape[0] != matrix.shape[0]:
            raise ValueError(f"the model returned {scores.shape[0]} rows for {matrix.shape[0]}")
    except Exception as error:  # noqa: BLE001 - every caller of the batch gets the error
        return [(waiting, None, error) for waiting in batch]
    settled: list[tuple[_Waiting, Matrix | None, BaseException | None]] = []
    offset = 0
    for waiting in batch:
        count = waiting.rows.shape[0]
        settled.append((waiting, scores[offset:offset + count], None))
        offset += count
    return settled


class LoopBatcher:
    """The batching buffer on the event loop: rows submitted in one turn of the loop share
    one provider call at its end (`max_batch` rows at most a call). Same interface as
    `InferenceBatcher`; for providers whose call is too short to be worth a thread."""

    def __init__(self, infer: Callable[[Matrix], Matrix], *, provider: str,
                 max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._infer = infer
        self._provider = provider
        self.max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._closed = False

    async def infer(self, rows: Matrix) -> Matrix:
        """Score ``rows`` [n, F]; returns [n, outputs] for exactly these rows."""
        _check(rows, provider=self._provider, closed=self._closed)
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._run_waiting)
        futures = []
        for start in range(0, rows.shape[0], self.max_batch):
            future: asyncio.Future[Matrix] = loop.create_future()
            futures.append(future)
            self._waiting.append(_Waiting(rows[start:start + self.max_batch], future, loop))
        if len(futures) == 1:
            return await futures[0]
        return np.concatenate(await asyncio.gather(*futures))

    def _run_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        while waiting:
            batch, rows = [waiting[0]], waiting[0].rows.shape[0]
            for item in waiting[1:]:
                if rows + item.rows.shape[0] > self.max_batch:
                    break
                batch.append(item)
                rows += item.rows.shape[0]
            waiting = waiting[len(batch):]
            for item, result, error in _run_batch(self._infer, self._provider, batch):
                _settle(item.future, result, error)

    async def drain(self) -> None:
        """Wait until every row submitted so far has its answer (before retiring it)."""
        if self._waiting:
            await asyncio.gather(*(item.future for item in list(self._waiting)),
                                 return_exceptions=True)

    def close(self) -> None:
        """Refuse new rows; those already submitted are still answered."""
        self._closed = True
