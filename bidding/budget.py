"""Budgets, pacing and frequency caps, counted atomically in the store (Redis in production).

Money is integer micros of the campaign's currency. At bid time the bidder *holds* the bid's
cost; the billing notice turns the hold into spend, the loss notice releases it, and a hold
that hears nothing returns by itself when its minute bucket leaves the hold window. The check
and the hold are one script, so bidders racing for the last cent of a budget cannot both pass:
the budget is overspent by at most what billing charges for holds that already expired.

Keys are hash-tagged by campaign (`{c42}`) or by user (`{u...}`), so each script touches one
Redis Cluster slot.

Even pacing: within a day (in the advertiser's time zone) the budget left at the start of the
current hour is spread over the hours left, so an hour may spend at most its share; accelerated
pacing may spend the whole daily budget as fast as it wins.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bidding.snapshot import CampaignEntry
from campaign_express.backends.store import Script, ScriptContext, Store

MICROS = 1_000_000
# The most micros one amount (a price, a spend, a conversion value) may be: what a Redis counter
# and an analytics Int64 column hold. Notices with more are refused before anything counts.
MAX_MICROS = 2**63 - 1
DAY_TTL = 3 * 86_400
HOUR_TTL = 2 * 86_400
RESERVE_OK, RESERVE_DAILY, RESERVE_TOTAL = 0, 1, 2

# KEYS: spent, day, hour, hold, held bucket of this minute, held buckets of earlier minutes.
# ARGV: amount, daily limit, total limit, hours left in the day (0: accelerated), hold
# seconds, held-bucket ttl. Returns 0 held, 1 refused by the daily budget or pacing, 2 by the
# total budget.
_RESERVE_LUA = """
local held = 0
for i = 5, #KEYS do held = held + tonumber(redis.call('GET', KEYS[i]) or '0') end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local hour = tonumber(redis.call('GET', KEYS[3]) or '0')
local amount = tonumber(ARGV[1])
local daily = tonumber(ARGV[2])
local hours_left = tonumber(ARGV[4])
if hours_left > 0 then
  local before = day - hour
  daily = before + math.floor((daily - before) / hours_left)
end
if day + held + amount > daily then return 1 end
if spent + held + amount > tonumber(ARGV[3]) then return 2 end
redis.call('INCRBY', KEYS[5], amount)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
redis.call('SET', KEYS[4], amount, 'EX', tonumber(ARGV[5]))
return 0
"""


def _reserve(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    held = sum(ctx.get(key) for key in keys[4:])
    spent, day, hour = ctx.get(keys[0]), ctx.get(keys[1]), ctx.get(keys[2])
    amount, daily, total, hours_left, hold_seconds, held_ttl = args
    if hours_left > 0:
        before = day - hour
        daily = before + math.floor((daily - before) / hours_left)
    if day + held + amount > daily:
        return RESERVE_DAILY
    if spent + held + amount > total:
        return RESERVE_TOTAL
    ctx.incrby(keys[4], amount, held_ttl)
    ctx.set(keys[3], amount, hold_seconds)
    return RESERVE_OK


# KEYS: spent, day, hour, hold, its held bucket, the bid's committed marker, the campaign's
# unrestored flag. ARGV: spend, day ttl, hour ttl, marker ttl. Releases the hold (if it has not
# expired) and counts the spend, once per bid: a second commit of the same bid (the retry of a
# notice whose first attempt failed after this ran) changes nothing. The total is counted first:
# a Lua error stops a script where it is, and an INCRBY past the 64-bit range must leave nothing
# half done. A total that held nothing is flagged (`unrestored_key`). Returns the day's spend.
_COMMIT_LUA = """
if redis.call('EXISTS', KEYS[6]) == 1 then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if redis.call('INCRBY', KEYS[1], ARGV[1]) == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[7], 1)
end
local amount = redis.call('GET', KEYS[4])
if amount then
  redis.call('DEL', KEYS[4])
  redis.call('DECRBY', KEYS[5], amount)
