"""Four bidder processes on the whole bid path share one tiny budget in real Redis.

Each process runs a `BidderService` with the same snapshot: it answers bid requests through
its handler (index, model, pricing, the budget hold) and bills every bid it wins through its
notice handler at the bid's price, as fast as it can. Together they never spend more than
the budget plus one maximum bid.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis

from bidding.budget import to_micros
from bidding.service import BidderService
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import RedisStore
from tests.bidding.bidder_fixtures import campaign, config, creative, fixture, snapshot

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BUDGET = Decimal("0.02")  # a handful of impressions at 2-6 CPM
MAX_CPM = Decimal("6.00")


def _bidder_process(redis_url: str, campaign_id: int, requests: int, results) -> None:
    async def run() -> tuple[int, int]:
        with tempfile.TemporaryDirectory() as data_dir:
            service = BidderService(config=config(Path(data_dir)), bus=InProcessBus(),
                                    store=RedisStore(redis_url))
            await service.start()
            service.install(snapshot(campaign(
                campaign_id, creative(campaign_id * 10, "banner"), daily_budget=BUDGET,
                total_budget=BUDGET, base_bid_cpm=Decimal("2.00"), max_bid_cpm=MAX_CPM,
                pacing="accelerated")))
            exchange = service.handler.exchange("")
            assert exchange is not None
            won = billed = 0
            for _ in range(requests):
                body = json.dumps({**fixture("banner-site-2.6.json"),
                                   "id": uuid.uuid4().hex}).encode()
                answer = await service.handler.handle(body, exchange=exchange)
                if answer.status != 200:
                    continue
                bid = json.loads(answer.body)["seatbid"][0]["bid"][0]
                won += 1
                burl = bid["burl"].replace("${AUCTION_PRICE}", str(bid["price"]))
                result = await service.notices.handle(
                    "billing", dict(parse_qsl(urlsplit(burl).query, keep_blank_values=True)),
                    index=service.engine.index)
                billed += result.status == 204
            await service.stop()
            return won, billed

    results.put(asyncio.run(run()))


def test_four_bidders_on_the_bid_path_never_overspend_a_tiny_budget(redis_url):
    campaign_id = uuid.uuid4().int % 10**8
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_bidder_process,
                                 args=(redis_url, campaign_id, 40, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)

    spent = int(redis.Redis.from_url(redis_url).get(f"budget:{{c{campaign_id}}}:spent") or 0)
    won = sum(won for won, _ in outcomes)
    assert all(process.exitcode == 0 for process in processes)
    assert won == sum(billed for _, billed in outcomes) > 0
    assert 0 < spent <= to_micros(BUDGET) + to_micros(MAX_CPM / 1000)
    assert won < 4 * 40  # the budget ran out: most requests were refused
