"""Config snapshots reach a running bidder over real NATS, also after NATS restarts, and a
snapshot far larger than a NATS message travels through the object store."""

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from bidding.service import BidderService
from bidding.snapshot import BUCKET, KEY, OBJECT, Pointer, decode, encode, publish
from campaign_express.backends.nats_bus import NatsBus
from campaign_express.backends.store import MemoryStore
from tests.bidding.bidder_fixtures import broad_campaigns, campaign, config, creative, snapshot
from tests.campaign_express.platform import PrivateNats

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def served_version(service: BidderService, version: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while service.state()["snapshot_version"] != version:
        assert time.monotonic() < deadline, service.state()
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bidder_on_private_nats(tmp_path, **settings
                                 ) -> AsyncIterator[tuple[BidderService, NatsBus, PrivateNats]]:
    """A NATS server of the test's own, a publisher connected to it, and a bidder (not yet
    started) on it; all stopped afterwards."""
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    url = f"nats://127.0.0.1:{nats.port}"
    publisher = NatsBus(url)
    await publisher.connect()
    service = BidderService(config=dataclasses.replace(config(tmp_path), **settings),
                            bus=NatsBus(url), store=MemoryStore())
    try:
        yield service, publisher, nats
    finally:
        await service.stop()
        await service.bus.close()
        await publisher.close()
        nats.stop()


async def test_a_published_snapshot_reaches_a_running_bidder_and_survives_a_nats_restart(
        tmp_path):
    async with bidder_on_private_nats(tmp_path) as (service, publisher, nats):
        await publish(publisher, decode(snapshot(*broad_campaigns(), version=1)))
        await service.start()
        assert service.state()["snapshot_version"] == 1  # loaded from the bucket at start

        await publish(publisher, decode(snapshot(*broad_campaigns(), version=2)))
        await served_version(service, 2)

        nats.stop()
        await asyncio.sleep(0.5)
        nats.start()
        await asyncio.sleep(1.5)  # both clients reconnect by themselves
        await publish(publisher, decode(snapshot(*broad_campaigns(), version=3)))
        await served_version(service, 3)


async def test_a_snapshot_whose_message_was_missed_is_read_from_the_bucket(tmp_path):
    """Stored in the bucket but never announced (as for a bidder cut off from NATS when it
    was published): the bidder's poll of the bucket finds it."""
    async with bidder_on_private_nats(tmp_path, snapshot_poll_seconds=1) as (
            service, publisher, _):
        await publish(publisher, decode(snapshot(*broad_campaigns(), version=1)))
        await service.start()
        data = encode(decode(snapshot(*broad_campaigns(), version=2)))
        await publisher.object_put(BUCKET, OBJECT, data)
        await publisher.kv_put(BUCKET, KEY, msgspec.json.encode(
            Pointer(version=2, object=OBJECT, size=len(data))))

        await served_version(service, 2, seconds=5)


async def test_a_snapshot_over_the_nats_message_limit_reaches_the_bidder(tmp_path):
    """10,000 campaigns: megabytes of JSON against the server's 1 MB message limit."""
    many = tuple(campaign(number, creative(number * 10, "banner"),
                          countries=("USA", "CAN", "GBR"), segments=(f"segment-{number}",))
                 for number in range(1, 10_001))
    async with bidder_on_private_nats(tmp_path) as (service, publisher, _):
        await service.start()
        await publish(publisher, decode(snapshot(*many, version=4)))
        await served_version(service, 4)
        assert service.state()["campaigns"] == 10_000
