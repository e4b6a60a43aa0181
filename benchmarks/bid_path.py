"""The bid path's CPU per request without HTTP: requests answered through the bidder's
handler in one process, against the load benchmark's 10,000-campaign snapshot and real
Redis. Prints CPU per request (process time, the model and Redis client included; the
Redis server's own work is not), and with ``--profile`` the functions that took it.

    .venv/bin/python benchmarks/bid_path.py [--requests 5000] [--concurrency 4]
        [--campaigns 10000] [--profile 30] [--redis-url redis://127.0.0.1:6379/13]

Requests go ``--concurrency`` at a time, as several connections would bring them to one
event loop. A steadier measure than the load benchmark for comparing two versions of the
code: nothing else competes for the loop, though the machine's speed still varies
(the reference loop printed with each run shows by how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bidder_load import (  # noqa: E402
    corpus_requests,
    flush_redis,
    generate_snapshot,
    reference_loop_ms,
    request_bodies,
)
from bidding import snapshot as snapshots  # noqa: E402
from bidding.service import BidderService  # noqa: E402
from campaign_express import env  # noqa: E402
from campaign_express.backends.bus import InProcessBus  # noqa: E402
from campaign_express.backends.store import store_from_url  # noqa: E402


async def started_service(args: argparse.Namespace, data_dir: str) -> BidderService:
    """A bidder service on the Redis database ``args.redis_url`` (flushed first) serving
    the load benchmark's snapshot of ``args.campaigns`` campaigns."""
    config = env.load({"CAMPAIGN_EXPRESS__SECRET_KEY": secrets.token_urlsafe(32),
                       "CAMPAIGN_EXPRESS__DATA_DIR": data_dir,
                       "CAMPAIGN_EXPRESS__LOG": "warning"})
    flush_redis(args.redis_url)
    service = BidderService(config=config, bus=InProcessBus(),
                            store=store_from_url(args.redis_url))
    await service.start()
    service.install(snapshots.encode(generate_snapshot(args.campaigns, args.seed, version=1)))
    return service


async def _run(args: argparse.Namespace, data_dir: str) -> None:
    service = await started_service(args, data_dir)
    corpus = corpus_requests(os.environ.get("OPENRTB_CORPUS", ""))
    bodies = request_bodies(4000, args.seed, corpus)
    handler = service.handler
    exchange = handler.exchange("")
    assert exchange is not None
    statuses: dict[int, int] = {}

    async def answer(body: bytes) -> None:
        result = await handler.handle(body, exchange=exchange)
        statuses[result.status] = statuses.get(result.status, 0) + 1

    async def batch(start: int, count: int) -> None:
        for first in range(start, start + count, args.concurrency):
            await asyncio.gather(*(answer(bodies[n % len(bodies)])
                                   for n in range(first, min(first + args.concurrency,
                                                             start + count))))

    await batch(0, 500)  # warm-up: caches, the model's first calls
    statuses.clear()
    profiler = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await batch(500, args.requests)
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await service.stop()
    flush_redis(args.redis_url)
    print(f"{args.requests:,} requests, {args.concurrency} at a time: "
          f"{cpu / args.requests * 1000:.3f} ms CPU per request "
          f"({wall / args.requests * 1000:.3f} ms wall); answers {dict(sorted(statuses.items()))}")
    print(f"machine: reference loop {reference_loop_ms():.0f} ms of CPU")
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile and print the N functions with the most own time")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        uvloop.run(_run(args, data_dir))  # the bidder process's loop


if __name__ == "__main__":
    main()