end
redis.call('SET', KEYS[6], 1, 'EX', tonumber(ARGV[4]))
redis.call('INCRBY', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
local day = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return day
"""


def _commit(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    spend, day_ttl, hour_ttl, marker_ttl = args
    if ctx.get(keys[5]):
        return ctx.get(keys[1])
    if ctx.incrby(keys[0], spend) == spend:
        ctx.set(keys[6], 1)
    amount = ctx.get(keys[3])
    if ctx.delete(keys[3]):
        ctx.incrby(keys[4], -amount)
    ctx.set(keys[5], 1, marker_ttl)
    ctx.incrby(keys[2], spend, hour_ttl)
    return ctx.incrby(keys[1], spend, day_ttl)


# KEYS: hold, its held bucket. Returns the amount released (0 when already gone).
_RELEASE_LUA = """
local amount = redis.call('GET', KEYS[1])
if not amount then return 0 end
redis.call('DEL', KEYS[1])
redis.call('DECRBY', KEYS[2], amount)
return tonumber(amount)
"""


def _release(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    amount = ctx.get(keys[0])
    if not ctx.delete(keys[0]):
        return 0
    ctx.incrby(keys[1], -amount)
    return amount


# KEYS: the user's hour, day and lifetime counters for one campaign, then optionally the
# bid's counted marker. ARGV: their ttls. With the marker, the impression counts once per bid.
# Returns 1 counted, 0 already counted.
_COUNT_LUA = """
local counters = #KEYS
if counters == 4 then
  if not redis.call('SET', KEYS[4], 1, 'NX', 'EX', tonumber(ARGV[4])) then return 0 end
  counters = 3
end
for i = 1, counters do
  redis.call('INCRBY', KEYS[i], 1)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[i]))
end
return 1
"""


def _count(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    if len(keys) == 4:
        if ctx.get(keys[3]):
            return 0
        ctx.set(keys[3], 1, args[3])
    for key, ttl in zip(keys[:3], args[:3], strict=True):
        ctx.incrby(key, 1, ttl)
    return 1


# KEYS: the user's hour, day and lifetime counters for one campaign, the bid's cap hold, then
# the pending buckets of this minute and the ones before it. ARGV: the three caps (-1: none),
# the hold's ttl, the bucket's ttl. Holds one impression of each cap for the bid unless a
# counter plus the impressions other bids hold pending reaches its cap. Returns 1 held, 0
# reached.
_CAP_HOLD_LUA = """
local pending = 0
for i = 5, #KEYS do
  pending = pending + tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, 3 do
  local cap = tonumber(ARGV[i])
  if cap >= 0 and tonumber(redis.call('GET', KEYS[i]) or '0') + pending >= cap then
    return 0
  end
end
redis.call('SET', KEYS[4], 1, 'EX', tonumber(ARGV[4]))
redis.call('INCRBY', KEYS[5], 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[5]))
return 1
"""


def _cap_hold(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    pending = sum(ctx.get(key) for key in keys[4:])
    for key, cap in zip(keys[:3], args[:3], strict=True):
        if cap >= 0 and ctx.get(key) + pending >= cap:
            return 0
    ctx.set(keys[3], 1, args[3])
    ctx.incrby(keys[4], 1, args[4])
    return 1


# KEYS: the bid's cap hold, its minute's pending bucket. Gives the hold back, once (billed,
# lost, or not bid after all). Returns 1 when there was one.
_CAP_RELEASE_LUA = """
if redis.call('DEL', KEYS[1]) == 1 and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECRBY', KEYS[2], 1)
  return 1
