"""Spend reconciliation: the bidders' counters into PostgreSQL, and back when they are lost.

Bidders count spend in the store (Redis) as billing notices arrive. A periodic task copies
each running campaign's total and today's spend into `Campaign.spent` and
`CampaignDailySpend`, only ever upwards (a counter never un-spends). When a counter is
missing — Redis lost its data — it is rebuilt from those rows before bidders hold against it,
so a restart of Redis cannot re-open a budget that was already spent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from bidding.budget import MICROS, spend_keys
from campaign_express.platform import store_call
from campaigns.models import Campaign, CampaignDailySpend

RECONCILED_STATUSES = (Campaign.Status.ACTIVE, Campaign.Status.PAUSED,
                       Campaign.Status.COMPLETED)


def _micros(amount: Decimal) -> int:
    return int(amount * MICROS)


def spend_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    counts = {"updated": 0, "rebuilt": 0}
    campaigns = Campaign.objects.filter(
        status__in=RECONCILED_STATUSES, end_at__gte=now - timedelta(days=2)
    ).select_related("advertiser")
    for campaign in campaigns:
        total_key, day_key, _ = spend_keys(campaign.pk, campaign.advertiser.time_zone,
                                           now.timestamp())
        today = now.astimezone(ZoneInfo(campaign.advertiser.time_zone)).date()

        async def read(store, keys=(total_key, day_key)):
            return await store.get_many(list(keys))

        total, day = (int(value) if value is not None else None
                      for value in store_call(read))
        day_row = CampaignDailySpend.objects.filter(campaign=campaign, date=today).first()
        rebuilt = False
        if total is None and campaign.spent > 0:
            _rebuild(total_key, _micros(campaign.spent))
            rebuilt = True
        if day is None and day_row is not None and day_row.amount > 0:
            _rebuild(day_key, _micros(day_row.amount), ttl_seconds=3 * 86_400)
            rebuilt = True
        counts["rebuilt"] += rebuilt
        with transaction.atomic():
            if total is not None:
                counts["updated"] += Campaign.objects.filter(
                    pk=campaign.pk, spent__lt=Decimal(total) / MICROS).update(
                    spent=Decimal(total) / MICROS)
            if day is not None:
                row, _ = CampaignDailySpend.objects.get_or_create(campaign=campaign, date=today)
                CampaignDailySpend.objects.filter(pk=row.pk, amount__lt=Decimal(day) / MICROS
                                                  ).update(amount=Decimal(day) / MICROS)
    return counts


def _rebuild(key: str, amount: int, ttl_seconds: int | None = None) -> None:
    """Set a lost counter, unless bidders already counted into it meanwhile (then add to it
    only what is missing: `incr_within` refuses when the sum would exceed the amount)."""

    async def seed(store) -> None:
        await store.incr_within(key, amount, limit=amount, ttl_seconds=ttl_seconds)

    store_call(seed)

