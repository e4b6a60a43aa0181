"""Spend reconciliation: the bidders' counters into PostgreSQL, and back when they are lost.

Bidders count spend in the store (Redis) as billing notices arrive. A periodic task copies
each running campaign's total and today's spend into `Campaign.spent` and
`CampaignDailySpend`, only ever upwards (a counter never un-spends). Yesterday's counter
(in the advertiser's time zone) is copied too while it lasts (`DAY_TTL`), so what was billed
between the last run before midnight and midnight reaches its row.

Counters that lost their data (Redis restarted empty) hold only what bidders counted since,
and what PostgreSQL holds is added to them. Bidders resume within a second of Redis returning,
so waiting for the key to be missing is not enough: the first billing notice recreates it.
That notice finds the total holding nothing and flags it (`bidding.budget.unrestored_key`);
the flag is what tells a lost total from one that is simply larger than PostgreSQL's copy,
however much bidders counted since. A counter without the flag is still restored when it is
further below PostgreSQL than rounding explains (those rows only ever take a counter's value,
rounded to 4 decimals, so up to 100 micros above it): a counter missing when no billing came
yet, or one a bidder of an earlier version recreated. The hour's counter (even pacing) has no
copy in PostgreSQL and is left as it is: the spend restored to the day counts as spent before
this hour, so pacing stays within the day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from bidding.budget import DAY_TTL, MICROS, spend_keys, unrestored_key
from campaign_express.backends.store import Script, ScriptContext, Store
from campaign_express.platform import store_call
from campaigns.models import MONEY, Campaign, CampaignDailySpend

RECONCILED_STATUSES = (Campaign.Status.ACTIVE, Campaign.Status.PAUSED,
                       Campaign.Status.COMPLETED)

# KEYS: the total and today's spend counters, the campaign's unrestored flag. ARGV: what
# PostgreSQL holds for each counter, the slack of its rounding, the day counter's ttl. With the
# flag, the counters lost their data and hold what was counted since: PostgreSQL's values are
# added to both. Without it, a counter further below PostgreSQL than the slack gets its value
# added. Returns how many counters got a value. The check and the add are one script, so a
# billing notice counted meanwhile is kept, and a second reconciliation finds them restored.
_RESTORE_LUA = """
if redis.call('DEL', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('INCRBY', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
  return (tonumber(ARGV[1]) > 0 and 1 or 0) + (tonumber(ARGV[2]) > 0 and 1 or 0)
end
local restored = 0
if tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[3]) < tonumber(ARGV[1]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  restored = restored + 1
end
if tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[3]) < tonumber(ARGV[2]) then
  redis.call('INCRBY', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
  restored = restored + 1
end
return restored
"""


def _restore(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    total_key, day_key, flag_key = keys
    saved_total, saved_day, slack, day_ttl = args
    if ctx.delete(flag_key):
        ctx.incrby(total_key, saved_total)
        ctx.incrby(day_key, saved_day, day_ttl)
        return (saved_total > 0) + (saved_day > 0)
    restored = 0
    if ctx.get(total_key) + slack < saved_total:
        ctx.incrby(total_key, saved_total)
        restored += 1
    if ctx.get(day_key) + slack < saved_day:
        ctx.incrby(day_key, saved_day, day_ttl)
        restored += 1
    return restored


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
            _restore_and_read, campaign_id=campaign.pk, keys=(total_key, day_key, previous_key),
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


async def _restore_and_read(store: Store, *, campaign_id: int, keys: tuple[str, str, str],
                            saved: tuple[int, int]) -> tuple[int, list[bytes | None]]:
    """Restores the total and today's counters (`keys`, then yesterday's) from PostgreSQL's
    values (`saved`, micros) where they lost their data; the number restored and the three
    counters' values. Yesterday's is only read: bidders no longer hold against it."""
    total_key, day_key, _ = keys
    restored = await store.run(RESTORE, [total_key, day_key, unrestored_key(campaign_id)],
                               [*saved, ROUNDING_MICROS, DAY_TTL])
    return restored, await store.get_many(list(keys))
