"""The config snapshot, Django side: compile it, request a publish, publish from the outbox.

Flow: a service that changes what bidding sees calls `snapshot_request()` inside its own
transaction. That inserts a `SnapshotOutbox` row, which commits with the change or not at all,
and enqueues `campaigns.tasks.snapshot_publish` once the transaction commits. The publisher
compiles the database as it is now, puts the snapshot in the key-value bucket (where a starting
bidder finds it) and publishes it on the subject (which running bidders follow), and only then
marks the outbox rows published. When the bus is down the rows stay unpublished and the beat
entry `config-snapshot-publish` retries every few seconds, so no saved change is lost.

The bucket can lose what was published while the database keeps it: embedded mode's bus lives
in the process and starts empty, and a JetStream `config` bucket can be deleted or lost with
its server's storage. `snapshot_restore` publishes the current config again when the bucket
holds no snapshot or an older one than the latest published; the platform command calls it
before serving and the beat entry `config-snapshot-restore` every half minute, so a starting
bidder is never left without a snapshot until someone saves a change.

Versions only increase: a snapshot never goes out under a version lower than or equal to one
already published, and only one publisher is at work at a time, so the bucket never goes back
to an older snapshot. A newer snapshot supersedes every older one (it holds the whole config),
so a backlog of requests is one publish.
"""

from __future__ import annotations

import datetime
import logging
from decimal import Decimal
from urllib.parse import urljoin

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Prefetch
from django.utils import timezone

from bidding.snapshot import (
    BUCKET,
    KEY,
    CampaignEntry,
    CreativeEntry,
    ExchangeEntry,
    Snapshot,
    pointer_version,
    publish,
)
from campaign_express.platform import bus_call
from campaign_express.tasks import enqueue_on_commit
from campaigns.models import Campaign, Creative, CurrencyRate, Exchange, SnapshotOutbox
from dsp.selectors import dsp_partner_entries
from loyalty.selectors import program_ids_by_advertiser

logger = logging.getLogger(__name__)

PUBLISH_TASK = "campaigns.tasks.snapshot_publish"
# Rounds one `snapshot_publish` call runs: a request that commits while a publish is under way
# is picked up by the next round instead of waiting for the beat.
PUBLISH_ROUNDS = 3
# Published outbox rows are kept this long for the record, then deleted.
OUTBOX_RETENTION = datetime.timedelta(days=7)


# --- compile ---------------------------------------------------------------------------------

def _epoch(value: datetime.datetime) -> int:
    return int(value.timestamp())


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def _asset_url(creative: Creative) -> str:
    """Absolute: exchanges fetch it from outside. Object storage already gives absolute URLs."""
    if not creative.asset:
        return ""
    return urljoin(f"{settings.PUBLIC_BASE_URL}/", creative.asset.url)


def _creative_entry(creative: Creative) -> CreativeEntry:
    asset_url = _asset_url(creative)
    is_secure = (not asset_url or asset_url.startswith("https://")) and (
        "http://" not in creative.markup.lower())
    return CreativeEntry(
        id=creative.pk, name=creative.name, format=creative.format,
        sizes=tuple(_size(size) for size in creative.sizes), asset_url=asset_url,
        markup=creative.markup, click_url=creative.click_url, adomain=creative.adomain,
        app_bundle=creative.app_bundle,
        categories=tuple(creative.categories), attributes=tuple(creative.attributes),
        mimes=tuple(creative.mimes), protocols=tuple(creative.protocols),
        duration_seconds=creative.duration_seconds, is_secure=is_secure)


def _campaign_entry(campaign: Campaign, creatives: tuple[CreativeEntry, ...],
                    loyalty_program_id: int | None = None) -> CampaignEntry:
    return CampaignEntry(
        id=campaign.pk, advertiser_id=campaign.advertiser_id, name=campaign.name,
        currency=campaign.currency, time_zone=campaign.advertiser.time_zone,
        start_at=_epoch(campaign.start_at), end_at=_epoch(campaign.end_at),
        dayparts={day: tuple(hours) for day, hours in campaign.dayparts.items()},
        total_budget=campaign.total_budget, daily_budget=campaign.daily_budget,
        pacing=campaign.pacing, base_bid_cpm=campaign.base_bid_cpm,
        max_bid_cpm=campaign.max_bid_cpm, frequency_cap_hour=campaign.frequency_cap_hour,
        frequency_cap_day=campaign.frequency_cap_day,
        frequency_cap_lifetime=campaign.frequency_cap_lifetime,
        countries=tuple(campaign.countries), regions=tuple(campaign.regions),
        device_types=tuple(campaign.device_types),
        operating_systems=tuple(campaign.operating_systems),
        site_domains_allow=tuple(campaign.site_domains_allow),
        site_domains_block=tuple(campaign.site_domains_block),
        app_bundles_allow=tuple(campaign.app_bundles_allow),
        app_bundles_block=tuple(campaign.app_bundles_block),
        categories=tuple(campaign.categories), segments=tuple(campaign.segments),
        loyalty_tiers=tuple(campaign.loyalty_tiers), loyalty_program_id=loyalty_program_id,
        deal_ids=tuple(campaign.deal_ids), creatives=creatives)


def _exchange_entry(exchange: Exchange) -> ExchangeEntry:
    return ExchangeEntry(
        slug=exchange.slug, name=exchange.name, seat=exchange.seat,
        is_default=exchange.is_default, auth=exchange.auth,
        token_sha256=exchange.token_sha256,
        allowed_networks=tuple(exchange.allowed_networks),
        price_decryption=exchange.price_decryption, price_key_ref=exchange.price_key_ref,
        currency=exchange.currency, no_bid_style=exchange.no_bid_style)


