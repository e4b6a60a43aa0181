"""Inference throughput and latency: batch sizes, then concurrent callers with and without the
batching buffer. Prints what it measures; nothing is estimated.

    .venv/bin/python benchmarks/inference_batching.py [--seconds 3] [--rows-per-call 1]

Part 1 calls the cpu provider directly with batches of 1..max rows. Part 2 runs N concurrent
asyncio callers, each scoring ``--rows-per-call`` rows per call in a loop for ``--seconds``:
"unbatched" gives each call its own provider call on a worker thread, "batched" goes through
`InferenceBatcher` with the configured max items and flush time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaign_express import env  # noqa: E402
from inference.batcher import InferenceBatcher  # noqa: E402
from inference.features import FEATURE_COUNT  # noqa: E402
from inference.modelfile import DEFAULT_MODEL_PATH  # noqa: E402
from inference.providers import ModelSource, create_provider  # noqa: E402


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def batch_sizes(model, max_batch: int, seconds: float) -> None:
    print(f"\n1. provider calls by batch size ({seconds:.1f} s each)")
    print(f"{'rows':>5} {'calls':>8} {'p50 µs':>9} {'p99 µs':>9} {'rows/s':>11}")
    rng = np.random.default_rng(1)
    for size in sorted({1, 2, 4, 8, 16, max_batch // 2, max_batch}):
        batch = rng.random((size, FEATURE_COUNT), dtype=np.float32)
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            model.infer(batch)
            samples.append((time.perf_counter() - started) * 1e6)
        rate = size * len(samples) / (sum(samples) / 1e6)
        print(f"{size:>5} {len(samples):>8} {statistics.median(samples):>9.1f} "
              f"{percentile(samples, 0.99):>9.1f} {rate:>11,.0f}")


async def callers(score, count: int, rows_per_call: int, seconds: float) -> tuple[list[float], int]:
    rng = np.random.default_rng(2)
    rows = rng.random((rows_per_call, FEATURE_COUNT), dtype=np.float32)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await score(rows)
            latencies.append((time.perf_counter() - started) * 1e6)

    await asyncio.gather(*(caller() for _ in range(count)))
    return latencies, len(latencies) * rows_per_call


async def concurrency(model, config: env.Config, seconds: float, rows_per_call: int) -> None:
    print(f"\n2. concurrent callers, {rows_per_call} row(s) per call ({seconds:.1f} s each; "
          f"batcher: max items {config.npu_batcher_max_items}, flush "
          f"{config.npu_batcher_flush_us} µs, max batch {model.max_batch})")
    print(f"{'callers':>7} {'mode':>9} {'calls':>8} {'p50 µs':>9} {'p99 µs':>9} "
          f"{'rows/s':>11} {'rows/batch':>10}")
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    for count in (1, 8, 32, 128):
        async def unbatched(rows):
            return await loop.run_in_executor(executor, model.infer, rows)

        batches: list[int] = []

        def counted(rows, batches=batches):
            batches.append(rows.shape[0])
            return model.infer(rows)

        batcher = InferenceBatcher(counted, provider="cpu", max_batch=model.max_batch,
                                   max_items=config.npu_batcher_max_items,
                                   flush_us=config.npu_batcher_flush_us)
        for mode, score in (("unbatched", unbatched), ("batched", batcher.infer)):
            latencies, rows = await callers(score, count, rows_per_call, seconds)
            per_batch = (f"{statistics.mean(batches):>10.1f}" if mode == "batched"
                         else f"{rows_per_call:>10.1f}")
            print(f"{count:>7} {mode:>9} {len(latencies):>8} "
                  f"{statistics.median(latencies):>9.1f} {percentile(latencies, 0.99):>9.1f} "
                  f"{rows / seconds:>11,.0f} {per_batch}")
        batcher.close()
    executor.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows-per-call", type=int, default=1)
    arguments = parser.parse_args()
    config = env.load()
    provider = create_provider("cpu", config)
    model = provider.load(ModelSource(DEFAULT_MODEL_PATH.read_bytes(), "offer-scoring", "1"))
    model.warm_up()
    print(f"model {DEFAULT_MODEL_PATH.name}, {FEATURE_COUNT} features, provider cpu, "
          f"{config.npu_num_threads} intra-op threads")
    batch_sizes(model, model.max_batch, arguments.seconds)
    asyncio.run(concurrency(model, config, arguments.seconds, arguments.rows_per_call))


if __name__ == "__main__":
    main()
