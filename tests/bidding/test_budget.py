"""Budget holds, spend, pacing and frequency caps, against MemoryStore and real Redis."""

import asyncio
import multiprocessing
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from bidding.budget import (
    RESERVE_DAILY,
    RESERVE_OK,
    RESERVE_TOTAL,
    Ledger,
    spend_keys,
    to_micros,
    unrestored_key,
    user_key,
)
from bidding.notices import COUNT_CONVERSION
from bidding.snapshot import CampaignEntry
from campaign_express.backends.redis_wire import ReplyError
from campaign_express.backends.store import MemoryStore, RedisStore

NOON = datetime(2030, 5, 6, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 12:00 UTC


def make_campaign(campaign_id: int, **overrides) -> CampaignEntry:
    return CampaignEntry(**{
        "id": campaign_id, "advertiser_id": 1, "name": "c", "currency": "USD",
        "time_zone": "UTC", "start_at": 0, "end_at": 2**40, "total_budget": Decimal("1.00"),
        "daily_budget": Decimal("0.50"), "pacing": "accelerated",
        "base_bid_cpm": Decimal(1), "max_bid_cpm": Decimal(2), **overrides})


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = RedisStore(url)
    yield store
    await store.close()
    client.flushdb()


def campaign_id() -> int:
    return uuid.uuid4().int % 10**9


async def test_holds_stop_at_the_daily_budget_and_spend_replaces_them(store):
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id())
    quarter = to_micros(Decimal("0.25"))

    first = await ledger.reserve(campaign, amount=quarter, hold_id="a", now=NOON)
    second = await ledger.reserve(campaign, amount=quarter, hold_id="b", now=NOON)
    third = await ledger.reserve(campaign, amount=1, hold_id="c", now=NOON)

    assert (first, second, third) == (RESERVE_OK, RESERVE_OK, RESERVE_DAILY)
    minute = int(NOON // 60)
    day = await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="a",
                              minute=minute, spend=100_000, now=NOON)
    assert day == 100_000
    assert await ledger.spent(campaign.id) == 100_000
    # 0.10 spent + 0.25 still held: 0.15 of the day is left.
    assert await ledger.reserve(campaign, amount=150_000, hold_id="d", now=NOON) == RESERVE_OK
    assert await ledger.reserve(campaign, amount=1, hold_id="e", now=NOON) == RESERVE_DAILY


async def test_the_total_budget_refuses_across_days(store):
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id(), daily_budget=Decimal("1.00"),
                             total_budget=Decimal("1.20"))
    minute = int(NOON // 60)
    await ledger.reserve(campaign, amount=900_000, hold_id="a", now=NOON)
    await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="a", minute=minute,
                        spend=900_000, now=NOON)
    tomorrow = NOON + 86_400

    assert await ledger.reserve(campaign, amount=400_000, hold_id="b",
                                now=tomorrow) == RESERVE_TOTAL
    assert await ledger.reserve(campaign, amount=300_000, hold_id="c",
                                now=tomorrow) == RESERVE_OK


async def test_a_released_hold_and_an_expired_hold_give_the_budget_back(store):
    ledger = Ledger(store, hold_seconds=60)
    campaign = make_campaign(campaign_id())
    half = to_micros(Decimal("0.50"))
    minute = int(NOON // 60)

    assert await ledger.reserve(campaign, amount=half, hold_id="a", now=NOON) == RESERVE_OK
    assert await ledger.release(campaign_id=campaign.id, hold_id="a", minute=minute) == half
    assert await ledger.release(campaign_id=campaign.id, hold_id="a", minute=minute) == 0
    assert await ledger.reserve(campaign, amount=half, hold_id="b", now=NOON) == RESERVE_OK
    assert await ledger.reserve(campaign, amount=half, hold_id="c", now=NOON + 60) == (
        RESERVE_DAILY)
    # Nothing came back for hold b: once its minute leaves the window its money is free.
    assert await ledger.reserve(campaign, amount=half, hold_id="d", now=NOON + 180) == (
        RESERVE_OK)


async def test_even_pacing_spreads_what_is_left_over_the_hours_left(store):
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id(), pacing="even", daily_budget=Decimal("2.40"),
                             total_budget=Decimal(100))
    hour_share = to_micros(Decimal("0.10"))  # 2.40 over 24 hours, at midnight
    midnight = datetime(2030, 5, 6, 0, 0, tzinfo=UTC).timestamp()

    assert await ledger.reserve(campaign, amount=hour_share, hold_id="a",
                                now=midnight) == RESERVE_OK
    assert await ledger.reserve(campaign, amount=1, hold_id="b", now=midnight) == RESERVE_DAILY
    late = datetime(2030, 5, 6, 23, 0, tzinfo=UTC).timestamp()
    other = make_campaign(campaign_id(), pacing="even", daily_budget=Decimal("2.40"),
                          total_budget=Decimal(100))
    # In the last hour of the day the whole daily budget may go.
    assert await ledger.reserve(other, amount=to_micros(Decimal("2.40")), hold_id="c",
                                now=late) == RESERVE_OK