def snapshot_compile(*, version: int, now: datetime.datetime | None = None) -> Snapshot:
    """What bidding needs, as of now: active campaigns of active advertisers whose schedule has
    not ended, each with its approved creatives (a campaign left with none is left out) and its
    advertiser's loyalty program (the one its tiers and the bid boost refer to), active
    exchanges and the currency rates.

    Paused, approved-but-not-started, draft and ended campaigns are out: a campaign bids only
    while it is active. So are the campaigns of a deactivated advertiser, whatever their own
    status; they bid again when it is reactivated. Everything is ordered by id, so the same
    data compiles to the same bytes apart from ``version`` and ``created_at``.
    """
    now = now or timezone.now()
    approved = Creative.objects.filter(approval_status=Creative.Approval.APPROVED).order_by("id")
    campaigns = (Campaign.objects.filter(status=Campaign.Status.ACTIVE, end_at__gt=now,
                                         advertiser__is_active=True)
                 .select_related("advertiser").order_by("id")
                 .prefetch_related(Prefetch("creatives", queryset=approved)))
    programs = program_ids_by_advertiser()
    entries = []
    for campaign in campaigns:
        creatives = tuple(_creative_entry(creative) for creative in campaign.creatives.all())
        if creatives:
            entries.append(_campaign_entry(campaign, creatives,
                                           programs.get(campaign.advertiser_id)))
    exchanges = tuple(_exchange_entry(exchange)
                      for exchange in Exchange.objects.filter(is_active=True).order_by("id"))
    rates = {"USD": Decimal(1)}
    rates.update(CurrencyRate.objects.order_by("currency")
                 .values_list("currency", "units_per_usd"))
    return Snapshot(version=version,
                    created_at=now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
                    campaigns=tuple(entries), exchanges=exchanges, usd_rates=rates,
                    dsp_partners=dsp_partner_entries())


# --- request and publish ---------------------------------------------------------------------

def snapshot_request() -> SnapshotOutbox:
    """Ask for a publish of the current config once the caller's transaction commits.

    Call it inside the transaction of the change: the outbox row commits with the change, and
    the publish task is enqueued only after the commit, so the worker sees the change.
    """
    row = SnapshotOutbox.objects.create()
    enqueue_on_commit(PUBLISH_TASK)
    return row


def _publish(snapshot: Snapshot) -> None:
    bus_call(lambda bus: publish(bus, snapshot))


def _publish_round(now: datetime.datetime | None) -> int | None:
    """Publish once for the unpublished rows this call can lock; the version, or None when
    there is nothing to do (or another publisher holds older rows and will publish)."""
    is_outermost = not connection.in_atomic_block
    with transaction.atomic():
        if is_outermost and connection.vendor == "postgresql":
            # One consistent view of campaigns, creatives and exchanges: a change committed
            # during the compile must not appear half-included.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pending = SnapshotOutbox.objects.filter(published_at__isnull=True)
        ids = list(pending.select_for_update(skip_locked=True).order_by("id")
                   .values_list("id", flat=True))
        if not ids:
            return None
        if pending.filter(id__lt=ids[-1]).exclude(id__in=ids).exists():
            # Older rows locked by a publisher at work: it publishes after them, and picks
            # ours up in its next round (or the beat does).
            return None
        version = ids[-1]
        if SnapshotOutbox.objects.filter(id__gt=version, published_at__isnull=False).exists():
            # A later-numbered request committed first and went out: ours needs a higher
            # version, or bidders would ignore it as older.
            version = SnapshotOutbox.objects.create().pk
            ids.append(version)
        snapshot = snapshot_compile(version=version, now=now)
        _publish(snapshot)
        published_at = timezone.now()
        SnapshotOutbox.objects.filter(id__in=ids).update(published_at=published_at)
        SnapshotOutbox.objects.filter(
            published_at__lt=published_at - OUTBOX_RETENTION).delete()
    logger.info("published config snapshot %d (%d campaigns, %d request(s))", version,
                len(snapshot.campaigns), len(ids))
    return version


def snapshot_publish(*, now: datetime.datetime | None = None) -> int | None:
    """Publish the newest config if any request is unpublished; the version published last.

    Raises `BusUnavailable` when the bus cannot be reached: nothing is marked published, and
    the next call (the beat's) tries again with whatever is newest then.
    """
    published = None
    for _ in range(PUBLISH_ROUNDS):
        version = _publish_round(now)
        if version is None:
            break
        published = version
    return published


def _bucket_version() -> int | None:
    """The version the bucket points at; None when it holds no pointer (or an unreadable one,
    which no bidder can use either)."""
    pointer = bus_call(lambda bus: bus.kv_get(BUCKET, KEY))
    return pointer_version(pointer) if pointer else None


def snapshot_restore(*, now: datetime.datetime | None = None) -> int | None:
    """Publish the current config when the bucket holds no snapshot, or one older than the
    latest published; the version published, None when the bucket is up to date (or another
    publisher, at work on older requests, will publish it).

    The republish goes out under a new outbox row's id, above every version published, so
    bidders serving an older snapshot take it and none goes back. Idempotent: once the bucket
    holds the latest, a call is one key read and one indexed query. Raises `BusUnavailable`
    when the bus cannot be reached, like `snapshot_publish`.
    """
    held = _bucket_version()
    latest = (SnapshotOutbox.objects.filter(published_at__isnull=False)
              .aggregate(latest=Max("id"))["latest"])
    if held is not None and (latest is None or held >= latest):
        return None
    logger.info("the config bucket holds %s, the latest published is %s: publishing again",
                f"version {held}" if held is not None else "no snapshot", latest)
    SnapshotOutbox.objects.create()
    return snapshot_publish(now=now)
