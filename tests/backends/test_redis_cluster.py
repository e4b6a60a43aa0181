"""Redis Cluster through `RedisStore`: a real three-master Cluster of the test run's own
(`redis_cluster_url`), keys spread over every master, a slot moved while in use, and the
bid path's budget holds, frequency caps and profiles on it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest
import redis

from bidding.budget import RESERVE_DAILY, RESERVE_OK, Ledger
from bidding.profiles import LoyaltyStatus, ProfileCache, profile_update
from campaign_express.backends.redis_wire import RedisClient, key_slot
from campaign_express.backends.store import RedisStore
from tests.bidding.bidder_fixtures import NOW, campaign, creative, fixture, snapshot
from tests.bidding.test_budget import make_campaign

pytestmark = pytest.mark.redis


def nodes(url: str) -> dict[int, redis.Redis]:
    """Slot -> a plain client of the master that owns it (as the Cluster itself says)."""
    seed = redis.Redis.from_url(url)
    owners = {}
    for start, end, master, *_ in seed.execute_command("CLUSTER SLOTS", NEVER_DECODE=True):
        node = redis.Redis(host=master[0].decode(), port=master[1])
        for slot in range(start, end + 1):
            owners[slot] = node
    return owners


def test_key_slot_is_what_the_cluster_computes(redis_cluster_url: str) -> None:
    seed = redis.Redis.from_url(redis_cluster_url)
    keys = ["foo", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
            "budget:{c12}:spent", "cap:{u9f}:c3:d", "profile:ce-user-123", "é{}"]

    assert [key_slot(key) for key in keys] == [seed.cluster("KEYSLOT", key) for key in keys]
    assert key_slot("foo") == 12182  # the example in the Cluster specification
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")


async def test_each_key_lands_on_the_master_of_its_slot(redis_cluster_url: str) -> None:
    store = RedisStore(redis_cluster_url)
    prefix = uuid.uuid4().hex
    keys = [f"{prefix}:{number}" for number in range(60)]
    for key in keys:
        await store.set(key, key.encode(), ttl_seconds=60)

    owners = nodes(redis_cluster_url)
    assert len({id(owners[key_slot(key)]) for key in keys}) == 3  # all three masters used
    assert all(owners[key_slot(key)].get(key) == key.encode() for key in keys)
    assert [await store.get(key) for key in keys] == [key.encode() for key in keys]
    client = store._redis
    assert isinstance(client, RedisClient) and client.is_cluster
    await store.close()


async def test_scripts_run_on_every_master(redis_cluster_url: str) -> None:
    store = RedisStore(redis_cluster_url)
    keys = [f"{uuid.uuid4().hex}:budget" for _ in range(30)]

    results = [await store.incr_within(key, 5, limit=8, ttl_seconds=60) for key in keys]
    again = [await store.incr_within(key, 5, limit=8, ttl_seconds=60) for key in keys]

    assert results == [5] * 30 and again == [None] * 30
    await store.close()


async def test_a_slot_moved_while_in_use_is_followed(redis_cluster_url: str) -> None:
    store = RedisStore(redis_cluster_url)
    tag = uuid.uuid4().hex
    kept, added = f"{{{tag}}}:kept", f"{{{tag}}}:added"
    await store.set(kept, b"before the move")
    slot = key_slot(kept)
    owners = nodes(redis_cluster_url)
    source = owners[slot]
    target = next(node for node in set(owners.values()) if node is not source)
    source_id, target_id = (node.execute_command("CLUSTER MYID").decode()
                            for node in (source, target))
    target_port = target.connection_pool.connection_kwargs["port"]

    # Migration started: the slot's keys still on the source are served there; a key not
    # there yet is redirected (ASK) to the target.
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    assert await store.get(kept) == b"before the move"
    await store.set(added, b"during the move")
    assert target.execute_command("ASKING") and target.get(added) == b"during the move"

    # Migration finished: the source answers MOVED, the store reads the new map.
    source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", kept)
    for node in set(owners.values()):
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    assert await store.get_many([kept, added]) == [b"before the move", b"during the move"]
    assert nodes(redis_cluster_url)[slot].execute_command("CLUSTER MYID").decode() == target_id
    await store.close()


async def test_budget_holds_and_frequency_caps_on_a_cluster(redis_cluster_url: str) -> None:
    ledger = Ledger(RedisStore(redis_cluster_url))
    noon = NOW
    campaigns = [make_campaign(uuid.uuid4().int % 10**9, daily_budget=Decimal("0.50"),
                               frequency_cap_day=1) for _ in range(12)]
    user = uuid.uuid4().hex

    first = [await ledger.reserve(c, amount=400_000, hold_id="a", now=noon) for c in campaigns]
    second = [await ledger.reserve(c, amount=400_000, hold_id="b", now=noon)
              for c in campaigns]
    for c in campaigns[:5]:
        await ledger.count_impression(user=user, campaign_id=c.id, now=noon)
    capped = await ledger.capped(user=user, campaigns=campaigns, now=noon)

    assert first == [RESERVE_OK] * 12 and second == [RESERVE_DAILY] * 12
    assert capped == {c.id for c in campaigns[:5]}
    assert len({key_slot(f"c{c.id}") // 5462 for c in campaigns}) > 1  # several masters


async def test_a_bidder_on_a_cluster_reads_profiles_and_bids(tmp_path,
                                                             redis_cluster_url: str) -> None:
    from bidding.service import BidderService
    from campaign_express.backends.bus import InProcessBus
    from tests.bidding.bidder_fixtures import client, config

    store = RedisStore(redis_cluster_url)
    service = BidderService(config=config(tmp_path), bus=InProcessBus(), store=store)
    await service.start()
    service.install(snapshot(campaign(
        1, creative(11, "banner"), loyalty_program_id=7, loyalty_tiers=("gold",),
        frequency_cap_day=5)))
    request = fixture("banner-site-2.6.json")  # user ce-user-123, with consent

    async with client(service) as http:
        before = await http.post("/v1/bid", json=request)
        await profile_update(store, "ce-user-123", lambda profile: msgspec.structs.replace(
            profile, loyalty={"7": LoyaltyStatus(tier="gold", balance=900)}))
        service.engine.profiles.forget("ce-user-123")
        member = await http.post("/v1/bid", json=request)

    assert (before.status_code, member.status_code) == (204, 200)
    assert (await ProfileCache(store).get("ce-user-123")).loyalty["7"].tier == "gold"
    await service.stop()
