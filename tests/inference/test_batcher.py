import asyncio
import threading
import time

import numpy as np
import pytest

from inference.batcher import InferenceBatcher, LoopBatcher


class Model:
    """Scores each row as (sum, first value); records the batch sizes it was given."""

    def __init__(self, *, seconds: float = 0.0, fail_when: float | None = None) -> None:
        self.batches: list[int] = []
        self.seconds = seconds
        self.fail_when = fail_when
        self.threads: set[str] = set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.batches.append(batch.shape[0])
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail_when is not None and (batch[:, 0] == self.fail_when).any():
            raise RuntimeError("bad row in batch")
        return np.stack([batch.sum(axis=1), batch[:, 0]], axis=1).astype(np.float32)


def rows(*values: float, width: int = 4) -> np.ndarray:
    return np.array([[value] * width for value in values], dtype=np.float32)


async def test_a_batch_runs_as_soon_as_it_holds_max_items():
    model = Model()
    batcher = InferenceBatcher(model, provider="test", max_batch=32, max_items=4,
                               flush_us=10_000_000)
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(batcher.infer(rows(i)) for i in range(4))), 5)
    assert model.batches == [4]
    assert time.perf_counter() - started < 10


async def test_a_partial_batch_runs_when_its_oldest_row_has_waited_flush_us():
    model = Model()
    batcher = InferenceBatcher(model, provider="test", max_batch=32, max_items=100,
                               flush_us=20_000)
    started = time.perf_counter()
    await asyncio.gather(*(batcher.infer(rows(i)) for i in range(3)))
    assert model.batches == [3]
    assert time.perf_counter() - started >= 0.02


async def test_batches_never_exceed_the_providers_maximum():
    model = Model(seconds=0.01)
    batcher = InferenceBatcher(model, provider="test", max_batch=8, max_items=64,
                               flush_us=1_000)
    await asyncio.gather(*(batcher.infer(rows(i)) for i in range(50)))
    assert max(model.batches) <= 8
    assert sum(model.batches) == 50


async def test_every_caller_gets_exactly_its_own_rows_back():
    model = Model(seconds=0.002)
    batcher = InferenceBatcher(model, provider="test", max_batch=16, max_items=16,
                               flush_us=500)

    async def caller(number: int) -> tuple[int, np.ndarray]:
        await asyncio.sleep((number % 7) / 1000)
        return number, await batcher.infer(rows(number, number + 0.5, width=3))

    results = await asyncio.gather(*(caller(n) for n in range(200)))
    for number, scores in results:
        assert scores.tolist() == [[number * 3, number], [(number + 0.5) * 3, number + 0.5]]
    assert len(model.batches) < 200  # concurrent callers shared batches


async def test_a_caller_with_more_rows_than_the_maximum_is_split_over_batches():
    model = Model()
    batcher = InferenceBatcher(model, provider="test", max_batch=32, max_items=32,
                               flush_us=500)
    values = list(range(70))
    scores = await batcher.infer(rows(*values, width=2))
    assert model.batches == [32, 32, 6]
    assert scores[:, 1].tolist() == values


async def test_a_failed_batch_fails_its_callers_only_and_the_batcher_goes_on():
    model = Model(fail_when=13.0)
    batcher = InferenceBatcher(model, provider="test", max_batch=4, max_items=4,
                               flush_us=500)
    outcomes = await asyncio.gather(*(batcher.infer(rows(i)) for i in (11, 12, 13, 14)),
                                    return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    after = await batcher.infer(rows(20))
    assert after.tolist() == [[80, 20]]


async def test_inference_runs_off_the_event_loop():
    model = Model(seconds=0.2)
    batcher = InferenceBatcher(model, provider="test", max_batch=4, max_items=1,
                               flush_us=500)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await batcher.infer(rows(1))
    task.cancel()
    assert ticks >= 5
    assert model.threads == {"infer-test"}


async def test_drain_waits_for_rows_in_flight():
    model = Model(seconds=0.05)
    batcher = InferenceBatcher(model, provider="test", max_batch=4, max_items=1,
                               flush_us=500)
    pending = asyncio.create_task(batcher.infer(rows(5)))
    await asyncio.sleep(0)
    await batcher.drain()
    await asyncio.sleep(0)  # the caller's task resumes on the next turn of the loop
    assert pending.done() and pending.result().tolist() == [[20, 5]]


async def test_rows_must_be_a_non_empty_matrix():
    batcher = InferenceBatcher(Model(), provider="test", max_batch=4)
    with pytest.raises(ValueError, match="non-empty 2-D matrix"):
        await batcher.infer(np.zeros((0, 4), dtype=np.float32))


async def test_on_the_loop_rows_submitted_in_one_turn_share_one_call():
    model = Model()
    batcher = LoopBatcher(model, provider="test", max_batch=32)

    scores = await asyncio.gather(*(batcher.infer(rows(i, i + 0.5)) for i in range(3)))

    assert model.batches == [6]
    assert [score.tolist() for score in scores] == [
        [[0, 0], [2, 0.5]], [[4, 1], [6, 1.5]], [[8, 2], [10, 2.5]]]
    assert model.threads == {threading.current_thread().name}


async def test_on_the_loop_batches_never_exceed_max_batch_and_callers_get_their_rows():
    model = Model()
    batcher = LoopBatcher(model, provider="test", max_batch=4)

    many, few = await asyncio.gather(batcher.infer(rows(*range(10))), batcher.infer(rows(7)))

    assert model.batches == [4, 4, 3]  # the last two chunks of 2 and 1 rows ride together
    assert many[:, 1].tolist() == list(range(10))
    assert few.tolist() == [[28, 7]]


async def test_on_the_loop_a_failed_batch_fails_its_callers_only():
    model = Model(fail_when=12)
    batcher = LoopBatcher(model, provider="test", max_batch=1)

    outcomes = await asyncio.gather(*(batcher.infer(rows(i)) for i in (11, 12, 13)),
                                    return_exceptions=True)

    assert [type(outcome).__name__ for outcome in outcomes] == [
        "ndarray", "RuntimeError", "ndarray"]
    assert (await batcher.infer(rows(20))).tolist() == [[80, 20]]


async def test_on_the_loop_drain_answers_what_is_waiting_and_close_refuses_new_rows():
    batcher = LoopBatcher(Model(), provider="test", max_batch=4)
    pending = asyncio.create_task(batcher.infer(rows(5)))
    await asyncio.sleep(0)

    await batcher.drain()
    batcher.close()

    assert pending.done() and pending.result().tolist() == [[20, 5]]
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.infer(rows(1))
