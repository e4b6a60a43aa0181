"""Spend reconciliation between the bidders' counters and PostgreSQL."""

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from bidding.budget import Ledger, spend_keys, unrestored_key
from campaign_express.platform import store_call
from campaigns.models import Campaign, CampaignDailySpend
from campaigns.spend import spend_reconcile

NOW = datetime(2030, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
def running(make_campaign):
    campaign = make_campaign(Campaign.Status.ACTIVE, start_at=NOW - timedelta(days=1),
                             end_at=NOW + timedelta(days=10))
    campaign.advertiser.time_zone = "UTC"
    campaign.advertiser.save()
    return campaign


def counters(campaign: Campaign) -> tuple[str, str]:
    total, day, _ = spend_keys(campaign.pk, "UTC", NOW.timestamp())
    return total, day


def store_set(key: str, value: int | None) -> None:
    async def write(store):
        if value is None:
            await store.delete(key)
        else:
            await store.set(key, str(value).encode())

    store_call(write)


def store_get(key: str) -> bytes | None:
    async def read(store):
        return await store.get(key)

    return store_call(read)


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def store_backend(request, settings):
    if request.param == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")


def test_counters_reach_the_campaign_and_its_day_and_never_go_down(store_backend, running):
    total_key, day_key = counters(running)
    store_set(total_key, 12_345_000)
    store_set(day_key, 2_500_000)

    assert spend_reconcile(now=NOW) == {"updated": 1, "rebuilt": 0}
    running.refresh_from_db()
    assert running.spent == Decimal("12.345")
    assert CampaignDailySpend.objects.get(campaign=running, date=NOW.date()).amount == Decimal(
        "2.5")

    # A counter below PostgreSQL lost its data: what it holds was counted since, on top.
    store_set(total_key, 1_000_000)
    assert spend_reconcile(now=NOW) == {"updated": 1, "rebuilt": 1}
    assert store_get(total_key) == b"13345000"
    running.refresh_from_db()
    assert running.spent == Decimal("13.345")
    store_set(total_key, None)
    store_set(day_key, None)


def test_lost_counters_are_rebuilt_from_postgresql(store_backend, running):
    total_key, day_key = counters(running)
    Campaign.objects.filter(pk=running.pk).update(spent=Decimal("40.5"))
    CampaignDailySpend.objects.create(campaign=running, date=NOW.date(), amount=Decimal("3.25"))
    store_set(total_key, None)
    store_set(day_key, None)

    counts = spend_reconcile(now=NOW)

    assert counts["rebuilt"] == 1
    assert store_get(total_key) == b"40500000"
    assert store_get(day_key) == b"3250000"
    store_set(total_key, None)
    store_set(day_key, None)


def test_spend_counted_after_redis_lost_its_data_is_added_to_what_postgresql_holds(
        store_backend, running):
    total_key, day_key = counters(running)
    hour_key = spend_keys(running.pk, "UTC", NOW.timestamp())[2]
    Campaign.objects.filter(pk=running.pk).update(spent=Decimal("40.5"))
    CampaignDailySpend.objects.create(campaign=running, date=NOW.date(), amount=Decimal("3.25"))
    for key in (total_key, day_key, hour_key):
        store_set(key, None)

    async def bill(store):
        await Ledger(store).commit(campaign_id=running.pk, time_zone="UTC",
                                   hold_id=uuid.uuid4().hex,  # committed once per hold id
                                   minute=int(NOW.timestamp() // 60), spend=1_500_000,
                                   now=NOW.timestamp())

    store_call(bill)  # a billing notice arrives before the next reconciliation
    first = spend_reconcile(now=NOW)
    again = spend_reconcile(now=NOW)

    assert (first["rebuilt"], again["rebuilt"]) == (1, 0)
    assert store_get(total_key) == b"42000000"  # 40.5 + 1.5
    assert store_get(day_key) == b"4750000"  # 3.25 + 1.5
    running.refresh_from_db()
    assert running.spent == Decimal("42")
    assert CampaignDailySpend.objects.get(campaign=running, date=NOW.date()).amount == Decimal(
        "4.75")
    for key in (total_key, day_key, hour_key):
        store_set(key, None)


def test_a_lost_total_is_restored_however_much_bidders_counted_since(store_backend, running):
    total_key, day_key = counters(running)
    hour_key = spend_keys(running.pk, "UTC", NOW.timestamp())[2]
    Campaign.objects.filter(pk=running.pk).update(spent=Decimal("40.5"))
    CampaignDailySpend.objects.create(campaign=running, date=NOW.date(), amount=Decimal("3.25"))
    for key in (total_key, day_key, hour_key, unrestored_key(running.pk)):
        store_set(key, None)  # Redis restarted empty

    async def bill(store):
        for _ in range(2):  # 50.00 billed before the next reconciliation: more than was saved
            await Ledger(store).commit(campaign_id=running.pk, time_zone="UTC",
                                       hold_id=uuid.uuid4().hex,
                                       minute=int(NOW.timestamp() // 60), spend=25_000_000,
                                       now=NOW.timestamp())

    store_call(bill)
    first = spend_reconcile(now=NOW)
    again = spend_reconcile(now=NOW)

    assert (first["rebuilt"], again["rebuilt"]) == (1, 0)
    assert store_get(total_key) == b"90500000"  # 40.5 + 50
    assert store_get(day_key) == b"53250000"  # 3.25 + 50
    assert store_get(unrestored_key(running.pk)) is None
    running.refresh_from_db()
    assert running.spent == Decimal("90.5")
    assert CampaignDailySpend.objects.get(campaign=running, date=NOW.date()).amount == Decimal(
        "53.25")
    for key in (total_key, day_key, hour_key):
        store_set(key, None)


def test_a_new_campaigns_first_billing_is_not_counted_as_a_rebuild(store_backend, running):
    total_key, day_key = counters(running)
    for key in (total_key, day_key, unrestored_key(running.pk)):
        store_set(key, None)

    async def bill(store):
        await Ledger(store).commit(campaign_id=running.pk, time_zone="UTC",
                                   hold_id=uuid.uuid4().hex, minute=int(NOW.timestamp() // 60),
                                   spend=1_000_000, now=NOW.timestamp())

    store_call(bill)
    counts = spend_reconcile(now=NOW)

    assert counts == {"updated": 1, "rebuilt": 0}
    assert (store_get(total_key), store_get(day_key)) == (b"1000000", b"1000000")
    assert store_get(unrestored_key(running.pk)) is None
    running.refresh_from_db()
    assert running.spent == Decimal("1")
    store_set(total_key, None)
    store_set(day_key, None)


def test_a_counter_finer_than_postgresql_keeps_its_value(store_backend, running):
    total_key, day_key = counters(running)
    store_set(total_key, 12_345_678)  # PostgreSQL keeps 4 decimals: 12.3457 rounds it up
    store_set(day_key, 2_345_678)

    first = spend_reconcile(now=NOW)
    again = spend_reconcile(now=NOW)

    assert (first["rebuilt"], again["rebuilt"]) == (0, 0)
    assert (store_get(total_key), store_get(day_key)) == (b"12345678", b"2345678")
    store_set(total_key, None)
    store_set(day_key, None)


def test_spend_billed_before_midnight_reaches_yesterdays_row(store_backend, running):
    running.advertiser.time_zone = "America/New_York"
    running.advertiser.save()
    # 03:30 UTC on 10 March is 22:30 on the 9th in New York: the last run of the day there.
    before_midnight = datetime(2030, 3, 10, 3, 30, tzinfo=UTC)
    after_midnight = datetime(2030, 3, 10, 5, 10, tzinfo=UTC)  # 00:10 on the 10th
    total_key, ninth_key, _ = spend_keys(running.pk, "America/New_York",
                                         before_midnight.timestamp())
    tenth_key = spend_keys(running.pk, "America/New_York", after_midnight.timestamp())[1]
    store_set(total_key, 2_000_000)
    store_set(ninth_key, 2_000_000)
    spend_reconcile(now=before_midnight)
    store_set(total_key, 2_750_000)  # 0.75 more billed on the 9th before midnight
    store_set(ninth_key, 2_750_000)
    store_set(tenth_key, None)

    spend_reconcile(now=after_midnight)

    rows = dict(CampaignDailySpend.objects.filter(campaign=running).values_list("date", "amount"))
    assert rows == {date(2030, 3, 9): Decimal("2.75")}
    running.refresh_from_db()
    assert running.spent == Decimal("2.75")
    for key in (total_key, ninth_key):
        store_set(key, None)


def test_no_row_is_made_for_yesterday_without_its_counter(store_backend, running):
    total_key, day_key = counters(running)
    yesterday_key = spend_keys(running.pk, "UTC", (NOW - timedelta(days=1)).timestamp())[1]
    store_set(yesterday_key, None)
    store_set(day_key, 1_000_000)

    spend_reconcile(now=NOW)

    rows = dict(CampaignDailySpend.objects.filter(campaign=running).values_list("date", "amount"))
    assert rows == {NOW.date(): Decimal("1")}
    store_set(total_key, None)
    store_set(day_key, None)


def test_the_campaign_admin_page_shows_daily_spend(running, marketer, client):
    CampaignDailySpend.objects.create(campaign=running, date=NOW.date(), amount=Decimal("3.25"))
    client.force_login(marketer)

    page = client.get(f"/admin/campaigns/campaign/{running.pk}/change/").content.decode()

    assert "daily spend" in page.lower() and "3.2500" in page