end
return 0
"""


def _cap_release(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    if ctx.delete(keys[0]) and ctx.get(keys[1]) > 0:
        ctx.incrby(keys[1], -1)
        return 1
    return 0


RESERVE = Script("budget-reserve", _RESERVE_LUA, _reserve)
COMMIT = Script("budget-commit", _COMMIT_LUA, _commit)
RELEASE = Script("budget-release", _RELEASE_LUA, _release)
COUNT_IMPRESSION = Script("cap-count", _COUNT_LUA, _count)
CAP_HOLD = Script("cap-hold", _CAP_HOLD_LUA, _cap_hold)
CAP_RELEASE = Script("cap-release", _CAP_RELEASE_LUA, _cap_release)
CAP_TTLS = (2 * 3600, 2 * 86_400, 400 * 86_400)  # hour, day, lifetime counters
# How long a bid's spend and impression stay marked as counted: as long as a notice's retry
# may come (`bidding.notices` remembers a counted notice as long). Shorter, and a late retry
# would count the spend again.
COUNTED_TTL = 7 * 86_400


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def to_micros(amount: Decimal) -> int:
    return int(amount * MICROS)


def user_key(user_id: str) -> str:
    """A short, brace-free hash of the user id for key names and notice URLs."""
    return hashlib.blake2b(user_id.encode(), digest_size=8).hexdigest() if user_id else ""


@lru_cache(maxsize=4096)
def _local_periods(time_zone: str, minute: int) -> tuple[str, str, int]:
    """The advertiser's day (YYYYMMDD), hour (YYYYMMDDHH) and hour of day during ``minute``
    (epoch minutes): the same for every second of it, as time zones move by whole minutes.
    Computed once a minute per zone instead of at every bid."""
    local = datetime.fromtimestamp(minute * 60, _zone(time_zone))
    return f"{local:%Y%m%d}", f"{local:%Y%m%d%H}", local.hour


def spend_keys(campaign_id: int, time_zone: str, now: float) -> list[str]:
    """The campaign's total, today's and this hour's spend counters (the advertiser's day)."""
    day, hour, _ = _local_periods(time_zone, int(now // 60))
    tag = f"budget:{{c{campaign_id}}}"
    return [f"{tag}:spent", f"{tag}:day:{day}", f"{tag}:hour:{hour}"]


def unrestored_key(campaign_id: int) -> str:
    """Set when a billing notice finds the campaign's total counter holding nothing: a new
    campaign, or a store that lost its data, whose counters now hold only what was counted
    since. Spend reconciliation (`campaigns.spend`) adds what PostgreSQL holds to them and
    clears it in one script, so a loss is seen however much is counted before it runs."""
    return f"budget:{{c{campaign_id}}}:unrestored"


class Ledger:
    def __init__(self, store: Store, *, hold_seconds: int = 120) -> None:
        self.store = store
        self.hold_seconds = hold_seconds
        self._window_minutes = math.ceil(hold_seconds / 60) + 1


    @staticmethod
    def _hold_keys(campaign_id: int, hold_id: str, minute: int) -> list[str]:
        tag = f"budget:{{c{campaign_id}}}"
        return [f"{tag}:hold:{hold_id}", f"{tag}:held:{minute}"]

    async def reserve(self, campaign: CampaignEntry, *, amount: int, hold_id: str,
                      now: float | None = None) -> int:
        now = now or time.time()
        minute = int(now // 60)
        tag = f"budget:{{c{campaign.id}}}"
        keys = [*spend_keys(campaign.id, campaign.time_zone, now),
                *self._hold_keys(campaign.id, hold_id, minute),
                *(f"{tag}:held:{minute - back}" for back in range(1, self._window_minutes))]
        hours_left = 0
        if campaign.pacing == "even":
            hours_left = 24 - _local_periods(campaign.time_zone, minute)[2]
        return await self.store.run(RESERVE, keys, [
            amount, to_micros(campaign.daily_budget), to_micros(campaign.total_budget),
            hours_left, self.hold_seconds, self.hold_seconds + 120])

    async def commit(self, *, campaign_id: int, time_zone: str, hold_id: str, minute: int,
                     spend: int, now: float | None = None) -> int:
        """Turns the bid's hold into ``spend``, once per ``hold_id`` (the bid id): a repeat,
        the retry of a notice whose first attempt failed after the script ran, counts nothing.
        Returns the day's spend."""
        now = now or time.time()
        keys = [*spend_keys(campaign_id, time_zone, now),
                *self._hold_keys(campaign_id, hold_id, minute),
                f"budget:{{c{campaign_id}}}:committed:{hold_id}", unrestored_key(campaign_id)]
        return await self.store.run(COMMIT, keys, [spend, DAY_TTL, HOUR_TTL, COUNTED_TTL])

    async def release(self, *, campaign_id: int, hold_id: str, minute: int) -> int:
        return await self.store.run(RELEASE, self._hold_keys(campaign_id, hold_id, minute), [])

    async def spent(self, campaign_id: int) -> int:
        return int(await self.store.get(f"budget:{{c{campaign_id}}}:spent") or 0)

    # --- frequency caps ---------------------------------------------------------------------

    @staticmethod
    def _cap_keys(user: str, campaign_id: int, now: float,
                  periods: tuple[str, str] | None = None) -> list[str]:
        hour, day = periods or _cap_periods(now)
        tag = f"cap:{{u{user}}}:c{campaign_id}"
        return [f"{tag}:h:{hour}", f"{tag}:d:{day}", f"{tag}:l"]

    async def capped(self, *, user: str, campaigns: Iterable[CampaignEntry],
                     now: float | None = None) -> set[int]:
        """Ids of the campaigns whose cap this user has reached: one round trip for all."""
        now = now or time.time()
        capped = [campaign for campaign in campaigns if _caps(campaign) != (None, None, None)]
        if not capped:
            return set()
        periods = _cap_periods(now)
        keys = [key for campaign in capped
                for key in self._cap_keys(user, campaign.id, now, periods)]
        values = await self.store.get_many(keys)
        reached = set()
        for position, campaign in enumerate(capped):
            counts = values[position * 3:position * 3 + 3]
            for count, cap in zip(counts, _caps(campaign), strict=True):
                if cap is not None and int(count or 0) >= cap:
                    reached.add(campaign.id)
        return reached

    async def hold_cap(self, *, user: str, campaign: CampaignEntry, hold_id: str,
                       now: float | None = None) -> bool:
        """Holds one impression of the user's caps on ``campaign`` for the bid ``hold_id``,
        atomically: False when a cap is reached, counting the impressions of bids still
        pending (held, not yet billed, lost or expired). Two requests for one user at the
        same instant cannot both take the last impression of a cap."""
        now = now or time.time()
        minute = int(now // 60)
        keys = [*self._cap_keys(user, campaign.id, now),
                self._cap_hold_key(user, campaign.id, hold_id),
                *(self._pending_key(user, campaign.id, minute - back)
                  for back in range(self._window_minutes))]
        caps = [-1 if cap is None else cap for cap in _caps(campaign)]
        return bool(await self.store.run(CAP_HOLD, keys, [
            *caps, self.hold_seconds, self.hold_seconds + 120]))

    async def release_cap(self, *, user: str, campaign_id: int, hold_id: str,
                          minute: int) -> bool:
        """Gives back the bid's cap hold taken in ``minute`` (once; False without one)."""
        return bool(await self.store.run(CAP_RELEASE, [
            self._cap_hold_key(user, campaign_id, hold_id),
            self._pending_key(user, campaign_id, minute)], []))

    @staticmethod
    def _cap_hold_key(user: str, campaign_id: int, hold_id: str) -> str:
        return f"cap:{{u{user}}}:c{campaign_id}:hold:{hold_id}"

    @staticmethod
    def _pending_key(user: str, campaign_id: int, minute: int) -> str:
        return f"cap:{{u{user}}}:c{campaign_id}:pending:{minute}"

    async def count_impression(self, *, user: str, campaign_id: int, bid_id: str = "",
                               minute: int | None = None, now: float | None = None) -> bool:
        """Counts an impression toward the user's caps; with ``bid_id``, once per bid (a
        repeat returns False and counts nothing), and the bid's cap hold taken in
        ``minute`` is given back."""
        keys = self._cap_keys(user, campaign_id, now or time.time())
        if not bid_id:
            return bool(await self.store.run(COUNT_IMPRESSION, keys, CAP_TTLS))
        counted = bool(await self.store.run(COUNT_IMPRESSION,
                                            [*keys, f"cap:{{u{user}}}:counted:{bid_id}"],
                                            [*CAP_TTLS, COUNTED_TTL]))
        if minute is not None:  # after the count: a retry that finds it counted still frees
            await self.release_cap(user=user, campaign_id=campaign_id, hold_id=bid_id,
                                   minute=minute)
        return counted


def _cap_periods(now: float) -> tuple[str, str]:
    """The UTC hour and day the caps count in (caps are the user's, not the advertiser's)."""
    return _utc_periods(int(now // 3600))


@lru_cache(maxsize=64)
def _utc_periods(hour: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(hour * 3600, _zone("UTC"))
    return f"{moment:%Y%m%d%H}", f"{moment:%Y%m%d}"


def _caps(campaign: CampaignEntry) -> tuple[int | None, int | None, int | None]:
    return (campaign.frequency_cap_hour, campaign.frequency_cap_day,
            campaign.frequency_cap_lifetime)