async def test_even_pacing_uses_the_advertisers_time_zone(store):
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id(), pacing="even", time_zone="Pacific/Kiritimati",
                             daily_budget=Decimal("2.40"), total_budget=Decimal(100))
    # Kiritimati is UTC+14: 12:00 UTC is 02:00 next day there, 22 hours left.
    assert await ledger.reserve(campaign, amount=to_micros(Decimal("0.11")), hold_id="a",
                                now=NOON) == RESERVE_DAILY
    assert await ledger.reserve(campaign, amount=to_micros(Decimal("0.10")), hold_id="b",
                                now=NOON) == RESERVE_OK


async def test_frequency_caps_count_impressions_per_user_and_campaign(store):
    ledger = Ledger(store)
    user = user_key(f"user-{uuid.uuid4()}")
    hourly = make_campaign(campaign_id(), frequency_cap_hour=2)
    lifetime = make_campaign(campaign_id(), frequency_cap_lifetime=3)
    uncapped = make_campaign(campaign_id())
    both = (hourly, lifetime, uncapped)

    assert await ledger.capped(user=user, campaigns=both, now=NOON) == set()
    for _ in range(2):
        await ledger.count_impression(user=user, campaign_id=hourly.id, now=NOON)
        await ledger.count_impression(user=user, campaign_id=lifetime.id, now=NOON)
    assert await ledger.capped(user=user, campaigns=both, now=NOON) == {hourly.id}
    next_hour = NOON + 3600
    assert await ledger.capped(user=user, campaigns=both, now=next_hour) == set()
    await ledger.count_impression(user=user, campaign_id=lifetime.id, now=next_hour)
    assert await ledger.capped(user=user, campaigns=both, now=next_hour) == {lifetime.id}
    assert await ledger.capped(user=user_key("someone else"), campaigns=both,
                               now=NOON) == set()


async def test_a_cap_hold_takes_an_impression_until_billed_released_or_expired(store):
    ledger = Ledger(store, hold_seconds=60)
    campaign = make_campaign(campaign_id(), frequency_cap_day=2)
    minute = int(NOON // 60)
    await ledger.count_impression(user="u1", campaign_id=campaign.id, now=NOON)  # 1 of 2

    assert await ledger.hold_cap(user="u1", campaign=campaign, hold_id="a", now=NOON)
    assert not await ledger.hold_cap(user="u1", campaign=campaign, hold_id="b", now=NOON)
    assert await ledger.hold_cap(user="u2", campaign=campaign, hold_id="b", now=NOON)
    assert await ledger.release_cap(user="u1", campaign_id=campaign.id, hold_id="a",
                                    minute=minute)
    assert not await ledger.release_cap(user="u1", campaign_id=campaign.id, hold_id="a",
                                        minute=minute)  # once
    assert await ledger.hold_cap(user="u1", campaign=campaign, hold_id="c", now=NOON)
    # Billed: counted (2 of 2) and its hold given back; a retry changes nothing.
    for _ in range(2):
        await ledger.count_impression(user="u1", campaign_id=campaign.id, bid_id="c",
                                      minute=minute, now=NOON)
    assert not await ledger.hold_cap(user="u1", campaign=campaign, hold_id="d", now=NOON)

    other = make_campaign(campaign_id(), frequency_cap_hour=1)
    assert await ledger.hold_cap(user="u1", campaign=other, hold_id="e", now=NOON)
    assert not await ledger.hold_cap(user="u1", campaign=other, hold_id="f", now=NOON + 60)
    # Never billed nor lost: once its minute leaves the window, the impression is free.
    assert await ledger.hold_cap(user="u1", campaign=other, hold_id="g", now=NOON + 180)


async def test_a_cap_release_never_takes_a_pending_count_below_zero(store):
    ledger = Ledger(store, hold_seconds=60)
    campaign = make_campaign(campaign_id(), frequency_cap_day=1)
    minute = int(NOON // 60)
    assert await ledger.hold_cap(user="u1", campaign=campaign, hold_id="a", now=NOON)
    assert await ledger.release_cap(user="u1", campaign_id=campaign.id, hold_id="a",
                                    minute=minute)
    assert await ledger.hold_cap(user="u1", campaign=campaign, hold_id="b", now=NOON + 60)

    # Released against a minute whose bucket is already at 0: the hold goes, nothing else.
    assert not await ledger.release_cap(user="u1", campaign_id=campaign.id, hold_id="b",
                                        minute=minute)
    assert await ledger.hold_cap(user="u1", campaign=campaign, hold_id="c", now=NOON + 60) is (
        False)  # b's pending impression still counts in its own minute's bucket


async def test_a_conversion_is_counted_once_per_click_however_often_its_script_runs(store):
    tag = f"conversions:{{c{campaign_id()}}}"
    keys = [f"{tag}:count", f"{tag}:value", f"{tag}:counted:bid-1"]

    runs = [await store.run(COUNT_CONVERSION, keys, [19_900_000, 60]) for _ in range(2)]

    assert runs == [1, 0]
    assert await store.get_many(keys[:2]) == [b"1", b"19900000"]


async def test_a_bids_spend_is_committed_once_however_often_its_commit_runs(store):
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id())
    minute = int(NOON // 60)
    await ledger.reserve(campaign, amount=200_000, hold_id="a", now=NOON)

    days = [await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="a",
                                minute=minute, spend=150_000, now=NOON) for _ in range(2)]
    other = await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="b",
                                minute=minute, spend=10_000, now=NOON)

    assert days == [150_000, 150_000]
    assert other == 160_000
    assert await ledger.spent(campaign.id) == 160_000
    # The hold went with the first commit: the whole daily budget minus the spend is free.
    assert await ledger.reserve(campaign, amount=340_000, hold_id="c", now=NOON) == RESERVE_OK


