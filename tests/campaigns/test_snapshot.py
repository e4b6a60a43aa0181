"""The config snapshot: what the compiler includes, how it encodes, and the outbox publisher."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import shutil
import threading
from decimal import Decimal

import pytest

from bidding import snapshot as contract
from bidding.service import BidderService
from campaign_express import platform
from campaign_express.backends.bus import BusUnavailable, InProcessBus, Message
from campaign_express.backends.nats_bus import NatsBus
from campaign_express.backends.store import MemoryStore
from campaign_express.celery import BEAT_SCHEDULE
from campaign_express.platform import bus_call
from campaigns import exchanges, services, tasks
from campaigns.models import Campaign, Creative, CurrencyRate, Exchange, SnapshotOutbox
from campaigns.snapshot import (
    snapshot_compile,
    snapshot_publish,
    snapshot_request,
    snapshot_restore,
)
from tests.bidding.bidder_fixtures import config
from tests.campaign_express.platform import PrivateNats

Status = Campaign.Status
NOW = datetime.datetime(2030, 3, 10, 12, 0, tzinfo=datetime.UTC)
START = datetime.datetime(2030, 3, 1, 9, 0, tzinfo=datetime.UTC)
END = datetime.datetime(2030, 4, 1, 9, 0, tzinfo=datetime.UTC)
UNREACHABLE_NATS = "nats://127.0.0.1:1"


@pytest.fixture
def embedded_bus(settings):
    settings.NATS_URL = ""


@pytest.fixture
def empty_embedded_bus(embedded_bus, monkeypatch):
    """The process's in-process bus, new and empty, as after a start; `lose()` empties it again
    (its buckets lost, the database kept)."""

    def lose() -> None:
        monkeypatch.setattr(platform, "_embedded_bus", InProcessBus())

    lose()
    return lose


def kv_snapshot() -> contract.Snapshot | None:
    pointer = bus_call(lambda bus: bus.kv_get(contract.BUCKET, contract.KEY))
    return None if pointer is None else bus_call(lambda bus: contract.fetch(bus, pointer))


def pending_ids() -> list[int]:
    return list(SnapshotOutbox.objects.filter(published_at__isnull=True)
                .order_by("id").values_list("id", flat=True))


# --- compile ---------------------------------------------------------------------------------

def test_compile_includes_exactly_active_running_campaigns_with_approved_creatives(
        make_campaign, creative_factory):
    active = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    creative_factory(campaign=active, approval_status=Creative.Approval.PENDING)
    creative_factory(campaign=active, approval_status=Creative.Approval.REJECTED)
    make_campaign(Status.PAUSED, start_at=START, end_at=END)
    make_campaign(Status.APPROVED, start_at=START, end_at=END)
    make_campaign(Status.DRAFT, start_at=START, end_at=END)
    make_campaign(Status.COMPLETED, start_at=START, end_at=END)
    make_campaign(Status.ACTIVE, start_at=START, end_at=NOW)  # ended: its end has come
    no_approved = make_campaign(Status.ACTIVE, approved_creative=False, start_at=START,
                                end_at=END)
    creative_factory(campaign=no_approved, approval_status=Creative.Approval.PENDING)

    compiled = snapshot_compile(version=3, now=NOW)

    approved = active.creatives.get(approval_status=Creative.Approval.APPROVED)
    assert [(entry.id, [c.id for c in entry.creatives]) for entry in compiled.campaigns] == [
        (active.pk, [approved.pk])]
    assert compiled.version == 3
    assert compiled.created_at == "2030-03-10T12:00:00Z"


def test_compile_leaves_out_the_campaigns_of_an_inactive_advertiser(
        make_campaign, campaign_factory, creative_factory, other_advertiser, other_marketer):
    kept = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    other_advertiser.is_active = False
    other_advertiser.save()
    inactive = campaign_factory(advertiser=other_advertiser, created_by=other_marketer,
                                status=Status.ACTIVE, start_at=START, end_at=END)
    creative_factory(campaign=inactive, approval_status=Creative.Approval.APPROVED)

    compiled = snapshot_compile(version=1, now=NOW)

    assert [entry.id for entry in compiled.campaigns] == [kept.pk]


def test_compile_encodes_money_times_targeting_and_creatives(make_campaign, creative_factory,
                                                             png_upload, settings):
    settings.PUBLIC_BASE_URL = "https://ads.example"
    campaign = make_campaign(
        Status.ACTIVE, approved_creative=False, start_at=START, end_at=END,
        total_budget=Decimal("1234.5600"), daily_budget=Decimal("100.0100"),
        base_bid_cpm=Decimal("2.3450"), max_bid_cpm=Decimal("7.0000"),
        frequency_cap_day=4, countries=["USA", "CAN"], device_types=["phone"],
        dayparts={"mon": [9, 10]}, deal_ids=["deal-1"], categories=["IAB8"])
    campaign.advertiser.time_zone = "America/New_York"
    campaign.advertiser.save()
    approved = Creative.Approval.APPROVED
    uploaded = creative_factory(campaign=campaign, approval_status=approved, markup="",
                                asset=png_upload("banner.png"), sizes=["300x250", "728x90"])
    insecure = creative_factory(campaign=campaign, approval_status=approved,
                                markup='<img src="http://tracker.example/p.gif">')
    secure = creative_factory(campaign=campaign, approval_status=approved,
                              markup='<img src="https://cdn.example/a.png">',
                              app_bundle="com.shop.app")

    entry = snapshot_compile(version=1, now=NOW).campaigns[0]

    assert (entry.total_budget, entry.daily_budget, entry.base_bid_cpm, entry.max_bid_cpm) == (
        Decimal("1234.5600"), Decimal("100.0100"), Decimal("2.3450"), Decimal("7.0000"))
    assert (entry.start_at, entry.end_at) == (1898586000, 1901264400)
    assert entry.time_zone == "America/New_York"
    assert (entry.countries, entry.device_types, entry.deal_ids, entry.categories) == (
        ("USA", "CAN"), ("phone",), ("deal-1",), ("IAB8",))
    assert entry.dayparts == {"mon": (9, 10)}
    assert (entry.frequency_cap_hour, entry.frequency_cap_day) == (None, 4)
    assert [(c.id, c.sizes, c.asset_url, c.is_secure) for c in entry.creatives] == [
        (uploaded.pk, ((300, 250), (728, 90)),
         f"https://ads.example/media/{uploaded.asset.name}", True),
        (insecure.pk, ((300, 250),), "", False),
        (secure.pk, ((300, 250),), "", True),
    ]
    assert [c.app_bundle for c in entry.creatives] == ["", "", "com.shop.app"]
    encoded = gzip.decompress(contract.encode(snapshot_compile(version=1, now=NOW)))
    assert b'"total_budget":"1234.5600"' in encoded
    assert b'"start_at":1898586000' in encoded


def test_an_asset_on_a_plain_http_base_url_is_not_secure(make_campaign, creative_factory,
                                                          png_upload, settings):
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8080"
    campaign = make_campaign(Status.ACTIVE, approved_creative=False, start_at=START,
                             end_at=END)
    creative = creative_factory(campaign=campaign, approval_status=Creative.Approval.APPROVED,
                                markup="", asset=png_upload())

    compiled = snapshot_compile(version=1, now=NOW).campaigns[0].creatives[0]

    assert compiled.asset_url == f"http://127.0.0.1:8080/media/{creative.asset.name}"
    assert compiled.is_secure is False


def test_compile_includes_active_exchanges_and_rates_with_usd(db):
    Exchange.objects.create(name="OpenX", slug="openx", seat="seat-1", is_default=True,
                            auth="token", token_sha256="a" * 64, currency="EUR")
    Exchange.objects.create(name="Off", slug="off", seat="seat-2", is_active=False)
    CurrencyRate.objects.create(currency="GBP", units_per_usd=Decimal("0.79"))
    CurrencyRate.objects.create(currency="EUR", units_per_usd=Decimal("0.92"))

    compiled = snapshot_compile(version=1, now=NOW)

    assert compiled.exchanges == (contract.ExchangeEntry(
        slug="openx", name="OpenX", seat="seat-1", is_default=True, auth="token",
        token_sha256="a" * 64, currency="EUR"),)
    assert compiled.usd_rates == {"USD": Decimal(1), "EUR": Decimal("0.92000000"),
                                  "GBP": Decimal("0.79000000")}


def test_the_same_data_compiles_to_the_same_bytes(make_campaign):
    for _ in range(3):
        make_campaign(Status.ACTIVE, start_at=START, end_at=END)

    assert contract.encode(snapshot_compile(version=5, now=NOW)) == contract.encode(
        snapshot_compile(version=5, now=NOW))


# --- outbox and publisher --------------------------------------------------------------------

def test_a_campaign_change_commits_an_outbox_row_and_enqueues_the_publish(
        make_campaign, marketer, django_capture_on_commit_callbacks):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)

    with django_capture_on_commit_callbacks() as callbacks:
        services.campaign_transition(campaign=campaign, actor=marketer, action="pause")

    assert len(callbacks) == 1
    assert SnapshotOutbox.objects.filter(published_at__isnull=True).count() == 1


def test_a_refused_change_requests_no_publish(make_campaign, marketer):
    campaign = make_campaign(Status.DRAFT, start_at=START, end_at=END)

    with pytest.raises(Exception, match="Cannot pause"):
        services.campaign_transition(campaign=campaign, actor=marketer, action="pause")

    assert SnapshotOutbox.objects.count() == 0


def test_publishing_puts_the_newest_snapshot_in_the_bucket_and_marks_every_row(
        make_campaign, marketer, embedded_bus):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    first = snapshot_request()
    services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Renamed"})
    newest = SnapshotOutbox.objects.latest("id")

    version = snapshot_publish(now=NOW)

    assert version == newest.pk
    assert pending_ids() == []
    assert SnapshotOutbox.objects.get(pk=first.pk).published_at is not None
    published = kv_snapshot()
    assert published.version == newest.pk
    assert [entry.name for entry in published.campaigns] == ["Renamed"]
    assert snapshot_publish(now=NOW) is None  # nothing pending: nothing sent


def test_a_publish_while_the_bus_is_down_keeps_the_rows_and_a_later_one_sends_the_newest(
        make_campaign, marketer, nats_url, settings, caplog):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    first = snapshot_request()
    settings.NATS_URL = UNREACHABLE_NATS

    with pytest.raises(BusUnavailable):
        snapshot_publish(now=NOW)
    assert tasks.snapshot_publish() is None  # the task logs; the beat retries
    assert pending_ids() == [first.pk]
    assert "config snapshot not published, the bus is unavailable" in caplog.text

    services.campaign_transition(campaign=campaign, actor=marketer, action="pause")
    newest = SnapshotOutbox.objects.latest("id")
    settings.NATS_URL = nats_url
    assert snapshot_publish(now=NOW) == newest.pk

    assert pending_ids() == []
    published = kv_snapshot()
    assert (published.version, published.campaigns) == (newest.pk, ())


def test_a_request_numbered_below_a_published_version_goes_out_under_a_higher_one(
        db, embedded_bus):
    """Commit order can differ from id order: the late one must not go out as older."""
    late = SnapshotOutbox.objects.create()
    already = SnapshotOutbox.objects.create(published_at=NOW)

    version = snapshot_publish(now=NOW)

    assert version > already.pk
    assert kv_snapshot().version == version
    assert SnapshotOutbox.objects.get(pk=late.pk).published_at is not None
    assert pending_ids() == []


@pytest.mark.nats
def test_over_nats_a_subscriber_receives_the_snapshot_and_the_bucket_holds_it(
        make_campaign, marketer, nats_url, settings):
    settings.NATS_URL = nats_url
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    received: list[bytes] = []
    subscribed, got_one, stop = threading.Event(), threading.Event(), threading.Event()

    async def listen() -> None:
        bus = NatsBus(nats_url)
        await bus.connect()

        async def take(message: Message) -> None:
            received.append(message.data)
            got_one.set()

        await bus.subscribe(contract.SUBJECT, take)
        subscribed.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await bus.close()

    listener = threading.Thread(target=asyncio.run, args=(listen(),))
    listener.start()
    try:
        assert subscribed.wait(5)
        services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Over NATS"})
        version = snapshot_publish(now=NOW)
        assert got_one.wait(5)
    finally:
        stop.set()
        listener.join(5)

    message = bus_call(lambda bus: contract.fetch(bus, received[0]))
    assert (message.version, [entry.name for entry in message.campaigns]) == (
        version, ["Over NATS"])
    stored = kv_snapshot()
    assert (stored.version, stored.campaigns) == (version, message.campaigns)


def test_every_service_that_changes_bidding_requests_one_publish(
        make_campaign, marketer, approver, ops, creative_factory, advertiser):
    campaign = make_campaign(Status.DRAFT, start_at=START, end_at=END)
    creative = campaign.creatives.get()
    steps = [
        lambda: services.campaign_update(campaign=campaign, actor=marketer,
                                         data={"name": "Changed"}),
        lambda: services.creative_update(creative=creative, actor=marketer,
                                         data={"name": "Changed creative"}),
        lambda: services.creative_review(creative=creative, actor=approver, approve=True),
        lambda: services.campaign_transition(campaign=campaign, actor=marketer,
                                             action="submit"),
        lambda: services.advertiser_update(advertiser=advertiser, actor=ops,
                                           data={"time_zone": "Europe/Paris"}),
        lambda: exchanges.exchange_create(actor=ops, data={"name": "X", "slug": "x",
                                                          "seat": "s"}),
        lambda: exchanges.currency_rate_set(actor=ops, currency="EUR",
                                           units_per_usd=Decimal("0.9")),
    ]
    for number, step in enumerate(steps, start=1):
        step()
        assert SnapshotOutbox.objects.count() == number

    services.advertiser_update(advertiser=advertiser, actor=ops, data={"name": "Renamed"})
    assert SnapshotOutbox.objects.count() == len(steps)  # not seen by bidders: no publish


def test_deactivating_and_reactivating_an_advertiser_each_publish_without_its_campaigns(
        make_campaign, advertiser, ops, embedded_bus):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)

    services.advertiser_update(advertiser=advertiser, actor=ops, data={"is_active": False})
    assert len(pending_ids()) == 1
    snapshot_publish(now=NOW)
    assert kv_snapshot().campaigns == ()

    services.advertiser_update(advertiser=advertiser, actor=ops, data={"is_active": True})
    assert len(pending_ids()) == 1
    snapshot_publish(now=NOW)
    assert [entry.id for entry in kv_snapshot().campaigns] == [campaign.pk]


# --- restore ---------------------------------------------------------------------------------

def test_restore_publishes_the_current_config_when_the_bucket_lost_it(
        make_campaign, empty_embedded_bus):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    snapshot_request()
    published = snapshot_publish(now=NOW)
    empty_embedded_bus()

    version = snapshot_restore(now=NOW)

    assert version == SnapshotOutbox.objects.latest("id").pk
    assert version > published
    restored = kv_snapshot()
    assert (restored.version, [entry.id for entry in restored.campaigns]) == (
        version, [campaign.pk])
    assert pending_ids() == []


def test_restore_publishes_when_nothing_was_ever_published(db, empty_embedded_bus):
    version = snapshot_restore(now=NOW)

    assert (kv_snapshot().version, kv_snapshot().campaigns) == (version, ())


def test_restore_does_nothing_when_the_bucket_holds_the_latest(
        make_campaign, empty_embedded_bus):
    make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    snapshot_request()
    published = snapshot_publish(now=NOW)

    assert snapshot_restore(now=NOW) is None
    assert snapshot_restore(now=NOW) is None
    assert SnapshotOutbox.objects.count() == 1
    assert kv_snapshot().version == published


def test_restore_replaces_an_older_snapshot_in_the_bucket_under_a_higher_version(
        make_campaign, empty_embedded_bus):
    """As after a bucket recreated from an old backup: bidders would start on stale config."""
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    snapshot_request()
    old = snapshot_publish(now=NOW)
    newer = SnapshotOutbox.objects.create(published_at=NOW)  # went out, then the bucket lost it
    stale = snapshot_compile(version=old, now=NOW)
    bus_call(lambda bus: contract.publish(bus, stale))

    version = snapshot_restore(now=NOW)

    assert version > newer.pk
    assert (kv_snapshot().version, [entry.id for entry in kv_snapshot().campaigns]) == (
        version, [campaign.pk])


def test_restore_while_the_bus_is_down_requests_nothing_and_the_task_logs(
        db, settings, caplog):
    settings.NATS_URL = UNREACHABLE_NATS

    assert tasks.snapshot_restore() is None

    assert SnapshotOutbox.objects.count() == 0
    assert "config bucket not checked, the bus is unavailable" in caplog.text


def test_the_beat_runs_the_restore_within_a_minute():
    entry = BEAT_SCHEDULE["config-snapshot-restore"]

    assert entry["task"] == "campaigns.tasks.snapshot_restore"
    assert entry["schedule"].run_every <= datetime.timedelta(minutes=1)


@pytest.mark.nats
@pytest.mark.slow
def test_after_nats_loses_the_config_bucket_the_restore_task_makes_a_starting_bidder_ready(
        make_campaign, settings, tmp_path):
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    try:
        settings.NATS_URL = f"nats://127.0.0.1:{nats.port}"
        campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
        snapshot_request()
        snapshot_publish(now=NOW)
        nats.stop()
        shutil.rmtree(nats.data_dir)  # JetStream's storage lost: the bucket with it
        nats.start()
        assert bus_call(lambda bus: bus.kv_get(contract.BUCKET, contract.KEY)) is None

        version = tasks.snapshot_restore()
        restored = kv_snapshot()

        async def start_bidder() -> dict:
            service = BidderService(config=config(tmp_path), bus=NatsBus(settings.NATS_URL),
                                    store=MemoryStore())
            await service.start()
            try:
                return {"is_ready": service.is_ready, **service.state()}
            finally:
                await service.stop()
                await service.bus.close()

        state = asyncio.run(start_bidder())
    finally:
        nats.stop()

    assert version == SnapshotOutbox.objects.latest("id").pk
    assert [entry.id for entry in restored.campaigns] == [campaign.pk]
    assert (state["is_ready"], state["snapshot_version"], state["campaigns"]) == (
        True, version, 1)
