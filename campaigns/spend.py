"""Spend reconciliation: the bidders' counters into PostgreSQL, and back when they are lost.

Bidders count spend in the store (Redis) as billing notices arrive. A periodic task copies
each running campaign's total and today's spend into `Campaign.spent` and
`CampaignDailySpend`, only ever upwards (a counter never un-spends). Yesterday's counter
(in the advertiser's time zone) is copied too while it lasts (`DAY_TTL`), so what was billed
between the last run before midnight and midnight reaches its row. Those rows only ever take
a counter's value (rounded to PostgreSQL's 4 decimals, so up to 100 micros above it), so a
counter further below them has lost its data (Redis restarted empty): it
holds only what bidders counted since, and what PostgreSQL holds is added to it, before
bidders hold much more against it. Bidders resume within a second of Redis returning, so
waiting for the key to be missing is not enough: the first billing notice recreates it.
The hour's counter (even pacing) has no copy in PostgreSQL and is left as it is: the spend
restored to the day counts as spent before this hour, so pacing stays within the day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from bidding.budget import DAY_TTL, MICROS, spend_keys
from campaign_express.backends.store import Script, ScriptContext, Store
from campaign_express.platform import store_call
from campaigns.models import MONEY, Campaign, CampaignDailySpend

RECONCILED_STATUSES = (Campaign.Status.ACTIVE, Campaign.Status.PAUSED,
                       Campaign.Status.COMPLETED)

# KEYS[1] a spend counter; ARGV what PostgreSQL holds for it, the slack of its rounding, ttl
# seconds (0: none). Returns 1 when it was restored. The check and the add are one script, so
# a billing notice counted meanwhile is kept, and a second reconciliation finds it restored.
_RESTORE_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local saved = tonumber(ARGV[1])
if current + tonumber(ARGV[2]) >= saved then return 0 end
redis.call('INCRBY', KEYS[1], saved)
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
return 1
"""


def _restore(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    saved, slack, ttl_seconds = args
    if ctx.get(keys[0]) + slack >= saved:
        return 0
    ctx.incrby(keys[0], saved, ttl_seconds or None)
    return 1


RESTORE = Script("spend-restore", _RESTORE_LUA, _restore)
ROUNDING_MICROS = MICROS // 10 ** MONEY["decimal_places"]  # one unit of what PostgreSQL keeps


def _micros(amount: Decimal) -> int:
    return int(amount * MICROS)


def spend_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    counts = {"updated": 0, "rebuilt": 0}
    campaigns = Campaign.objects.filter(
        status__in=RECONCILED_STATUSES, end_at__gte=now - timedelta(days=2)
    ).select_related("advertiser")
    for campaign in campaigns:
        time_zone = campaign.advertiser.time_zone
        total_key, day_key, _ = spend_keys(campaign.pk, time_zone, now.timestamp())
        today = now.astimezone(ZoneInfo(time_zone)).date()
        yesterday = today - timedelta(days=1)
        # Noon, not now minus 24 hours: a day of 25 hours (DST ends) would give today again.
        previous_key = spend_keys(campaign.pk, time_zone, datetime.combine(
            yesterday, time(12), ZoneInfo(time_zone)).timestamp())[1]
        day_row = CampaignDailySpend.objects.filter(campaign=campaign, date=today).first()

        restored, values = store_call(partial(
            _restore_and_read, keys=(total_key, day_key, previous_key),
            saved=(_micros(campaign.spent), _micros(day_row.amount if day_row else Decimal(0)))))
        counts["rebuilt"] += restored > 0
        total, day, previous = (int(value) if value is not None else None for value in values)
        with transaction.atomic():
            if total is not None:
                counts["updated"] += Campaign.objects.filter(
                    pk=campaign.pk, spent__lt=Decimal(total) / MICROS).update(
                    spent=Decimal(total) / MICROS)
            for day_date, amount in ((today, day), (yesterday, previous)):
                if amount is not None:
                    _daily_spend_raise(campaign=campaign, day=day_date, micros=amount)
    return counts


def _daily_spend_raise(*, campaign: Campaign, day: date, micros: int) -> None:
    """The campaign's row for ``day`` up to ``micros``, never down."""
    row, _ = CampaignDailySpend.objects.get_or_create(campaign=campaign, date=day)
    CampaignDailySpend.objects.filter(pk=row.pk, amount__lt=Decimal(micros) / MICROS).update(
        amount=Decimal(micros) / MICROS)


async def _restore_and_read(store: Store, *, keys: tuple[str, str, str],
                            saved: tuple[int, int]) -> tuple[int, list[bytes | None]]:
    """Restores the total and today's counters (`keys`, then yesterday's) from PostgreSQL's
    values (`saved`, micros) where they lost their data; the number restored and the three
    counters' values. Yesterday's is only read: bidders no longer hold against it."""
    total_key, day_key, _ = keys
    restored = await store.run(RESTORE, [total_key], [saved[0], ROUNDING_MICROS, 0])
    restored += await store.run(RESTORE, [day_key], [saved[1], ROUNDING_MICROS, DAY_TTL])
    return restored, await store.get_many(list(keys))