async def test_an_impression_counted_with_its_bid_counts_once_toward_the_caps(store):
    ledger = Ledger(store)
    user = user_key(f"user-{uuid.uuid4()}")
    capped = make_campaign(campaign_id(), frequency_cap_hour=2)

    counted = [await ledger.count_impression(user=user, campaign_id=capped.id, bid_id="b-1",
                                             now=NOON) for _ in range(3)]

    assert counted == [True, False, False]
    assert await ledger.capped(user=user, campaigns=(capped,), now=NOON) == set()
    assert await ledger.count_impression(user=user, campaign_id=capped.id, bid_id="b-2",
                                         now=NOON)
    assert await ledger.capped(user=user, campaigns=(capped,), now=NOON) == {capped.id}


async def test_a_commit_that_finds_the_total_empty_flags_it_for_reconciliation(store):
    ledger = Ledger(store)
    identifier = campaign_id()
    minute = int(NOON // 60)

    await ledger.commit(campaign_id=identifier, time_zone="UTC", hold_id="a", minute=minute,
                        spend=100, now=NOON)
    flagged = await store.get(unrestored_key(identifier))
    await store.delete(unrestored_key(identifier))  # what reconciliation does
    await ledger.commit(campaign_id=identifier, time_zone="UTC", hold_id="b", minute=minute,
                        spend=100, now=NOON)

    assert flagged == b"1"
    assert await store.get(unrestored_key(identifier)) is None
    assert await ledger.spent(identifier) == 200


@pytest.mark.redis
async def test_a_commit_past_the_64_bit_range_fails_whole_and_leaves_the_hold(redis_url):
    store = RedisStore(redis_url)
    ledger = Ledger(store)
    campaign = make_campaign(campaign_id())
    minute = int(NOON // 60)
    await ledger.reserve(campaign, amount=200_000, hold_id="a", now=NOON)
    spent_key, day_key, _ = spend_keys(campaign.id, "UTC", NOON)
    await store.set(spent_key, str(2**63 - 10).encode())

    with pytest.raises(ReplyError, match="overflow"):
        await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="a",
                            minute=minute, spend=100, now=NOON)

    assert await store.get_many([spent_key, day_key]) == [str(2**63 - 10).encode(), None]
    assert await ledger.release(campaign_id=campaign.id, hold_id="a", minute=minute) == 200_000
    await store.set(spent_key, b"0")
    # Not marked committed: the retry, once the total allows it, counts.
    assert await ledger.commit(campaign_id=campaign.id, time_zone="UTC", hold_id="a",
                               minute=minute, spend=100, now=NOON) == 100
    await store.close()


def _bidder_process(url: str, campaign: dict, max_bid: int, rounds: int, results) -> None:
    """One bidder process: hold the max bid, then bill it, as fast as it can."""

    async def run() -> int:
        store = RedisStore(url)
        ledger = Ledger(store)
        entry = make_campaign(campaign["campaign_id"], daily_budget=campaign["daily_budget"],
                              total_budget=campaign["total_budget"])
        won = 0
        for _ in range(rounds):
            hold_id = f"{uuid.uuid4().hex}"
            now = time.time()
            if await ledger.reserve(entry, amount=max_bid, hold_id=hold_id, now=now) == 0:
                await ledger.commit(campaign_id=entry.id, time_zone="UTC", hold_id=hold_id,
                                    minute=int(now // 60), spend=max_bid, now=now)
                won += 1
        await store.close()
        return won

    results.put(asyncio.run(run()))


@pytest.mark.redis
@pytest.mark.slow
def test_four_bidder_processes_racing_never_overspend_a_tiny_budget(redis_url):
    identifier = campaign_id()
    total = Decimal("0.0105")  # about ten bids of 0.001
    max_bid = to_micros(Decimal("0.001"))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_bidder_process, args=(
        redis_url, {"campaign_id": identifier, "daily_budget": total, "total_budget": total},
        max_bid, 200, results)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    won = [results.get(timeout=5) for _ in processes]

    spent = int(redis.Redis.from_url(redis_url).get(f"budget:{{c{identifier}}}:spent"))
    assert spent <= to_micros(total)
    assert sum(won) == spent // max_bid == 10
    assert all(process.exitcode == 0 for process in processes)
